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
//! * whole-value writes (type, product/component, status) re-read `last_change_time` just
//!   before the PUT and give up if the bug moved meanwhile; keywords use `add`;
//! * at most `max_writes_per_hour` writes;
//! * one effect per (consumer, bug, event, model versions) — the store's key — so a
//!   redelivered or duplicated event never writes twice.
//!
//! Every write and every skip is recorded in the store with its reason and returned as an
//! action of the result.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{EffectKind, EffectRecord, Outcome, rules};
use crate::clients::bugzilla::Bugzilla;
use crate::error::{Stage, StageError};
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
    /// A claimed write not finished after this many seconds is presumed dead (its process
    /// was killed) and taken over; the taker re-reads the bug, whose history shows whether
    /// the write landed. Longer than a PUT with all its retries can take.
    pub claim_stale_seconds: u64,
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
            claim_stale_seconds: 600,
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
    /// Plans and (unless dry-run) writes; returns the action for the result. Transient
    /// Bugzilla failures are errors (the message is retried; the claim stays open).
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
        let store_error =
            |e: anyhow::Error| StageError::transient(Stage::Sink, format!("store: {e}"));
        // Another delivery of the same event (after a forced close) may be writing right now:
        // wait for it rather than send the message round the queue again.
        let stale = std::time::Duration::from_secs(self.config.claim_stale_seconds);
        let waited = tokio::time::Instant::now();
        let claim = loop {
            let claim = self
                .store
                .claim(&key, &self.consumer, &subject, stale)
                .await
                .map_err(store_error)?;
            if claim != Claim::InProgress || waited.elapsed() >= IN_PROGRESS_WAIT {
                break claim;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let (outcome, reason, request) = match claim {
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
                    "another worker is writing this effect right now",
                ));
            }
            Claim::Proceed => self.decide(bug, id, scores).await?,
        };
        let text = request.as_ref().map(Value::to_string);
        self.store
            .finish(&key, outcome, &reason, text.as_deref())
            .await
            .map_err(store_error)?;
        tracing::info!(bug = id, %outcome, %reason, "bugzilla writer");
        Ok(record(&key, outcome, reason, request))
    }

    /// The guards, the plan, and the write: `(outcome, reason, request)`.
    async fn decide(
        &self,
        bug: &Value,
        id: u64,
        scores: &[Score],
    ) -> Result<(Outcome, String, Option<Value>), StageError> {
        if let Some(why) = self.guard(bug) {
            return Ok((Outcome::Skipped, why, None));
        }
        let plan = rules::plan(bug, scores, &self.config);
        if plan.change.is_empty() {
            return Ok((
                Outcome::Skipped,
                format!("nothing to change: {}", plan.notes.join("; ")),
                None,
            ));
        }
        let writes = self
            .store
            .writes_in_last_hour()
            .await
            .map_err(|e| StageError::transient(Stage::Sink, format!("store: {e}")))?;
        if writes >= self.config.max_writes_per_hour {
            return Ok((
                Outcome::Skipped,
                format!(
                    "hourly cap of {} writes reached",
                    self.config.max_writes_per_hour
                ),
                None,
            ));
        }
        let request = request(&plan);
        if self.config.dry_run {
            tracing::info!(bug = id, request = %request, "dry run: would PUT /rest/bug/{id}");
            return Ok((Outcome::DryRun, plan.notes.join("; "), Some(request)));
        }
        let whole_value = ["type", "product", "component", "status"]
            .iter()
            .any(|f| plan.change.contains_key(*f));
        if whole_value {
            let fresh = self.client.bug(id).await?;
            if fresh["last_change_time"] != bug["last_change_time"] {
                return Ok((
                    Outcome::Skipped,
                    "the bug changed while bugflow decided; its next event decides again".into(),
                    None,
                ));
            }
        }
        self.client.update(id, &request).await?;
        metrics::counter!("bugflow_bugzilla_writes_total", "consumer" => self.consumer.clone())
            .increment(1);
        Ok((Outcome::Written, plan.notes.join("; "), Some(request)))
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

/// How long a delivery waits for another one writing the same effect.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn record(key: &str, outcome: Outcome, reason: String, request: Option<Value>) -> EffectRecord {
    EffectRecord {
        action: EffectKind::Bugzilla,
        key: key.to_owned(),
        outcome,
        reason,
        request,
    }
}
