//! Archives: one JSON object per line, one message per object.
//!
//! ```json
//! {"exchange": "exchange/hgpushes/v2", "routing_key": "integration/autoland",
//!  "headers": {}, "content_type": "application/json",
//!  "body": {"payload": {"type": "changegroup.1", "data": {}}, "_meta": {}},
//!  "received_at": "2026-11-28T10:00:00Z"}
//! ```
//!
//! `body` holds the message when it is JSON; otherwise `body_base64` holds its bytes.
//! `enrichment`, when present, holds what the message's flow fetched to score it (the
//! json-pushes answer by URL, the full bug): see [`Enrichment`].
//! `bugflow record` writes archives and `bugflow replay` reads them; any tool can write one.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::{Enrichment, Message};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveLine {
    pub exchange: String,
    pub routing_key: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// What the message's flow fetched to score it (`bugflow record --enrich`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

impl ArchiveLine {
    /// The line for a message: its body as JSON when it is JSON, as base64 otherwise.
    pub fn from_message(message: &Message) -> Self {
        let (body, body_base64) = match serde_json::from_slice::<Value>(&message.body) {
            Ok(value) => (Some(value), None),
            Err(_) => (None, Some(STANDARD.encode(&message.body))),
        };
        ArchiveLine {
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            headers: message.headers.clone(),
            content_type: message.content_type.clone(),
            body,
            body_base64,
            received_at: Some(message.received_at),
            enrichment: message.enrichment.as_deref().cloned(),
        }
    }

    /// The message this line records.
    pub fn into_message(self) -> Result<Message, String> {
        let body = match (self.body, self.body_base64) {
            (Some(value), None) => serde_json::to_vec(&value).map_err(|e| e.to_string())?,
            (None, Some(b64)) => STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("body_base64 is not base64: {e}"))?,
            (Some(_), Some(_)) => return Err("both body and body_base64 are set".into()),
            (None, None) => return Err("neither body nor body_base64 is set".into()),
        };
        Ok(Message {
            exchange: self.exchange,
            routing_key: self.routing_key,
            headers: self.headers,
            content_type: self.content_type,
            body,
            redelivered: false,
            received_at: self.received_at.unwrap_or_else(Utc::now),
            enrichment: self.enrichment.filter(|e| !e.is_empty()).map(Arc::new),
        })
    }

    /// Parses one line of an archive.
    pub fn parse(line: &str) -> Result<Message, String> {
        let parsed: ArchiveLine =
            serde_json::from_str(line).map_err(|e| format!("not an archive line: {e}"))?;
        parsed.into_message()
    }

    pub fn to_line(&self) -> String {
        // A struct of strings and JSON values always serializes.
        serde_json::to_string(self).expect("an archive line serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bodies_travel_as_base64() {
        let message = Message::new("e", "k", vec![0xff, 0x00, 0x10]);
        let line = ArchiveLine::from_message(&message).to_line();
        assert!(line.contains("body_base64"));
        assert_eq!(
            ArchiveLine::parse(&line).unwrap().body,
            vec![0xff, 0x00, 0x10]
        );
    }

    #[test]
    fn json_bodies_stay_readable() {
        let message = Message::new("e", "k", br#"{"a": 1}"#.to_vec());
        let line = ArchiveLine::from_message(&message).to_line();
        assert!(line.contains(r#""body":{"a":1}"#), "{line}");
    }

    #[test]
    fn a_line_without_a_body_is_an_error() {
        assert!(ArchiveLine::parse(r#"{"exchange": "e", "routing_key": "k"}"#).is_err());
        assert!(ArchiveLine::parse("not json").is_err());
    }
}
