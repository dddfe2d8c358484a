//! The stages between a message and its results: decode → filter → enrich → results.
//!
//! [`Pipeline::process`] is pure and synchronous: it never touches the broker, so the very
//! same code runs under `bugflow run` (AMQP), `bugflow replay` (an archive, in-process) and
//! the tests. The runner decides what to do with the outcome — publish, ack, dead-letter —
//! following the [`Action`](crate::error::Action) of any error.

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::consumer::ConsumerSpec;
use crate::error::{Stage, StageError};
use crate::events::bmo::WebhookEvent;
use crate::events::hgpush::{Changegroup, HgPushEvent};
use crate::events::simple::SimpleBug;
use crate::events::{self, Event};
use crate::message::Message;
use crate::outcome::{InputRef, ResultMessage, stable_id};

/// One consumer's processing.
#[derive(Debug, Clone)]
pub struct Pipeline {
    spec: ConsumerSpec,
}

/// What a stage extracted, before it becomes a result.
struct Finding {
    subject: String,
    event: String,
    /// What identifies the input event, for the stable message id.
    identity: String,
    data: Value,
}

impl Pipeline {
    pub fn new(spec: ConsumerSpec) -> Self {
        Pipeline { spec }
    }

    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Runs every stage on one message.
    pub fn process(&self, message: &Message) -> Result<Vec<ResultMessage>, StageError> {
        let event = events::decode(self.spec.input, message)?;
        let finding = match &event {
            Event::HgPush(push) => self.push(push, &message.routing_key)?,
            Event::Webhook(webhook) => self.webhook(webhook)?,
            Event::SimpleBug(simple) => self.simple_bug(simple),
        };
        Ok(vec![self.result(message, finding)])
    }

    fn push(&self, event: &HgPushEvent, routing_key: &str) -> Result<Finding, StageError> {
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
        Ok(Finding {
            subject: format!("{repo}/{}", entry.pushid),
            event: event.kind().to_owned(),
            identity: format!(
                "{}#{}#{}",
                push.repo_url,
                entry.pushid,
                push.heads.join(",")
            ),
            data: push_data(push, routing_key),
        })
    }

    fn webhook(&self, webhook: &WebhookEvent) -> Result<Finding, StageError> {
        let bug = &webhook.bug;
        if bug.is_private {
            return Err(StageError::skip(
                Stage::Decode,
                format!(
                    "bug {} is private: bugflow never reads or writes it",
                    bug.id
                ),
            ));
        }
        let event = &webhook.event;
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
        Ok(Finding {
            subject: bug.id.to_string(),
            event: event.routing_key.clone(),
            identity: format!(
                "{}#{}#{}#{}",
                bug.id,
                event.routing_key,
                event.time,
                bug.comment
                    .as_ref()
                    .map(|c| c.id)
                    .or(bug.attachment.as_ref().map(|a| a.id))
                    .unwrap_or(0)
            ),
            data,
        })
    }

    fn simple_bug(&self, simple: &SimpleBug) -> Finding {
        Finding {
            subject: simple.id.to_string(),
            event: "simple".into(),
            identity: format!("{}#{}", simple.id, simple.delta_ts),
            data: json!({"bug_id": simple.id, "delta_ts": simple.delta_ts, "event": "simple"}),
        }
    }

    fn result(&self, message: &Message, finding: Finding) -> ResultMessage {
        let consumer = &self.spec.name;
        let kind = &self.spec.kind;
        ResultMessage {
            message_id: stable_id(&[consumer, kind, &finding.subject, &finding.identity]),
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
            models: Vec::new(),
            actions: Vec::new(),
            bugflow_version: env!("CARGO_PKG_VERSION").to_owned(),
            produced_at: Utc::now(),
        }
    }
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
