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
    #[serde(default)]
    pub webhook_id: Option<i64>,
    #[serde(default)]
    pub webhook_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookBug {
    pub id: u64,
    #[serde(default)]
    pub is_private: bool,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub product: Option<String>,
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default, rename = "type")]
    pub bug_type: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub whiteboard: Option<String>,
    #[serde(default)]
    pub creator: Option<String>,
    #[serde(default)]
    pub creation_time: Option<String>,
    #[serde(default)]
    pub last_change_time: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub operating_system: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub comment: Option<WebhookComment>,
    #[serde(default)]
    pub attachment: Option<WebhookAttachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookComment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub number: Option<u64>,
    #[serde(default)]
    pub is_private: bool,
    #[serde(default)]
    pub creation_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAttachment {
    pub id: u64,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
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
    #[serde(default)]
    pub target: Option<String>,
    /// UTC, without a zone: `2020-07-24T20:11:22`.
    pub time: String,
    #[serde(default)]
    pub user: Option<EventUser>,
    /// Present only for modify events of public bugs.
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventUser {
    pub id: i64,
    pub login: String,
    #[serde(default)]
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
