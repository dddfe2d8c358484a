//! Effects: what a message changes outside the broker, as a stage of its own.
//!
//! The pipeline only reads (Bugzilla, hg.mozilla.org, the models) and *plans*: each flow
//! returns the [`Effect`]s it wants. [`Effects::apply`] carries them out, and
//! [`dispatch`](crate::dispatch) runs the stages in one place and this order:
//!
//! ```text
//! pipeline::plan ─► effects::apply ─► publish (confirmed) ─► ack
//! ```
//!
//! so a result is published only after its effects are done (or recorded as skipped), and a
//! message is acked only after its result is confirmed. The effects are:
//!
//! * [`Effect::Remember`]: keep this event's predictions, and harvest the label when a
//!   person set a bug's type or component (`memory`);
//! * [`Effect::ApiAnswer`]: keep an answer of the prediction API for the web side;
//! * [`Effect::WriteBug`]: the Bugzilla writer (`bugzilla`), its per-model rules (`rules`)
//!   and bugbug's conflated components (`conflation`, shared with training).
//!
//! A replay builds its pipelines without a store or writer, so its effects do nothing.

pub mod bugzilla;
pub mod conflation;
pub mod memory;
pub mod rules;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Stage, StageError};
use crate::result::ResultMessage;
use crate::score::Score;
use crate::store::Store;
use bugzilla::BugzillaWriter;
pub use memory::Remember;

/// One change a flow wants made once its message is processed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Keep the predictions; harvest a person's type or component choice.
    Remember(Remember),
    /// Keep an answer of the prediction API under its cache key.
    ApiAnswer {
        key: String,
        answer: Value,
        /// The bug's `last_change_time` the answer was computed at.
        last_change_time: Option<String>,
    },
    /// Let the consumer's Bugzilla writer decide (and maybe write) a change to this bug.
    WriteBug {
        /// The bug, REST shape, with its history (shared with the message that stored it:
        /// a full bug is tens of KB of values, not copied for the writer).
        bug: Arc<Value>,
        /// What identifies the event, part of the effect's key.
        identity: String,
        scores: Vec<Score>,
    },
}

/// What processing a message planned.
#[derive(Debug)]
pub enum Planned {
    /// Publish this result once `effects` are done; their records join its `actions`.
    /// `shadow`, the shadow bundles' result, is published after it and has no effects.
    Publish {
        result: Box<ResultMessage>,
        effects: Vec<Effect>,
        shadow: Option<Box<ResultMessage>>,
    },
    /// Nothing to publish (a private bug): do `effects`, then settle as `reason` says.
    Skip {
        reason: StageError,
        effects: Vec<Effect>,
    },
}

crate::named_enum! {
    /// How an effect ended. Stored with the effect, and published in the result's
    /// `actions`.
    pub enum Outcome {
        /// The change was sent to Bugzilla and accepted.
        Written = "written",
        /// The writer is in dry-run mode: the exact request was recorded, not sent.
        DryRun = "dry_run",
        /// A guard or a threshold decided against writing; the reason says which.
        Skipped = "skipped",
        /// An earlier delivery of the same event already did this effect.
        AlreadyDone = "already_done",
        /// The REST poller relayed a bug change to the bug-events exchange (its claim keeps
        /// a change from being relayed twice).
        Published = "published",
    }
}

/// Which effect a record is about (today only the Bugzilla writer reports one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    Bugzilla,
}

/// An effect as the result reports it: `{"action", "outcome", "reason", "request", "key"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectRecord {
    pub action: EffectKind,
    /// The effect's key in the store: one per (consumer, bug, event, model versions).
    pub key: String,
    pub outcome: Outcome,
    pub reason: String,
    /// The PUT body, when one was (or, in a dry run, would have been) sent.
    pub request: Option<Value>,
}

/// The effects stage of one consumer: where its effects go. Absent parts do nothing.
#[derive(Clone, Default)]
pub struct Effects {
    pub store: Option<Arc<Store>>,
    pub writer: Option<BugzillaWriter>,
}

fn stored(e: anyhow::Error) -> StageError {
    StageError::transient(Stage::Sink, format!("store: {e}"))
}

impl Effects {
    /// Does `planned`'s effects in order; returns the result to publish (with the effects'
    /// records in its `actions`), or the skip. The first failing effect stops the rest and
    /// its error decides the message's fate (a store failure is transient).
    pub async fn apply(&self, planned: Planned) -> Result<Vec<ResultMessage>, StageError> {
        match planned {
            Planned::Publish {
                mut result,
                effects,
                shadow,
            } => {
                for effect in &effects {
                    if let Some(record) = self.apply_one(effect).await? {
                        result.actions.push(record);
                    }
                }
                Ok(std::iter::once(*result).chain(shadow.map(|s| *s)).collect())
            }
            Planned::Skip { reason, effects } => {
                for effect in &effects {
                    self.apply_one(effect).await?;
                }
                Err(reason)
            }
        }
    }

    async fn apply_one(&self, effect: &Effect) -> Result<Option<EffectRecord>, StageError> {
        match effect {
            Effect::Remember(remember) => {
                if let Some(store) = &self.store {
                    remember.apply(store).await.map_err(stored)?;
                }
                Ok(None)
            }
            Effect::ApiAnswer {
                key,
                answer,
                last_change_time,
            } => {
                // The api-requests flow refuses to plan without a store; bug-triage warms
                // the cache only where there is one.
                if let Some(store) = &self.store {
                    store
                        .put_api_result(key, answer, last_change_time.as_deref())
                        .await
                        .map_err(stored)?;
                }
                Ok(None)
            }
            Effect::WriteBug {
                bug,
                identity,
                scores,
            } => match &self.writer {
                Some(writer) => Ok(Some(writer.act(bug, identity, scores).await?)),
                None => Ok(None),
            },
        }
    }
}
