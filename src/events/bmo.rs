//! BMO webhook bodies: `{bug, event, webhook_id, webhook_name}`.
//!
//! The bug object uses the Push extension's field names, not REST's (`operating_system`, not
//! `op_sys`). For comment and attachment events the comment or attachment is nested inside
//! `bug`. A private bug arrives reduced to `{"id": …, "is_private": true}` and without
//! `changes`: every other field here is therefore optional.

use serde::{Deserialize, Serialize};

use crate::error::{Stage, StageError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub bug: WebhookBug,
    pub event: EventInfo,
    pub webhook_id: Option<i64>,
    pub webhook_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookBug {
    pub id: u64,
    #[serde(default)]
    pub is_private: bool,
    pub summary: Option<String>,
    pub product: Option<String>,
    pub component: Option<String>,
    /// `null` is read as no keywords.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub keywords: Vec<String>,
    #[serde(default, rename = "type")]
    pub bug_type: Option<String>,
    pub status: Option<String>,
    pub resolution: Option<String>,
    pub severity: Option<String>,
    pub priority: Option<String>,
    pub whiteboard: Option<String>,
    pub creator: Option<String>,
    pub creation_time: Option<String>,
    pub last_change_time: Option<String>,
    pub platform: Option<String>,
    pub operating_system: Option<String>,
    pub url: Option<String>,
    pub comment: Option<WebhookComment>,
    pub attachment: Option<WebhookAttachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookComment {
    pub id: u64,
    pub body: Option<String>,
    pub number: Option<u64>,
    #[serde(default)]
    pub is_private: bool,
    pub creation_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttachment {
    pub id: u64,
    pub content_type: Option<String>,
    pub description: Option<String>,
    pub file_name: Option<String>,
    #[serde(default)]
    pub is_patch: bool,
    #[serde(default)]
    pub is_obsolete: bool,
    #[serde(default)]
    pub is_private: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInfo {
    /// `create` or `modify`.
    pub action: String,
    /// `bug.create`, `bug.modify:priority`, `comment.create`, `attachment.create`, …
    pub routing_key: String,
    /// `bug`, `comment` or `attachment`.
    pub target: Option<String>,
    /// UTC, without a zone: `2020-07-24T20:11:22`.
    pub time: String,
    pub user: Option<EventUser>,
    /// Present only for modify events of public bugs.
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventUser {
    pub id: i64,
    pub login: String,
    pub real_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub removed: String,
    #[serde(default)]
    pub added: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Decodes a webhook body as BMO POSTs it.
pub fn decode(body: &[u8]) -> Result<WebhookEvent, StageError> {
    let event: WebhookEvent = serde_json::from_slice(body)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("BMO webhook: {e}")))?;
    if event.bug.id == 0 {
        return Err(StageError::invalid(Stage::Decode, "BMO webhook: bug id 0"));
    }
    if !event.event.routing_key.contains('.') {
        return Err(StageError::invalid(
            Stage::Decode,
            format!(
                "BMO webhook: routing key {:?} is not <target>.<action>",
                event.event.routing_key
            ),
        ));
    }
    Ok(event)
}

impl WebhookBug {
    /// The bug in Bugzilla REST's shape (`op_sys`, `creator_detail.email`, `comments`), so
    /// that the bug feature extractors read webhook events and REST bugs alike. A webhook
    /// carries no history and at most the one comment it is about.
    pub fn to_rest(&self) -> serde_json::Value {
        let comments: Vec<serde_json::Value> = match &self.comment {
            Some(c) if c.number == Some(0) => {
                vec![serde_json::json!({"text": c.body.clone().unwrap_or_default(), "count": 0})]
            }
            Some(c) => vec![
                serde_json::json!({"text": "", "count": 0}),
                serde_json::json!({"text": c.body.clone().unwrap_or_default(), "count": c.number}),
            ],
            None => Vec::new(),
        };
        let attachments: Vec<serde_json::Value> = self
            .attachment
            .iter()
            .map(|a| {
                serde_json::json!({"id": a.id, "content_type": a.content_type, "is_patch": a.is_patch,
                                   "is_obsolete": a.is_obsolete})
            })
            .collect();
        serde_json::json!({
            "id": self.id,
            "summary": self.summary.clone().unwrap_or_default(),
            "product": self.product.clone().unwrap_or_default(),
            "component": self.component.clone().unwrap_or_default(),
            "type": self.bug_type.clone().unwrap_or_default(),
            "status": self.status.clone().unwrap_or_default(),
            "resolution": self.resolution.clone().unwrap_or_default(),
            "severity": self.severity.clone().unwrap_or_default(),
            "priority": self.priority.clone().unwrap_or_default(),
            "keywords": self.keywords,
            "whiteboard": self.whiteboard.clone().unwrap_or_default(),
            "creator_detail": {"email": self.creator.clone().unwrap_or_default()},
            "creation_time": self.creation_time,
            "last_change_time": self.last_change_time,
            "platform": self.platform.clone().unwrap_or_default(),
            "op_sys": self.operating_system.clone().unwrap_or_default(),
            "url": self.url.clone().unwrap_or_default(),
            "comments": comments,
            "attachments": attachments,
        })
    }
}
