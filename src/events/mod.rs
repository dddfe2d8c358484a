//! Typed inputs: what each kind of message on the wire means.
//!
//! A consumer declares its `input` in its TOML file; [`decode`] turns a [`Message`] into the
//! matching [`Event`], or into a [`StageError`] that says whether to dead-letter or skip.

pub mod bmo;
pub mod hgpush;
pub mod request;
pub mod simple;

use serde::{Deserialize, Serialize};

use crate::error::{Stage, StageError};
use crate::message::Message;

/// What a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// hg.mozilla.org push notifications (`exchange/hgpushes/v1|v2`).
    HgPush,
    /// Bug events: BMO webhook bodies relayed to our exchange, or the legacy simple format.
    BugEvent,
    /// The HTTP API's prediction requests (`exchange/<user>/bugflow-requests`).
    PredictionRequest,
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    HgPush(hgpush::HgPushEvent),
    Webhook(Box<bmo::WebhookEvent>),
    SimpleBug(simple::SimpleBug),
    Request(request::PredictionRequest),
}

/// Decodes a message for a consumer that reads `kind`.
pub fn decode(kind: InputKind, message: &Message) -> Result<Event, StageError> {
    if let Some(ct) = &message.content_type
        && !ct.is_empty()
        && !ct.starts_with("application/json")
    {
        return Err(StageError::invalid(
            Stage::Decode,
            format!("content type {ct:?} is not application/json"),
        ));
    }
    match kind {
        InputKind::HgPush => hgpush::decode(&message.body).map(Event::HgPush),
        InputKind::BugEvent => decode_bug_event(&message.body),
        InputKind::PredictionRequest => request::decode(&message.body).map(Event::Request),
    }
}

/// Tells the webhook shape (`{bug, event}`) from the simple one (`{id, delta_ts}`) by its keys,
/// so that one consumer can bind both exchanges.
fn decode_bug_event(body: &[u8]) -> Result<Event, StageError> {
    let probe: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("bug event: not JSON: {e}")))?;
    if probe.get("bug").is_some() && probe.get("event").is_some() {
        bmo::decode(body).map(|e| Event::Webhook(Box::new(e)))
    } else if probe.get("id").is_some() || probe.get("payload").and_then(|p| p.get("id")).is_some()
    {
        simple::decode(body).map(Event::SimpleBug)
    } else {
        Err(StageError::invalid(
            Stage::Decode,
            "bug event: neither a BMO webhook body {bug, event} nor a simple {id, delta_ts}",
        ))
    }
}
