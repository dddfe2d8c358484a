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

/// A JSON object of `pairs` given in the order of their keys. A map collected from sorted
/// pairs is built in one pass; pairs out of order are sorted first, and `json!` inserts key
/// by key. Out of order the object is the same, only slower: debug builds say so.
pub(crate) fn object_in_key_order<'a>(
    pairs: impl IntoIterator<Item = (&'a str, serde_json::Value)>,
) -> serde_json::Value {
    let mut last: Option<&str> = None;
    let map = pairs
        .into_iter()
        .map(|(k, v)| {
            debug_assert!(last < Some(k), "{k:?} after {last:?}: keys out of order");
            last = Some(k);
            (k.to_owned(), v)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// An optional text as JSON: its string, or `null`.
pub(crate) fn or_null(v: &Option<String>) -> serde_json::Value {
    v.clone()
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Decodes a webhook body as BMO POSTs it.
///
/// A body that is UTF-8 throughout (every body BMO sends) is checked once, whole, and read
/// as text: the parser then copies each string as it is. Read as bytes, it checks each
/// piece of each string between escapes on its own, and a description's lines are many
/// pieces (callgrind, `bench replay --consumer bug-triage`: decoding 33.6k → 28.1k
/// instructions an event). A body that is not (a stray byte in a field nobody reads) is
/// read as bytes, as before: the same events decode, with the same errors.
pub fn decode(body: &[u8]) -> Result<WebhookEvent, StageError> {
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    let event: WebhookEvent =
        parsed.map_err(|e| StageError::invalid(Stage::Decode, format!("BMO webhook: {e}")))?;
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
    /// Does the event carry the bug's description (comment 0: a `bug.create`, or the
    /// `comment.create` of the description)? Other events carry at most a later comment.
    pub fn has_description(&self) -> bool {
        self.comment.as_ref().is_some_and(|c| c.number == Some(0))
    }

    /// The bug in Bugzilla REST's shape (`op_sys`, `creator_detail.email`, `comments`), so
    /// that the bug feature extractors read webhook events and REST bugs alike. A webhook
    /// carries no history and at most the one comment it is about.
    ///
    /// A model that learned from descriptions cannot be read on it unless it carries the
    /// description itself ([`has_description`](Self::has_description)).
    pub fn to_rest(&self) -> serde_json::Value {
        use serde_json::Value;
        // Built value by value: `json!` would serialise each field again, copying every
        // string twice.
        let text = |v: &Option<String>| Value::String(v.clone().unwrap_or_default());
        let comment = |body: &Option<String>, count: Value| {
            object_in_key_order([("count", count), ("text", text(body))])
        };
        let comments = match &self.comment {
            Some(c) if c.number == Some(0) => vec![comment(&c.body, Value::from(0))],
            Some(c) => vec![
                comment(&None, Value::from(0)),
                comment(&c.body, c.number.map_or(Value::Null, Value::from)),
            ],
            None => Vec::new(),
        };
        let attachments = self
            .attachment
            .iter()
            .map(|a| {
                object_in_key_order([
                    ("content_type", or_null(&a.content_type)),
                    ("id", Value::from(a.id)),
                    ("is_obsolete", Value::Bool(a.is_obsolete)),
                    ("is_patch", Value::Bool(a.is_patch)),
                ])
            })
            .collect();
        // In the order of the keys (callgrind, `bench replay`: 12.1k → 8.0k instructions an
        // event, against the same pairs out of order).
        object_in_key_order([
            ("attachments", Value::Array(attachments)),
            ("comments", Value::Array(comments)),
            ("component", text(&self.component)),
            ("creation_time", or_null(&self.creation_time)),
            (
                "creator_detail",
                object_in_key_order([("email", text(&self.creator))]),
            ),
            ("id", Value::from(self.id)),
            ("keywords", Value::from(self.keywords.clone())),
            ("last_change_time", or_null(&self.last_change_time)),
            ("op_sys", text(&self.operating_system)),
            ("platform", text(&self.platform)),
            ("priority", text(&self.priority)),
            ("product", text(&self.product)),
            ("resolution", text(&self.resolution)),
            ("severity", text(&self.severity)),
            ("status", text(&self.status)),
            ("summary", text(&self.summary)),
            ("type", text(&self.bug_type)),
            ("url", text(&self.url)),
            ("whiteboard", text(&self.whiteboard)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `to_rest` as it was written with `json!`: the shape the feature extractors read.
    fn rest_by_json(bug: &WebhookBug) -> serde_json::Value {
        let comments: Vec<serde_json::Value> = match &bug.comment {
            Some(c) if c.number == Some(0) => {
                vec![serde_json::json!({"text": c.body.clone().unwrap_or_default(), "count": 0})]
            }
            Some(c) => vec![
                serde_json::json!({"text": "", "count": 0}),
                serde_json::json!({"text": c.body.clone().unwrap_or_default(), "count": c.number}),
            ],
            None => Vec::new(),
        };
        let attachments: Vec<serde_json::Value> = bug
            .attachment
            .iter()
            .map(|a| {
                serde_json::json!({"id": a.id, "content_type": a.content_type, "is_patch": a.is_patch,
                                   "is_obsolete": a.is_obsolete})
            })
            .collect();
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        serde_json::json!({
            "id": bug.id, "summary": text(&bug.summary), "product": text(&bug.product),
            "component": text(&bug.component), "type": text(&bug.bug_type),
            "status": text(&bug.status), "resolution": text(&bug.resolution),
            "severity": text(&bug.severity), "priority": text(&bug.priority),
            "keywords": bug.keywords, "whiteboard": text(&bug.whiteboard),
            "creator_detail": {"email": text(&bug.creator)},
            "creation_time": bug.creation_time, "last_change_time": bug.last_change_time,
            "platform": text(&bug.platform), "op_sys": text(&bug.operating_system),
            "url": text(&bug.url), "comments": comments, "attachments": attachments,
        })
    }

    #[test]
    fn a_webhook_bug_reads_as_the_rest_shape_it_always_had() {
        let sample =
            include_bytes!("../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json");
        let bug = decode(sample).expect("the sample decodes").bug;
        let mut first = bug.clone();
        if let Some(c) = first.comment.as_mut() {
            c.number = Some(0);
        }
        let mut bare = bug.clone();
        bare.comment = None;
        bare.summary = None;
        bare.creation_time = None;
        bare.attachment = Some(WebhookAttachment {
            id: 7,
            content_type: Some("text/x-phabricator-request".into()),
            description: None,
            file_name: None,
            is_patch: true,
            is_obsolete: false,
            is_private: false,
        });
        let mut unnumbered = bug.clone();
        if let Some(c) = unnumbered.comment.as_mut() {
            c.number = None;
        }
        for b in [bug, first, bare, unnumbered] {
            assert_eq!(b.to_rest(), rest_by_json(&b));
        }
    }

    /// Read as text or as bytes, a body decodes to the same event, or fails with the same
    /// error: every sample webhook (and a description with escapes, as the bench's), one
    /// with a byte that is not UTF-8 in a field nobody reads (read as bytes, as it always
    /// was), and broken ones.
    #[test]
    fn a_body_decodes_as_it_did_when_read_as_bytes() {
        let by_bytes = |body: &[u8]| {
            serde_json::from_slice::<WebhookEvent>(body).map_err(|e| format!("BMO webhook: {e}"))
        };
        let decoded = |body: &[u8]| decode(body).map_err(|e| e.reason);
        let mut bodies: Vec<Vec<u8>> = [
            &include_bytes!(
                "../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"
            )[..],
            include_bytes!(
                "../../tests/fixtures/pulse/bmo_webhook_private_bug_modify_example.json"
            ),
            include_bytes!("../../tests/fixtures/pulse/bmo_webhook_comment_create_example.json"),
            include_bytes!("../../tests/fixtures/pulse/bmo_webhook_attachment_create_example.json"),
        ]
        .map(<[u8]>::to_vec)
        .into();
        bodies.push(crate::cmd::bench::webhook_body(3));
        // The sample's empty alias, as one byte that is not UTF-8.
        let mut stray = String::from_utf8(bodies[0].clone())
            .expect("the sample is UTF-8")
            .replacen("\"alias\": \"\"", "\"alias\": \"\u{1}\"", 1)
            .into_bytes();
        let at = stray
            .iter()
            .position(|&b| b == 1)
            .expect("the marker is in");
        stray[at] = 0xFF;
        bodies.push(stray.clone());
        bodies.push(b"{\"bug\": {\"id\": 1}, \"event\": {".to_vec());
        bodies.push(b"{\"bug\": {\"id\": \"\xFF\"}}".to_vec());
        for body in &bodies {
            assert_eq!(
                decoded(body),
                by_bytes(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(std::str::from_utf8(&stray).is_err());
        assert!(decoded(&stray).is_ok(), "a stray byte in an unread field");
        let described = decoded(&bodies[4]).expect("the bench's event decodes");
        let body = described
            .bug
            .comment
            .and_then(|c| c.body)
            .unwrap_or_default();
        assert!(body.contains('\n'), "a description with escapes: {body:?}");
    }
}
