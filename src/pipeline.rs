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
use crate::events::request::PredictionRequest;
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
    /// Where push-risk requests look revisions up (`hg.url`).
    hg_url: String,
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
            hg_url: "https://hg.mozilla.org".into(),
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

    /// Where push-risk requests look revisions up (default `https://hg.mozilla.org`).
    pub fn with_hg_url(mut self, url: &str) -> Self {
        self.hg_url = url.to_owned();
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
            Event::Request(request) => self.request(request).await?,
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
        Ok(score_commits(&bundle, &details, data))
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
        let features = bug::extract_all(&rest);
        let models = self.score_features(&features);
        if let Some(store) = &self.store {
            self.remember(store, webhook, &models)
                .await
                .map_err(|e| StageError::transient(Stage::Sink, format!("store: {e}")))?;
            // The full bug was read: its answers are what the API would compute, so the
            // stream keeps the API's cache warm.
            if self.bugzilla.is_some() {
                warm_api_cache(store, &rest, &models)
                    .await
                    .map_err(|e| StageError::transient(Stage::Sink, format!("store: {e}")))?;
            }
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
        self.score_features(&bug::extract_all(rest_bug))
    }

    fn score_features(&self, all: &crate::features::Features) -> Vec<Value> {
        self.spec
            .models
            .iter()
            .filter(|m| m.input() == crate::models::Input::Bug)
            .map(|&model| self.score_model(model, all))
            .collect()
    }

    /// One bug model on extracted features: its class, index, probabilities, labels and
    /// bundle version, or why it was not scored.
    fn score_model(&self, model: ModelKind, all: &crate::features::Features) -> Value {
        match self.models.get(model) {
            None => not_scored(model, "no serving bundle"),
            Some(bundle) => match bundle.model("") {
                None => not_scored(model, "bundle has no model"),
                Some(fitted) => {
                    let p = fitted.predict(&model.exclude().apply(all));
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
        }
    }

    /// Answers a prediction request of the HTTP API: reads the bugs (or the push), runs the
    /// model and stores each answer under its API key, where the web side finds it.
    async fn request(&self, request: &PredictionRequest) -> Result<Finding, StageError> {
        let store = self.store.as_ref().ok_or_else(|| {
            StageError::invalid(
                Stage::Sink,
                "prediction requests need the store (bugflow run)",
            )
        })?;
        let stored = |e: anyhow::Error| StageError::transient(Stage::Sink, format!("store: {e}"));
        match request {
            PredictionRequest::Bugs { model: name, bugs } => {
                let model = ModelKind::parse(name)
                    .filter(|m| m.input() == crate::models::Input::Bug)
                    .ok_or_else(|| {
                        StageError::invalid(Stage::Models, format!("no bug model {name:?}"))
                    })?;
                let bundle = self.models.get(model).ok_or_else(|| {
                    StageError::transient(
                        Stage::Models,
                        format!("{model} has no serving bundle yet"),
                    )
                })?;
                let client = self.bugzilla.as_ref().ok_or_else(|| {
                    StageError::invalid(Stage::Enrich, "prediction requests need a Bugzilla client")
                })?;
                let found = client.bugs(bugs).await?;
                let mut available = 0;
                let mut answers = Vec::new();
                for &id in bugs {
                    let key = api_key_of_bug(model, id);
                    match found.iter().find(|b| b["id"].as_u64() == Some(id)) {
                        Some(rest) => {
                            let scored = self.score_model(model, &bug::extract_all(rest));
                            let answer = bugbug_answer(&scored)
                                .unwrap_or_else(|| json!({"available": false}));
                            store
                                .put_api_result(&key, &answer, rest["last_change_time"].as_str())
                                .await
                                .map_err(stored)?;
                            available += 1;
                            answers.push(json!({"bug_id": id, "class": answer["class"]}));
                        }
                        None => {
                            store
                                .put_api_result(&key, &json!({"available": false}), None)
                                .await
                                .map_err(stored)?;
                            answers.push(json!({"bug_id": id, "available": false}));
                        }
                    }
                }
                answers.truncate(MAX_LISTED_COMMITS);
                Ok(Finding {
                    subject: format!("{}.{}", model.name(), bugs[0]),
                    event: "predict".into(),
                    identity: format!("{model}#{bugs:?}"),
                    data: json!({"model": model.name(), "bugs": bugs.len(), "available": available, "answers": answers}),
                    models: vec![
                        json!({"model": model.name(), "version": bundle.manifest.version}),
                    ],
                    actions: Vec::new(),
                })
            }
            PredictionRequest::PushRisk { branch, rev } => {
                let key = api_key_of_push(branch, rev);
                let model = ModelKind::CommitRisk;
                let bundle = self.models.get(model).ok_or_else(|| {
                    StageError::transient(Stage::Models, "commit-risk has no serving bundle yet")
                })?;
                let source = self.hg.as_ref().ok_or_else(|| {
                    StageError::invalid(Stage::Enrich, "push risk needs hg.enabled = true")
                })?;
                let mut data = json!({"branch": branch, "rev": rev});
                let scored = match source.push_of(&self.hg_url, branch, rev).await {
                    Ok(details) => {
                        data["push_id"] = json!(details.pushid);
                        data["user"] = json!(details.user);
                        let scored = score_commits(&bundle, &details, &mut data);
                        let answer = json!({
                            "push_id": details.pushid,
                            "risk": scored["push_risk"],
                            "class": scored["class"],
                            "riskiest": scored["riskiest"],
                            "commits": data["commits"],
                            "extra_data": {"model": model.name(), "version": bundle.manifest.version},
                        });
                        store
                            .put_api_result(&key, &answer, None)
                            .await
                            .map_err(stored)?;
                        scored
                    }
                    // hg does not know the revision (404): answer so, do not retry.
                    Err(e) if e.action == crate::error::Action::Skip => {
                        store
                            .put_api_result(
                                &key,
                                &json!({"available": false, "reason": e.reason}),
                                None,
                            )
                            .await
                            .map_err(stored)?;
                        not_scored(model, &e.reason)
                    }
                    Err(e) => return Err(e),
                };
                Ok(Finding {
                    subject: format!("{}.{rev}", branch.replace('/', "-")),
                    event: "push-risk".into(),
                    identity: key,
                    data,
                    models: vec![scored],
                    actions: Vec::new(),
                })
            }
        }
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

/// Scores each commit of a push with the commit-risk bundle; the push's risk is the highest.
/// Adds the commits (riskiest first) to `data`.
fn score_commits(
    bundle: &crate::models::bundle::Bundle,
    details: &hg::PushDetails,
    data: &mut Value,
) -> Value {
    let model = ModelKind::CommitRisk;
    let Some(fitted) = bundle.model("") else {
        return not_scored(model, "bundle has no model");
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
                "components": commit::components(c),
                    "risk": round(*risk),
                })
            })
            .collect(),
    );
    json!({
        "model": model.name(),
        "version": bundle.manifest.version,
        "push_risk": push_risk.map(round),
        "riskiest": scored.first().map(|(_, c)| c.node.clone()),
        "scored_commits": scored.len(),
        "class": push_risk.map(|r| if r >= 0.5 { "backed-out" } else { "clean" }),
    })
}

/// The store key of the API's answer for `bug` by `model`.
pub fn api_key_of_bug(model: ModelKind, bug: u64) -> String {
    format!("classify_bug:{}_{bug}", model.name())
}

/// The store key of the API's answer for the push of `rev` on `branch`.
pub fn api_key_of_push(branch: &str, rev: &str) -> String {
    format!("push_risk:{branch}_{rev}")
}

/// One bug's answer in bugbug's shape, `{"prob", "index", "class", "extra_data"}`, from a
/// model's score (see `score_model`). Binary models answer `class` 0/1 as bugbug does; the
/// others the class name. `None` for a model that was not scored.
pub fn bugbug_answer(scored: &Value) -> Option<Value> {
    let labels = scored["labels"].as_array()?;
    let labels_map: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str().unwrap_or_default().to_owned(), json!(i)))
        .collect();
    let class = if labels.len() == 2 {
        scored["index"].clone()
    } else {
        scored["class"].clone()
    };
    Some(json!({
        "prob": scored["prob"],
        "index": scored["index"],
        "class": class,
        "extra_data": {
            "labels_map": labels_map,
            "model": scored["model"],
            "version": scored["version"],
        },
    }))
}

/// Stores the answers of a bug's scores in bugbug's shape, for the prediction API.
async fn warm_api_cache(store: &Store, rest: &Value, scores: &[Value]) -> anyhow::Result<()> {
    let Some(id) = rest["id"].as_u64() else {
        return Ok(());
    };
    for scored in scores {
        let (Some(model), Some(answer)) = (
            scored["model"].as_str().and_then(ModelKind::parse),
            bugbug_answer(scored),
        ) else {
            continue;
        };
        store
            .put_api_result(
                &api_key_of_bug(model, id),
                &answer,
                rest["last_change_time"].as_str(),
            )
            .await?;
    }
    Ok(())
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
