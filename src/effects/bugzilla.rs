//! The Bugzilla writer: predictions back into bugs, with bugbot's care.
//!
//! Off unless a consumer's `[sinks.bugzilla]` says `enabled = true`; `dry_run` (the default
//! once enabled) records and logs the exact request instead of sending it. Before any write:
//!
//! * never a private bug, only bugs filed in the last `max_bug_age_days`;
//! * one rule per model (`rules`), with bugbot's thresholds: component 0.35, 0.8 when the
//!   prediction is a `General` component; bug type only at 0.99; spam 0.95; the regression
//!   keyword at 1.0;
//! * never a field bugflow or a human changed before (the bug's history);
//! * one write per bug at a time (a lock per bug in the store, a renewed lease): under it the
//!   bug is read again and planned again, so a second event about the same bug sees the
//!   first one's write in the history;
//! * whole-value writes (type, product/component, status) give up if the bug moved since
//!   the event was read; keywords use `add`;
//! * at most `max_writes_per_hour` writes per clock hour, taken atomically from a budget;
//! * one effect per (consumer, bug, event, model versions) — the store's key — so a
//!   redelivered or duplicated event never writes twice;
//! * the PUT is sent once, never retried blindly: when its answer is lost (timeout, 5xx),
//!   the bug is read again and its fields say whether the write landed.
//!
//! Every write and every skip is recorded in the store with its reason and returned as an
//! action of the result.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{EffectKind, EffectRecord, Outcome, rules};
use crate::clients::bugzilla::Bugzilla;
use crate::error::{Action, Stage, StageError};
use crate::result::stable_id;
use crate::score::Score;
use crate::store::{Claim, Store};

/// `[sinks.bugzilla]` of a consumer file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    pub enabled: bool,
    /// Record and log the request instead of sending it.
    pub dry_run: bool,
    pub max_writes_per_hour: u64,
    pub max_bug_age_days: i64,
    pub bugtype: f64,
    pub component: f64,
    pub general_component: f64,
    pub spam: f64,
    pub regression: f64,
    /// A writer renews its claim (and its bug's lock) while it works; one not renewed for
    /// this many seconds is presumed dead (its process was killed) and taken over. The taker
    /// re-reads the bug, whose history shows whether the write landed. (1–3600; the old name
    /// `claim_stale_seconds` is read too.)
    #[serde(alias = "claim_stale_seconds")]
    pub claim_lease_seconds: u64,
}

impl WriterConfig {
    /// How long a claim or a bug lock lasts without renewal.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.claim_lease_seconds.clamp(1, 3600))
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            enabled: false,
            dry_run: true,
            max_writes_per_hour: 50,
            max_bug_age_days: 7,
            bugtype: 0.99,
            component: 0.35,
            general_component: 0.8,
            spam: 0.95,
            regression: 1.0,
            claim_lease_seconds: 30,
        }
    }
}

/// The writer of one consumer.
#[derive(Clone)]
pub struct BugzillaWriter {
    pub client: Bugzilla,
    pub store: Arc<Store>,
    pub config: WriterConfig,
    pub consumer: String,
}

impl BugzillaWriter {
    /// Plans and (unless dry-run) writes; returns the action for the result.
    ///
    /// A permanent refusal (the bug is gone or hidden from the key) is a recorded skip and
    /// the result is kept. A transient failure gives the claim back and is an error: the
    /// message is retried later and claims the effect afresh.
    pub async fn act(
        &self,
        bug: &Value,
        event_identity: &str,
        scores: &[Score],
    ) -> Result<EffectRecord, StageError> {
        let id = bug["id"].as_u64().unwrap_or(0);
        let subject = id.to_string();
        let versions: Vec<&str> = scores.iter().filter_map(Score::version).collect();
        let key = stable_id(&[
            &self.consumer,
            &subject,
            event_identity,
            &versions.join(","),
        ]);
        let lease = self.config.lease();
        // Another delivery of the same event (after a forced close) may be writing right now:
        // wait a moment for it before sending the message round the retry queue.
        let waited = tokio::time::Instant::now();
        let claim = loop {
            let claim = self
                .store
                .claim(&key, &self.consumer, &subject, lease)
                .await
                .map_err(store_error)?;
            if claim != Claim::InProgress || waited.elapsed() >= IN_PROGRESS_WAIT {
                break claim;
            }
            tokio::time::sleep(POLL).await;
        };
        match claim {
            Claim::Done { outcome, reason } => {
                return Ok(record(
                    &key,
                    Outcome::AlreadyDone,
                    format!("{outcome}: {reason}"),
                    None,
                ));
            }
            Claim::InProgress => {
                return Err(StageError::transient(
                    Stage::Sink,
                    "another worker is writing this effect right now: retrying later",
                ));
            }
            Claim::Proceed => {}
        }
        let renewing = Renewing::claim(self.store.clone(), key.clone(), lease);
        let decided = self.decide(bug, id, scores).await;
        drop(renewing);
        let (outcome, reason, request) = match decided {
            Ok(decided) => decided,
            Err(e) if e.action == Action::Skip => skipped(e.reason.clone()),
            Err(e) => {
                if let Err(release) = self.store.release(&key).await {
                    // The lease runs out by itself; the next attempt takes the claim then.
                    tracing::warn!(error = %release, "could not release the claim");
                }
                return Err(e);
            }
        };
        let text = request.as_ref().map(Value::to_string);
        self.store
            .finish(&key, outcome, &reason, text.as_deref())
            .await
            .map_err(store_error)?;
        tracing::info!(bug = id, %outcome, %reason, "bugzilla writer");
        Ok(record(&key, outcome, reason, request))
    }

    /// The guards and the plan; then, for a real write, [`Self::write`] under the bug's lock.
    async fn decide(&self, bug: &Value, id: u64, scores: &[Score]) -> Result<Decided, StageError> {
        if let Some(why) = self.guard(bug) {
            return Ok(skipped(why));
        }
        let plan = rules::plan(bug, scores, &self.config);
        if plan.change.is_empty() {
            return Ok(skipped(format!(
                "nothing to change: {}",
                plan.notes.join("; ")
            )));
        }
        if self.config.dry_run {
            let request = request(&plan);
            tracing::info!(bug = id, request = %request, "dry run: would PUT /rest/bug/{id}");
            return Ok((Outcome::DryRun, plan.notes.join("; "), Some(request)));
        }
        // One write per bug at a time, across events, consumers and processes: a second
        // event about the bug waits here, then re-reads the bug and sees the first's write.
        let lock = format!("bug:{id}");
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = self.config.lease();
        let waited = tokio::time::Instant::now();
        while !self
            .store
            .lock(&lock, &owner, lease)
            .await
            .map_err(store_error)?
        {
            if waited.elapsed() >= LOCK_WAIT {
                return Err(StageError::transient(
                    Stage::Sink,
                    format!("another event about bug {id} is being written: retrying later"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let renewing = Renewing::lock(self.store.clone(), lock.clone(), owner.clone(), lease);
        let written = self.write(bug, id, scores).await;
        drop(renewing);
        if let Err(e) = self.store.unlock(&lock, &owner).await {
            tracing::warn!(error = %e, bug = id, "could not unlock the bug; its lease runs out");
        }
        written
    }

    /// Re-reads the bug, plans again on what it is now, takes a write from the hourly
    /// budget and sends the PUT — once. A PUT whose answer was lost (timeout, 5xx, reset)
    /// may have been applied: the bug is read again and says whether it was.
    async fn write(&self, bug: &Value, id: u64, scores: &[Score]) -> Result<Decided, StageError> {
        let fresh = self.client.bug(id).await?;
        let plan = rules::plan(&fresh, scores, &self.config);
        if plan.change.is_empty() {
            return Ok(skipped(format!(
                "nothing to change now: {}",
                plan.notes.join("; ")
            )));
        }
        let whole_value = ["type", "product", "component", "status"]
            .iter()
            .any(|f| plan.change.contains_key(*f));
        if whole_value && fresh["last_change_time"] != bug["last_change_time"] {
            return Ok(skipped(
                "the bug changed while bugflow decided; its next event decides again",
            ));
        }
        let Some(hour) = self
            .store
            .reserve_write(self.config.max_writes_per_hour)
            .await
            .map_err(store_error)?
        else {
            return Ok(skipped(format!(
                "hourly cap of {} writes reached",
                self.config.max_writes_per_hour
            )));
        };
        self.send(id, &plan, &hour).await
    }

    /// The PUT, sent once, with a write taken from `hour`'s budget. A PUT whose answer was
    /// lost is judged by the bug read again; a write that did not happen is refunded.
    async fn send(&self, id: u64, plan: &rules::Plan, hour: &str) -> Result<Decided, StageError> {
        let request = request(plan);
        let notes = plan.notes.join("; ");
        let refund = || async {
            if let Err(e) = self.store.refund_write(hour).await {
                tracing::warn!(error = %e, "could not refund the write budget");
            }
        };
        let e = match self.client.update(id, &request).await {
            Ok(_) => {
                self.count_write();
                return Ok((Outcome::Written, notes, Some(request)));
            }
            Err(e) => e,
        };
        if !e.outcome_unknown() {
            refund().await;
            return Err(e.into());
        }
        match self.client.bug(id).await {
            Ok(after) if landed(&after, plan) => {
                tracing::warn!(bug = id, error = %e, "the PUT's answer was lost, but the bug shows it landed");
                self.count_write();
                Ok((
                    Outcome::Written,
                    format!("{notes} (the answer was lost: {e}; the bug shows the change)"),
                    Some(request),
                ))
            }
            Ok(_) => {
                refund().await;
                Err(e.into())
            }
            Err(read) => Err(StageError::transient(
                Stage::Sink,
                format!(
                    "the PUT's answer was lost ({e}) and re-reading the bug failed ({read}); \
                     the next attempt reads its history first"
                ),
            )),
        }
    }

    fn count_write(&self) {
        metrics::counter!("bugflow_bugzilla_writes_total", "consumer" => self.consumer.clone())
            .increment(1);
    }

    /// Why this bug is never written, whatever the models say: private, or too old.
    fn guard(&self, bug: &Value) -> Option<String> {
        if crate::pipeline::filter::is_private(bug) {
            return Some("private bug: never written".into());
        }
        let filed = bug["creation_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_days());
        match filed {
            Some(days) if days <= self.config.max_bug_age_days => None,
            Some(days) => Some(format!(
                "filed {days} days ago (> {} days)",
                self.config.max_bug_age_days
            )),
            None => Some("unknown filing time".into()),
        }
    }
}

/// The PUT body: the plan's change and a comment that explains it and how to revert it.
fn request(plan: &rules::Plan) -> Value {
    let mut body = plan.change.clone();
    body.insert(
        "comment".into(),
        json!({"body": format!(
            "[bugflow](https://github.com/mozilla/bugbug) thinks this bug {}. Please correct it if the bot is wrong.",
            plan.explanations.join("; and it ")), "is_markdown": true}),
    );
    Value::Object(body)
}

/// What the writer decided: `(outcome, reason, request)`.
type Decided = (Outcome, String, Option<Value>);

/// A decision not to write, with why.
fn skipped(reason: impl Into<String>) -> Decided {
    (Outcome::Skipped, reason.into(), None)
}

/// How long a delivery waits for another one writing the same effect.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);
/// How long an event waits for another event's write to the same bug.
const LOCK_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

fn store_error(e: anyhow::Error) -> StageError {
    StageError::transient(Stage::Sink, format!("store: {e}"))
}

/// Does `bug` (read after a PUT whose answer was lost) show every change of `plan`?
fn landed(bug: &Value, plan: &rules::Plan) -> bool {
    plan.change
        .iter()
        .all(|(field, value)| match value.get("add") {
            Some(Value::Array(added)) => added
                .iter()
                .all(|k| bug[field].as_array().is_some_and(|have| have.contains(k))),
            _ => bug[field] == *value,
        })
}

/// A lease renewed in the background while its holder works: a claim, or a bug's lock.
/// Dropping it stops the renewals; a killed process stops renewing, so its lease runs out
/// after `claim_lease_seconds` and another worker takes over.
struct Renewing(tokio::task::JoinHandle<()>);

impl Renewing {
    fn claim(store: Arc<Store>, key: String, lease: Duration) -> Renewing {
        Renewing::every(lease, move || {
            let (store, key) = (store.clone(), key.clone());
            async move { store.renew(&key).await }
        })
    }

    fn lock(store: Arc<Store>, name: String, owner: String, lease: Duration) -> Renewing {
        Renewing::every(lease, move || {
            let (store, name, owner) = (store.clone(), name.clone(), owner.clone());
            async move { store.renew_lock(&name, &owner, lease).await.map(|_| ()) }
        })
    }

    fn every<F, Fut>(lease: Duration, renew: F) -> Renewing
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let period = (lease / 3).max(Duration::from_millis(100));
        Renewing(tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = renew().await {
                    tracing::warn!(error = %e, "could not renew a lease");
                }
            }
        }))
    }
}

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn record(key: &str, outcome: Outcome, reason: String, request: Option<Value>) -> EffectRecord {
    EffectRecord {
        action: EffectKind::Bugzilla,
        key: key.to_owned(),
        outcome,
        reason,
        request,
    }
}
