//! The Bugzilla writer: predictions back into bugs, with bugbot's care.
//!
//! Off unless a consumer's `[sinks.bugzilla]` says `enabled = true`; `dry_run` (the default
//! once enabled) records and logs the exact request instead of sending it. Before any write:
//!
//! * never a private bug, only bugs filed in the last `max_bug_age_days`;
//! * per-model thresholds (bugbot's: component 0.35, 0.8 when the prediction is a `General`
//!   component; bug type only at 0.99; spam 0.95; the regression keyword at 1.0);
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
use serde_json::{Map, Value, json};

use crate::enrich::bugzilla::Bugzilla;
use crate::error::{Stage, StageError};
use crate::outcome::stable_id;
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

/// bugbug's conflated component classes, as the components they stand for.
const CONFLATED: &[(&str, &str)] = &[
    ("Core::DOM", "Core::DOM: Core & HTML"),
    ("Core::JavaScript", "Core::JavaScript Engine"),
    ("Core::Print", "Core::Printing: Output"),
    ("DevTools", "DevTools::General"),
    (
        "External Software Affecting Firefox",
        "External Software Affecting Firefox::Other",
    ),
    ("WebExtensions", "WebExtensions::Untriaged"),
    ("Firefox Build System", "Firefox Build System::General"),
    ("Firefox for Android", "Firefox for Android::General"),
];

/// What the planner decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The PUT body (without the comment), empty when nothing is to change.
    pub change: Map<String, Value>,
    /// One line per model: what it would change, or why not.
    pub notes: Vec<String>,
    /// What the comment tells a human (and how to revert).
    pub explanations: Vec<String>,
}

fn prediction<'a>(predictions: &'a [Value], model: &str) -> Option<(&'a str, f64, &'a str)> {
    let m = predictions.iter().find(|m| m["model"] == model)?;
    let index = m["index"].as_u64()? as usize;
    Some((
        m["class"].as_str()?,
        m["prob"].get(index)?.as_f64()?,
        m["version"].as_str()?,
    ))
}

fn ever_changed(bug: &Value, fields: &[&str]) -> bool {
    bug["history"].as_array().into_iter().flatten().any(|h| {
        h["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| fields.contains(&c["field_name"].as_str().unwrap_or_default()))
    })
}

/// Decides the change for `bug` (REST shape, with history) from the predictions.
pub fn plan(bug: &Value, predictions: &[Value], config: &WriterConfig) -> Plan {
    let mut p = Plan {
        change: Map::new(),
        notes: Vec::new(),
        explanations: Vec::new(),
    };
    let s = |f: &str| bug[f].as_str().unwrap_or_default().to_owned();

    if let Some((class, prob, version)) = prediction(predictions, "spam") {
        if class != "spam" || prob < config.spam {
            p.notes.push(format!(
                "spam: {class} {prob:.3} (needs spam ≥ {})",
                config.spam
            ));
        } else if s("product") == "Invalid Bugs" || ever_changed(bug, &["product"]) {
            p.notes
                .push("spam: product already Invalid Bugs or changed before".into());
        } else {
            for (k, v) in [
                ("product", "Invalid Bugs"),
                ("component", "General"),
                ("status", "RESOLVED"),
                ("resolution", "INVALID"),
            ] {
                p.change.insert(k.into(), json!(v));
            }
            p.notes
                .push(format!("spam: moving to Invalid Bugs ({prob:.3})"));
            p.explanations.push(format!(
                "is spam (spam model {version}, probability {prob:.2}), so it moves to Invalid Bugs::General as RESOLVED INVALID; \
                 to revert, move it back to {}::{} and reopen it", s("product"), s("component")));
        }
    }
    if let Some((class, prob, version)) = prediction(predictions, "component") {
        let full = CONFLATED
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, f)| *f)
            .unwrap_or(class);
        let (product, component) = full.split_once("::").unwrap_or((full, "General"));
        let threshold = if component == "General" {
            config.general_component
        } else {
            config.component
        };
        if p.change.contains_key("product") {
            p.notes
                .push("component: not changed, the bug is spam".into());
        } else if prob < threshold {
            p.notes
                .push(format!("component: {full} {prob:.3} < {threshold}"));
        } else if product == s("product") && component == s("component") {
            p.notes.push(format!("component: already {full}"));
        } else if ever_changed(bug, &["product", "component"]) {
            p.notes.push(
                "component: product or component changed before (by a human or bugflow)".into(),
            );
        } else {
            p.change.insert("product".into(), json!(product));
            p.change.insert("component".into(), json!(component));
            p.notes.push(format!("component: {full} ({prob:.3})"));
            p.explanations.push(format!(
                "belongs to the '{full}' component (component model {version}, probability {prob:.2}); \
                 to revert, move it back to {}::{}", s("product"), s("component")));
        }
    }
    if let Some((class, prob, version)) = prediction(predictions, "bugtype") {
        if prob < config.bugtype {
            p.notes
                .push(format!("bugtype: {class} {prob:.3} < {}", config.bugtype));
        } else if class == s("type") {
            p.notes.push(format!("bugtype: already {class}"));
        } else if ever_changed(bug, &["type", "bug_type"]) {
            p.notes.push("bugtype: the type was changed before".into());
        } else {
            p.change.insert("type".into(), json!(class));
            p.notes.push(format!("bugtype: {class} ({prob:.3})"));
            p.explanations.push(format!(
                "is a [{class}](https://firefox-source-docs.mozilla.org/bug-mgmt/guides/bug-types.html) \
                 (bugtype model {version}, probability {prob:.2}); to revert, set the type back to {}", s("type")));
        }
    }
    if let Some((class, prob, version)) = prediction(predictions, "regression") {
        let has = bug["keywords"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k == "regression");
        if class != "regression" || prob < config.regression {
            p.notes.push(format!(
                "regression: {class} {prob:.3} (needs regression ≥ {})",
                config.regression
            ));
        } else if has || ever_changed(bug, &["keywords"]) {
            p.notes
                .push("regression: keyword present or keywords changed before".into());
        } else {
            p.change
                .insert("keywords".into(), json!({"add": ["regression"]}));
            p.notes
                .push(format!("regression: adding the keyword ({prob:.3})"));
            p.explanations.push(format!(
                "is a regression (regression model {version}, probability {prob:.2}); to revert, remove the regression keyword"));
        }
    }
    p
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
        predictions: &[Value],
    ) -> Result<Value, StageError> {
        let id = bug["id"].as_u64().unwrap_or(0);
        let subject = id.to_string();
        let versions: Vec<&str> = predictions
            .iter()
            .filter_map(|m| m["version"].as_str())
            .collect();
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
                return Ok(action(
                    &key,
                    "already_done",
                    &format!("{outcome}: {reason}"),
                    None,
                ));
            }
            Claim::InProgress => {
                return Err(StageError::transient(
                    Stage::Sink,
                    "another worker is writing this effect right now",
                ));
            }
            Claim::Proceed => self.decide(bug, id, predictions).await?,
        };
        let text = request.as_ref().map(Value::to_string);
        self.store
            .finish(&key, outcome, &reason, text.as_deref())
            .await
            .map_err(store_error)?;
        tracing::info!(bug = id, outcome, %reason, "bugzilla writer");
        Ok(action(&key, outcome, &reason, request.as_ref()))
    }

    /// The guards, the plan, and the write: `(outcome, reason, request)`.
    async fn decide(
        &self,
        bug: &Value,
        id: u64,
        predictions: &[Value],
    ) -> Result<(&'static str, String, Option<Value>), StageError> {
        if bug["is_private"].as_bool() == Some(true)
            || bug["groups"].as_array().is_some_and(|g| !g.is_empty())
        {
            return Ok(("skipped", "private bug: never written".into(), None));
        }
        let filed = bug["creation_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_days());
        match filed {
            Some(days) if days <= self.config.max_bug_age_days => {}
            Some(days) => {
                return Ok((
                    "skipped",
                    format!(
                        "filed {days} days ago (> {} days)",
                        self.config.max_bug_age_days
                    ),
                    None,
                ));
            }
            None => return Ok(("skipped", "unknown filing time".into(), None)),
        }
        let plan = plan(bug, predictions, &self.config);
        if plan.change.is_empty() {
            return Ok((
                "skipped",
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
                "skipped",
                format!(
                    "hourly cap of {} writes reached",
                    self.config.max_writes_per_hour
                ),
                None,
            ));
        }
        let mut body = plan.change.clone();
        body.insert(
            "comment".into(),
            json!({"body": format!(
                "[bugflow](https://github.com/mozilla/bugbug) thinks this bug {}. Please correct it if the bot is wrong.",
                plan.explanations.join("; and it ")), "is_markdown": true}),
        );
        let request = Value::Object(body);
        if self.config.dry_run {
            tracing::info!(bug = id, request = %request, "dry run: would PUT /rest/bug/{id}");
            return Ok(("dry_run", plan.notes.join("; "), Some(request)));
        }
        let whole_value = ["type", "product", "component", "status"]
            .iter()
            .any(|f| plan.change.contains_key(*f));
        if whole_value {
            let fresh = self.client.bug(id).await?;
            if fresh["last_change_time"] != bug["last_change_time"] {
                return Ok((
                    "skipped",
                    "the bug changed while bugflow decided; its next event decides again".into(),
                    None,
                ));
            }
        }
        self.client.update(id, &request).await?;
        metrics::counter!("bugflow_bugzilla_writes_total", "consumer" => self.consumer.clone())
            .increment(1);
        Ok(("written", plan.notes.join("; "), Some(request)))
    }
}

/// A claim older than this belongs to a worker presumed dead: it is taken over.
/// How long a delivery waits for another one writing the same effect.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn action(key: &str, outcome: &str, reason: &str, request: Option<&Value>) -> Value {
    json!({"action": "bugzilla", "outcome": outcome, "reason": reason, "request": request, "key": key})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(model: &str, class: &str, p: f64) -> Value {
        json!({"model": model, "class": class, "index": 0, "prob": [p], "version": "v1"})
    }

    fn bug() -> Value {
        json!({"id": 1, "product": "Firefox", "component": "Sync", "type": "defect",
               "keywords": [], "history": []})
    }

    #[test]
    fn thresholds_and_history_decide() {
        let config = WriterConfig::default();
        let p = plan(&bug(), &[pred("component", "Core::DOM", 0.5)], &config);
        assert_eq!(p.change["product"], "Core");
        assert_eq!(
            p.change["component"], "DOM: Core & HTML",
            "conflated class mapped back"
        );
        assert!(
            plan(&bug(), &[pred("component", "Core::DOM", 0.2)], &config)
                .change
                .is_empty()
        );
        // A General prediction needs 0.8.
        assert!(
            plan(
                &bug(),
                &[pred("component", "Firefox::General", 0.5)],
                &config
            )
            .change
            .is_empty()
        );

        let mut touched = bug();
        touched["history"] =
            json!([{"changes": [{"field_name": "component", "removed": "A", "added": "Sync"}]}]);
        let p = plan(&touched, &[pred("component", "Core::DOM", 0.9)], &config);
        assert!(p.change.is_empty(), "a human chose the component before");
        assert!(p.notes[0].contains("changed before"));

        assert!(
            plan(&bug(), &[pred("bugtype", "task", 0.98)], &config)
                .change
                .is_empty()
        );
        assert_eq!(
            plan(&bug(), &[pred("bugtype", "task", 0.995)], &config).change["type"],
            "task"
        );
    }

    #[test]
    fn spam_wins_over_a_component_move() {
        let config = WriterConfig::default();
        let p = plan(
            &bug(),
            &[
                pred("spam", "spam", 0.97),
                pred("component", "Core::DOM", 0.9),
            ],
            &config,
        );
        assert_eq!(p.change["product"], "Invalid Bugs");
        assert_eq!(p.change["resolution"], "INVALID");
        assert!(p.notes.iter().any(|n| n.contains("the bug is spam")));
    }
}
