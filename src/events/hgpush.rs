//! hg.mozilla.org push notifications (`exchange/hgpushes/v1` and `v2`).
//!
//! Both exchanges wrap the payload in kombu's envelope `{"payload": …, "_meta": …}`.
//! * v1: the payload *is* the push: `{repo_url, heads, pushlog_pushes}`.
//! * v2: the payload is `{"type": "changegroup.1" | "newrepo.1" | "obsolete.1", "data": …}`,
//!   and new types may appear at any time — they decode to [`HgPushEvent::Unknown`] so that
//!   a consumer can skip them with a log line instead of dead-lettering them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Stage, StageError};

/// A decoded hgpushes message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum HgPushEvent {
    /// New changesets were pushed (`changegroup.1`, or any v1 message).
    Changegroup(Changegroup),
    /// A repository was created (`newrepo.1`).
    NewRepo { repo_url: String },
    /// Obsolescence markers were added (`obsolete.1`).
    Obsolete(Obsolete),
    /// A v2 message type this version of bugflow does not know.
    Unknown { kind: String },
}

impl HgPushEvent {
    /// The message type as hg.mozilla.org names it.
    pub fn kind(&self) -> &str {
        match self {
            HgPushEvent::Changegroup(_) => "changegroup.1",
            HgPushEvent::NewRepo { .. } => "newrepo.1",
            HgPushEvent::Obsolete(_) => "obsolete.1",
            HgPushEvent::Unknown { kind } => kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changegroup {
    pub repo_url: String,
    /// DAG heads after the push, usually one 40-hex node.
    pub heads: Vec<String>,
    /// Should be one entry; may be empty for special repositories.
    #[serde(default)]
    pub pushlog_pushes: Vec<PushlogPush>,
    /// `push` almost always (`serve` in hg's own tests). Only v2 has it.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushlogPush {
    pub pushid: u64,
    /// UNIX time of the push.
    pub time: i64,
    /// The authenticated pusher, usually an e-mail address.
    pub user: String,
    #[serde(default)]
    pub push_json_url: String,
    /// `json-pushes?version=2&full=1&startID=…&endID=…`: where the changesets are.
    #[serde(default)]
    pub push_full_json_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Obsolete {
    pub repo_url: String,
    #[serde(default)]
    pub markers: Vec<Value>,
}

impl Changegroup {
    /// The repository path as used in routing keys: `mozilla-central`, `integration/autoland`.
    pub fn repo(&self) -> &str {
        repo_path(&self.repo_url)
    }

    /// The first (normally only) pushlog entry.
    pub fn push(&self) -> Option<&PushlogPush> {
        self.pushlog_pushes.first()
    }
}

/// `https://hg.mozilla.org/integration/autoland` → `integration/autoland`.
pub fn repo_path(repo_url: &str) -> &str {
    let without_scheme = repo_url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(repo_url);
    without_scheme
        .split_once('/')
        .map(|(_, path)| path)
        .unwrap_or(without_scheme)
        .trim_end_matches('/')
}

#[derive(Deserialize)]
struct Envelope {
    payload: Option<Value>,
}

#[derive(Deserialize)]
struct TypedPayload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
}

/// Decodes an hgpushes v1 or v2 body.
pub fn decode(body: &[u8]) -> Result<HgPushEvent, StageError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        StageError::invalid(Stage::Decode, format!("hg push: body is not JSON: {e}"))
    })?;
    let payload = envelope.payload.ok_or_else(|| {
        StageError::invalid(Stage::Decode, "hg push: no `payload` in the message body")
    })?;
    if payload.get("type").is_some() {
        decode_v2(payload)
    } else {
        decode_changegroup(payload).map(HgPushEvent::Changegroup)
    }
}

fn decode_v2(payload: Value) -> Result<HgPushEvent, StageError> {
    let typed: TypedPayload = serde_json::from_value(payload)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("hg push v2: bad payload: {e}")))?;
    match typed.kind.as_str() {
        "changegroup.1" => decode_changegroup(typed.data).map(HgPushEvent::Changegroup),
        "newrepo.1" => {
            let repo_url = typed
                .data
                .get("repo_url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    StageError::invalid(Stage::Decode, "hg push newrepo.1: no data.repo_url")
                })?;
            Ok(HgPushEvent::NewRepo {
                repo_url: repo_url.to_owned(),
            })
        }
        "obsolete.1" => serde_json::from_value(typed.data)
            .map(HgPushEvent::Obsolete)
            .map_err(|e| {
                StageError::invalid(Stage::Decode, format!("hg push obsolete.1: bad data: {e}"))
            }),
        _ => Ok(HgPushEvent::Unknown { kind: typed.kind }),
    }
}

fn decode_changegroup(data: Value) -> Result<Changegroup, StageError> {
    let mut push: Changegroup = serde_json::from_value(data).map_err(|e| {
        StageError::invalid(Stage::Decode, format!("hg push changegroup: bad data: {e}"))
    })?;
    if !push.repo_url.starts_with("https://") && !push.repo_url.starts_with("http://") {
        return Err(StageError::invalid(
            Stage::Decode,
            format!(
                "hg push changegroup: repo_url {:?} is not a URL",
                push.repo_url
            ),
        ));
    }
    if let Some(bad) = push.heads.iter().find(|h| !is_node(h)) {
        return Err(StageError::invalid(
            Stage::Decode,
            format!("hg push changegroup: head {bad:?} is not a 40-hex node"),
        ));
    }
    // Captured messages carry stray spaces (Treeherder's fixture: " james@…", " https: //…").
    for p in &mut push.pushlog_pushes {
        p.user = p.user.trim().to_owned();
        p.push_json_url = p.push_json_url.trim().replace(": //", "://");
        p.push_full_json_url = p.push_full_json_url.trim().to_owned();
    }
    Ok(push)
}

/// A Mercurial (or git) node: 40 hexadecimal digits.
pub fn is_node(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_path_strips_the_host() {
        assert_eq!(
            repo_path("https://hg.mozilla.org/integration/autoland"),
            "integration/autoland"
        );
        assert_eq!(repo_path("https://hg.mozilla.org/try/"), "try");
    }

    #[test]
    fn a_v2_type_from_the_future_is_unknown_not_an_error() {
        let body = br#"{"payload": {"type": "pushkey.1", "data": {}}, "_meta": {}}"#;
        assert_eq!(
            decode(body).unwrap(),
            HgPushEvent::Unknown {
                kind: "pushkey.1".into()
            }
        );
    }

    #[test]
    fn a_short_head_is_invalid() {
        let body = br#"{"payload": {"repo_url": "https://hg.mozilla.org/try", "heads": ["abc"], "pushlog_pushes": []}}"#;
        let err = decode(body).unwrap_err();
        assert_eq!(err.action, crate::error::Action::DeadLetter);
        assert!(err.reason.contains("40-hex"), "{}", err.reason);
    }
}
