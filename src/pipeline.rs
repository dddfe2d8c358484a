//! The stages between a message and its results: decode → filter → enrich → models → result.
//!
//! [`Pipeline::process`] never touches the broker, so the very same code runs under
//! `bugflow run` (AMQP), `bugflow replay` (an archive, in-process), the demo and the tests.
//! The runner decides what to do with the outcome — publish, ack, dead-letter — following
//! the [`Action`](crate::error::Action) of any error.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::consumer::ConsumerSpec;
use crate::enrich::bugzilla::Bugzilla;
use crate::enrich::hg;
use crate::error::{Stage, StageError};
use crate::events::bmo::WebhookEvent;
use crate::events::hgpush::{Changegroup, HgPushEvent};
use crate::events::simple::SimpleBug;
use crate::events::{self, Event};
use crate::features::{bug, commit};
use crate::message::Message;
use crate::models::ModelKind;
use crate::models::registry::ModelSet;
use crate::outcome::{InputRef, ResultMessage, stable_id};
use crate::sinks::bugzilla::BugzillaWriter;
use crate::store::Store;

/// The store key under which `bugflow run` keeps the bot's Bugzilla login (from whoami):
/// its own changes are not harvested as labels.
pub const BOT_LOGIN: &str = "bugzilla.login";

/// At most this many commits are listed in a push result (the riskiest), so that results
/// stay under Pulse's advised 8 KiB.
const MAX_LISTED_COMMITS: usize = 40;

/// One consumer's processing.
#[derive(Clone)]
pub struct Pipeline {
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    hg: Option<hg::Source>,
    bugzilla: Option<Bugzilla>,
    writer: Option<BugzillaWriter>,
    store: Option<Arc<Store>>,
}

/// What the stages learned, before it becomes a result.
struct Finding {
    subject: String,
    event: String,
    /// What identifies the input event, for the stable message id.
    identity: String,
    data: Value,
    models: Vec<Value>,
    actions: Vec<Value>,
}

impl Pipeline {
    pub fn new(spec: ConsumerSpec, models: Arc<ModelSet>) -> Self {
        Pipeline {
            spec,
            models,
            hg: None,
            bugzilla: None,
            writer: None,
            store: None,
        }
    }

    /// Remember predictions, and harvest labels when a human sets a type or component.
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Read each bug event's full bug (comments, history) from Bugzilla before scoring.
    pub fn with_bugzilla(mut self, client: Bugzilla) -> Self {
        self.bugzilla = Some(client);
        self
    }

    /// Write predictions back to Bugzilla (the consumer's `[sinks.bugzilla]`).
    pub fn with_writer(mut self, writer: BugzillaWriter) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Fetch pushes' changesets from `source` (without it, pushes are not scored).
    pub fn with_hg(mut self, source: hg::Source) -> Self {
        self.hg = Some(source);
        self
    }

    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs every stage on one message.
    pub async fn process(&self, message: &Message) -> Result<Vec<ResultMessage>, StageError> {
        let event = events::decode(self.spec.input, message)?;
        let finding = match &event {
            Event::HgPush(push) => self.push(push, &message.routing_key).await?,
            Event::Webhook(webhook) => self.webhook(webhook).await?,
            Event::SimpleBug(simple) => self.simple_bug(simple),
        };
        Ok(vec![self.result(message, finding)])
    }

    async fn push(&self, event: &HgPushEvent, routing_key: &str) -> Result<Finding, StageError> {
        let push = match event {
            HgPushEvent::Changegroup(push) => push,
            other => {
                return Err(StageError::skip(
                    Stage::Decode,
                    format!("{} carries no changesets to score", other.kind()),
                ));
            }
        };
        let repo = push.repo();
        if !self.spec.repos.is_empty() && !self.spec.repos.iter().any(|r| r == repo) {
            return Err(StageError::skip(
                Stage::Decode,
                format!("repository {repo} is not in this consumer's repos"),
            ));
        }
        let Some(entry) = push.push() else {
            return Err(StageError::skip(
                Stage::Decode,
                format!("push to {repo} has no pushlog entry"),
            ));
        };
        if self.spec.skip_users.contains(&entry.user) {
            return Err(StageError::skip(
                Stage::Decode,
                format!("pusher {} is in skip_users", entry.user),
            ));
        }
        let mut data = push_data(push, routing_key);
        let mut models = Vec::new();
        if self.spec.models.contains(&ModelKind::CommitRisk) {
            models.push(
                self.score_push(entry.pushid, &entry.push_full_json_url, &mut data)
                    .await?,
            );
        }
        Ok(Finding {
            subject: format!("{repo}/{}", entry.pushid),
            event: event.kind().to_owned(),
            identity: format!(
                "{}#{}#{}",
                push.repo_url,
                entry.pushid,
                push.heads.join(",")
            ),
            data,
            models,
            actions: Vec::new(),
        })
    }

    /// Enrich (the push's changesets) and score each commit; the push's risk is the highest.
    async fn score_push(
        &self,
        pushid: u64,
        url: &str,
        data: &mut Value,
    ) -> Result<Value, StageError> {
        let model = ModelKind::CommitRisk;
        let Some(bundle) = self.models.get(model) else {
            return Ok(not_scored(model, "no serving bundle"));
        };
        let Some(source) = &self.hg else {
            return Ok(not_scored(
                model,
                "no hg.mozilla.org source configured (hg.enabled = false)",
            ));
        };
        let details = source.push(url, pushid).await?;
        let Some(fitted) = bundle.model("") else {
            return Ok(not_scored(model, "bundle has no model"));
        };
        let no_history = commit::Experience::default();
        let experience = bundle.weights.experience.as_ref().unwrap_or(&no_history);
        let risky = fitted
            .classes
            .iter()
            .position(|c| c == "backed-out")
            .unwrap_or(0);
        let mut scored: Vec<(f64, &commit::Commit)> = details
            .changesets
            .iter()
            .filter(|c| !commit::is_backout(c))
            .map(|c| {
                (
                    fitted
                        .predict(&commit::extract(c, experience))
                        .probabilities[risky],
                    c,
                )
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let push_risk = scored.first().map(|(r, _)| *r);
        data["changesets"] = json!(details.changesets.len());
        data["obsolete_changesets"] = json!(details.obsolete);
        data["commits"] = Value::Array(
            scored
                .iter()
                .take(MAX_LISTED_COMMITS)
                .map(|(risk, c)| {
                    json!({
                        "node": c.node,
                        "author": commit::author_key(&c.author),
                        "summary": c.desc.lines().next().unwrap_or_default().chars().take(100).collect::<String>(),
                        "files": c.files.len(),
                        "risk": round(*risk),
                    })
                })
                .collect(),
        );
        Ok(json!({
            "model": model.name(),
            "version": bundle.manifest.version,
            "push_risk": push_risk.map(round),
            "riskiest": scored.first().map(|(_, c)| c.node.clone()),
            "scored_commits": scored.len(),
            "class": push_risk.map(|r| if r >= 0.5 { "backed-out" } else { "clean" }),
        }))
    }

    async fn webhook(&self, webhook: &WebhookEvent) -> Result<Finding, StageError> {
        let bug = &webhook.bug;
        let event = &webhook.event;
        let identity = format!(
            "{}#{}#{}#{}",
            bug.id,
            event.routing_key,
            event.time,
            bug.comment
                .as_ref()
                .map(|c| c.id)
                .or(bug.attachment.as_ref().map(|a| a.id))
                .unwrap_or(0)
        );
        if bug.is_private {
            let reason = format!(
                "bug {} is private: bugflow never reads or writes it",
                bug.id
            );
            if let Some(writer) = &self.writer {
                writer
                    .act(&json!({"id": bug.id, "is_private": true}), &identity, &[])
                    .await?;
            }
            return Err(StageError::skip(Stage::Decode, reason));
        }
        let data = json!({
            "bug_id": bug.id,
            "event": event.routing_key,
            "action": event.action,
            "target": event.target,
            "time": event.time,
            "user": event.user.as_ref().map(|u| &u.login),
            "changes": event.changes,
            "summary": bug.summary,
            "product": bug.product,
            "component": bug.component,
            "type": bug.bug_type,
            "status": bug.status,
            "severity": bug.severity,
            "keywords": bug.keywords,
            "last_change_time": bug.last_change_time,
            "comment_id": bug.comment.as_ref().map(|c| c.id),
            "attachment_id": bug.attachment.as_ref().map(|a| a.id),
        });
        // The full bug (comments, history) when Bugzilla is configured; a 404 or 401 is a
        // skip with its reason, a 5xx or 429 a retry.
        let rest = match &self.bugzilla {
            Some(client) => client.bug(bug.id).await?,
            None => bug.to_rest(),
        };
        let models = self.score_bug(&rest);
        if let Some(store) = &self.store {
            self.remember(store, webhook, &models)
                .await
                .map_err(|e| StageError::transient(Stage::Sink, format!("store: {e}")))?;
        }
        let mut actions = Vec::new();
        if let Some(writer) = &self.writer {
            actions.push(writer.act(&rest, &identity, &models).await?);
        }
        Ok(Finding {
            subject: bug.id.to_string(),
            event: event.routing_key.clone(),
            identity,
            data,
            models,
            actions,
        })
    }

    /// Records the human's answer to an earlier prediction (type, product/component changes
    /// by anyone but bugflow's own account), then this event's predictions.
    async fn remember(
        &self,
        store: &Store,
        webhook: &WebhookEvent,
        models: &[Value],
    ) -> anyhow::Result<()> {
        let bug = &webhook.bug;
        let by = webhook
            .event
            .user
            .as_ref()
            .map(|u| u.login.clone())
            .unwrap_or_default();
        let ours = store.watermark(BOT_LOGIN).await?;
        if ours.as_deref() != Some(by.as_str()) {
            let fields: Vec<&str> = webhook
                .event
                .changes
                .iter()
                .map(|c| c.field.as_str())
                .collect();
            if let Some(c) = webhook.event.changes.iter().find(|c| c.field == "type") {
                store
                    .harvest(bug.id, "bugtype", &c.added, &by, &webhook.event.time)
                    .await?;
            }
            if fields.contains(&"component") || fields.contains(&"product") {
                let rest = json!({"product": bug.product, "component": bug.component});
                if let Some(truth) = crate::train::data::conflated_component(&rest) {
                    store
                        .harvest(bug.id, "component", &truth, &by, &webhook.event.time)
                        .await?;
                }
            }
        }
        for m in models {
            if let (Some(model), Some(version), Some(class)) = (
                m["model"].as_str(),
                m["version"].as_str(),
                m["class"].as_str(),
            ) {
                store
                    .record_prediction(bug.id, model, version, class)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every bug model of this consumer on one bug (REST shape). Features are extracted
    /// once; each model sees them minus its exclusions.
    pub fn score_bug(&self, rest_bug: &Value) -> Vec<Value> {
        let all = bug::extract_all(rest_bug);
        self.spec
            .models
            .iter()
            .filter(|m| m.input() == crate::models::Input::Bug)
            .map(|&model| match self.models.get(model) {
                None => not_scored(model, "no serving bundle"),
                Some(bundle) => match bundle.model("") {
                    None => not_scored(model, "bundle has no model"),
                    Some(fitted) => {
                        let p = fitted.predict(&model.exclude().apply(&all));
                        json!({
                            "model": model.name(),
                            "version": bundle.manifest.version,
                            "class": p.class,
                            "index": p.index,
                            "prob": p.probabilities.iter().map(|x| round(*x)).collect::<Vec<_>>(),
                            "labels": fitted.classes,
                        })
                    }
                },
            })
            .collect()
    }

    fn simple_bug(&self, simple: &SimpleBug) -> Finding {
        let models = self
            .spec
            .models
            .iter()
            .map(|m| not_scored(*m, "the legacy event carries only the bug id and time"))
            .collect();
        Finding {
            subject: simple.id.to_string(),
            event: "simple".into(),
            identity: format!("{}#{}", simple.id, simple.delta_ts),
            data: json!({"bug_id": simple.id, "delta_ts": simple.delta_ts, "event": "simple"}),
            models,
            actions: Vec::new(),
        }
    }

    fn result(&self, message: &Message, finding: Finding) -> ResultMessage {
        let consumer = &self.spec.name;
        let kind = &self.spec.kind;
        // Model versions are part of the id: the same input scored by another bundle is
        // another result (replays through a new model are told apart).
        let versions: Vec<&str> = finding
            .models
            .iter()
            .filter_map(|m| m.get("version").and_then(Value::as_str))
            .collect();
        ResultMessage {
            message_id: stable_id(&[
                consumer,
                kind,
                &finding.subject,
                &finding.identity,
                &versions.join(","),
            ]),
            routing_key: format!("{consumer}.{kind}.{}", finding.subject),
            consumer: consumer.clone(),
            kind: kind.clone(),
            subject: finding.subject,
            input: InputRef {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
                event: finding.event,
                redelivered: message.redelivered,
                received_at: message.received_at,
            },
            data: finding.data,
            models: finding.models,
            actions: finding.actions,
            possible_duplicate: message.redelivered,
            bugflow_version: env!("CARGO_PKG_VERSION").to_owned(),
            produced_at: Utc::now(),
        }
    }
}

fn not_scored(model: ModelKind, why: &str) -> Value {
    json!({"model": model.name(), "skipped": why})
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn push_data(push: &Changegroup, routing_key: &str) -> Value {
    let entry = push.push();
    json!({
        "repo": push.repo(),
        "repo_url": push.repo_url,
        "routing_key": routing_key,
        "push_id": entry.map(|p| p.pushid),
        "user": entry.map(|p| &p.user),
        "heads": push.heads,
        "time": entry.map(|p| p.time),
        "pushed_at": entry.and_then(|p| Utc.timestamp_opt(p.time, 0).single()),
        "push_full_json_url": entry.map(|p| &p.push_full_json_url),
    })
}
