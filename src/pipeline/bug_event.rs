//! The bug event flow: a BMO webhook event → the full bug (Bugzilla REST) → every bug model
//! (and each shadow bundle beside it) → the effects: remember the predictions and the labels
//! a person set, warm the API's cache, let the writer decide. Shadow scores go to a result
//! of their own (`<consumer>.shadow.<bug>`) and nowhere else: not to the writer, not to the
//! API's cache.

use std::sync::Arc;

use serde_json::{Value, json};

use super::api_request::cache_key_of_bug;
use super::scoring::Record;
use super::{Finding, Pipeline, filter};
use crate::effects::memory::{Kept, truths};
use crate::effects::{Effect, Planned, Remember};
use crate::error::{Stage, StageError};
use crate::events::bmo::{WebhookEvent, object_in_key_order, or_null};
use crate::message::Message;
use crate::models::linear::Terms;
use crate::score::Score;
use crate::store::Role;

impl Pipeline {
    /// The finding of one bug event; `None` when the full bug is private.
    pub(super) async fn bug_event(
        &self,
        webhook: &WebhookEvent,
        message: &Message,
    ) -> Result<Option<Finding>, StageError> {
        let bug = &webhook.bug;
        let identity = identity(webhook);
        // The full bug (comments, history): the one stored with the message, or Bugzilla's
        // when it is configured (a 404 or 401 is a skip with its reason, a 5xx or 429 a
        // retry); without either, what the event carries.
        let stored = message.enrichment.as_ref().and_then(|e| e.bug.clone());
        let (rest, record) = match (stored, &self.bugzilla) {
            (Some(full), _) => (full, Record::Full),
            (None, Some(_)) if self.offline => {
                return Err(StageError::skip(
                    Stage::Enrich,
                    format!("offline: no stored full bug for bug {}", bug.id),
                ));
            }
            (None, Some(client)) => (Arc::new(client.bug(bug.id).await?), Record::Full),
            (None, None) if bug.has_description() => (Arc::new(bug.to_rest()), Record::Full),
            (None, None) => (Arc::new(bug.to_rest()), Record::WithoutDescription),
        };
        if filter::is_private(&rest) {
            return Ok(None);
        }
        let bundles = self.bug_bundles();
        let terms = Terms::of(&bundles.features(&rest, record));
        let models = bundles.score_all(&terms, record);
        let shadow = bundles.score_shadows(&terms, record);
        let mut effects = vec![Effect::Remember(remember(webhook, &models, &shadow))];
        // The full bug was read: its answers are what the API would compute, so the stream
        // keeps the API's cache warm.
        if self.bugzilla.is_some() {
            effects.extend(api_answers(&rest, &models));
        }
        effects.push(Effect::WriteBug {
            bug: rest,
            identity: identity.clone(),
            scores: models.clone(),
        });
        Ok(Some(Finding {
            subject: bug.id.to_string(),
            event: webhook.event.routing_key.clone(),
            identity,
            data: event_data(webhook),
            models,
            shadow,
            effects,
        }))
    }
}

/// A private bug: nothing is read or scored; the writer records why it never writes it.
pub(super) fn private(webhook: &WebhookEvent) -> Planned {
    let id = webhook.bug.id;
    Planned::Skip {
        reason: filter::private_bug(id),
        effects: vec![Effect::WriteBug {
            bug: Arc::new(filter::private_stub(id)),
            identity: identity(webhook),
            scores: Vec::new(),
        }],
    }
}

/// What identifies one event about a bug: the bug, the change, its time, and the comment or
/// attachment it added.
fn identity(webhook: &WebhookEvent) -> String {
    let (bug, event) = (&webhook.bug, &webhook.event);
    let added = bug.comment.as_ref().map(|c| c.id);
    format!(
        "{}#{}#{}#{}",
        bug.id,
        event.routing_key,
        event.time,
        added.or(bug.attachment.as_ref().map(|a| a.id)).unwrap_or(0)
    )
}

/// What a bug result says about the event and the bug.
fn event_data(webhook: &WebhookEvent) -> Value {
    let (bug, event) = (&webhook.bug, &webhook.event);
    let id = |v: Option<u64>| v.map_or(Value::Null, Value::from);
    let changes = event
        .changes
        .iter()
        .map(|c| json!({"field": c.field, "removed": c.removed, "added": c.added}))
        .collect();
    // In the order of the keys (callgrind, `bench replay`: 9.8k → 7.6k instructions an
    // event, against `json!`).
    object_in_key_order([
        ("action", Value::String(event.action.clone())),
        ("attachment_id", id(bug.attachment.as_ref().map(|a| a.id))),
        ("bug_id", Value::from(bug.id)),
        ("changes", Value::Array(changes)),
        ("comment_id", id(bug.comment.as_ref().map(|c| c.id))),
        ("component", or_null(&bug.component)),
        ("event", Value::String(event.routing_key.clone())),
        ("keywords", Value::from(bug.keywords.clone())),
        ("last_change_time", or_null(&bug.last_change_time)),
        ("product", or_null(&bug.product)),
        ("severity", or_null(&bug.severity)),
        ("status", or_null(&bug.status)),
        ("summary", or_null(&bug.summary)),
        ("target", or_null(&event.target)),
        ("time", Value::String(event.time.clone())),
        ("type", or_null(&bug.bug_type)),
        (
            "user",
            event
                .user
                .as_ref()
                .map_or(Value::Null, |u| Value::String(u.login.clone())),
        ),
    ])
}

/// The predictions to keep (serving and shadow), and the labels a person set in this change.
fn remember(webhook: &WebhookEvent, models: &[Score], shadow: &[Score]) -> Remember {
    let kept = |scores: &[Score], role: Role| -> Vec<Kept> {
        scores
            .iter()
            .filter_map(Score::as_bug)
            .map(|s| Kept {
                model: s.model,
                version: s.version.clone(),
                role,
                class: s.class.clone(),
                confidence: s.prob.get(s.index).copied().unwrap_or(0.0),
            })
            .collect()
    };
    let mut predictions = kept(models, Role::Serving);
    predictions.extend(kept(shadow, Role::Shadow));
    Remember {
        bug_id: webhook.bug.id,
        by: webhook
            .event
            .user
            .as_ref()
            .map(|u| u.login.clone())
            .unwrap_or_default(),
        at: webhook.event.time.clone(),
        truths: truths(webhook),
        predictions,
    }
}

/// The API's answers for every bug model that scored `rest`.
fn api_answers(rest: &Value, models: &[Score]) -> Vec<Effect> {
    let Some(id) = rest["id"].as_u64() else {
        return Vec::new();
    };
    models
        .iter()
        .filter_map(Score::as_bug)
        .map(|s| Effect::ApiAnswer {
            key: cache_key_of_bug(s.model, id),
            answer: s.bugbug_answer(),
            last_change_time: rest["last_change_time"].as_str().map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `event_data` as it was written with `json!`.
    fn event_data_by_json(webhook: &WebhookEvent) -> Value {
        let (bug, event) = (&webhook.bug, &webhook.event);
        json!({
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
        })
    }

    #[test]
    fn event_data_is_what_json_made_of_every_sample_event() {
        let samples = [
            include_str!("../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_comment_create_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_attachment_create_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_private_bug_modify_example.json"),
        ];
        for sample in samples {
            let webhook = crate::events::bmo::decode(sample.as_bytes()).unwrap();
            assert_eq!(event_data(&webhook), event_data_by_json(&webhook));
        }
    }
}
