//! The one shape every input takes inside bugflow.
//!
//! A [`Message`] is what arrived, before anything is decoded: the exchange and routing key it
//! came through, its AMQP headers, and its body bytes. The AMQP source, the archive reader
//! (`bugflow replay`) and the webhook receiver all produce it, so the pipeline never knows
//! — and never needs to know — where a message came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    /// AMQP headers, converted to JSON values (strings, numbers, booleans, arrays, tables).
    pub headers: BTreeMap<String, Value>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// True when the broker delivers this message again (a previous delivery was not acked).
    pub redelivered: bool,
    pub received_at: DateTime<Utc>,
    /// What the message's flow fetched to score it, kept with it by `bugflow record
    /// --enrich`: a replay uses it instead of fetching again. None for a live delivery.
    pub enrichment: Option<Arc<Enrichment>>,
}

/// What a flow fetches from outside to score a message, as it came: a push's json-pushes
/// answer (or a push-risk request's), a bug event's full bug, the bugs of a prediction
/// request. Kept on an archive line, it makes a replay reproducible
/// (the same bytes in, whatever hg.mozilla.org or Bugzilla say today) and lets it run with
/// no network (`bugflow replay --offline`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    /// json-pushes answers by URL (a push's `push_full_json_url`; a push-risk request's
    /// `json-pushes?changeset=`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json_pushes: BTreeMap<String, Value>,
    /// hg.mozilla.org's refusals by URL, its status (404: it knows no such push or
    /// revision): an answer too, which a replay gives as the live flow gave it (a push-risk
    /// request for an unknown revision is answered unavailable, not skipped).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, u16>,
    /// The full bug (REST shape, with comments and history), as Bugzilla answered. Written
    /// whole, read back as the models, their answers and the writer's rules read it
    /// ([`crate::features::fields::KEPT`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::features::fields::kept_bug"
    )]
    pub bug: Option<Arc<Value>>,
    /// The bugs Bugzilla showed for a prediction request (REST shape, with comments and
    /// history); a bug it did not show is absent, a private one only its id and
    /// `is_private` (never its text). `Some(empty)`: it showed none. Written whole (a later
    /// model may read more of a bug), read back as the models and their answers read it
    /// ([`crate::features::fields::KEPT`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::features::fields::kept_bugs"
    )]
    pub bugs: Option<Vec<Value>>,
}

impl Enrichment {
    pub fn is_empty(&self) -> bool {
        self.json_pushes.is_empty()
            && self.refused.is_empty()
            && self.bug.is_none()
            && self.bugs.is_none()
    }
}

/// The try a delivery is (1 for the first): set by the retry sink, so that a redelivery
/// after a lost connection is not counted as a failed try.
pub const ATTEMPT_HEADER: &str = "x-bugflow-attempt";

impl Message {
    /// Which try this is: 1, or what the retry sink wrote in [`ATTEMPT_HEADER`].
    pub fn attempt(&self) -> u32 {
        self.headers
            .get(ATTEMPT_HEADER)
            .and_then(Value::as_u64)
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1))
    }

    /// A message back from the retry exchange takes its original exchange and routing key
    /// again (the retry sink kept them in headers), so the pipeline sees what first arrived.
    pub fn restore_retried(&mut self, retry_exchange: &str) {
        if self.exchange != retry_exchange {
            return;
        }
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let (Some(exchange), Some(routing_key)) = (
            header(crate::sinks::dead_letter::EXCHANGE_HEADER),
            header(crate::sinks::dead_letter::ROUTING_KEY_HEADER),
        ) {
            self.exchange = exchange;
            self.routing_key = routing_key;
        }
    }

    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>, body: Vec<u8>) -> Self {
        Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            headers: BTreeMap::new(),
            content_type: Some("application/json".into()),
            body,
            redelivered: false,
            received_at: Utc::now(),
            enrichment: None,
        }
    }
}
