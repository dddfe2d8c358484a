//! The one shape every input takes inside bugflow.
//!
//! A [`Message`] is what arrived, before anything is decoded: the exchange and routing key it
//! came through, its AMQP headers, and its body bytes. The AMQP source, the archive reader
//! (`bugflow replay`) and the webhook receiver all produce it, so the pipeline never knows
//! — and never needs to know — where a message came from.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
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
}

impl Message {
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>, body: Vec<u8>) -> Self {
        Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            headers: BTreeMap::new(),
            content_type: Some("application/json".into()),
            body,
            redelivered: false,
            received_at: Utc::now(),
        }
    }
}
