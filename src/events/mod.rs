//! Typed inputs: what each kind of message on the wire means.
//!
//! A consumer declares its `input` in its TOML file; [`decode`] turns a [`Message`] into the
//! matching [`Event`], or into a [`StageError`] that says whether to dead-letter or skip.

pub mod bmo;
pub mod hgpush;
pub mod request;
pub mod simple;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

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

/// A webhook body (`{bug, event}`) or a simple one (`{id, delta_ts}`), so that one consumer
/// can bind both exchanges.
///
/// Nearly every bug event is a webhook's: read as one first, its body is parsed once (a
/// webhook has both keys, so this is what [`decode_by_shape`] would have chosen). Its keys
/// are looked at only when it is not one, to tell a simple event or say why it is neither.
fn decode_bug_event(body: &[u8]) -> Result<Event, StageError> {
    match bmo::decode(body) {
        Ok(webhook) => Ok(Event::Webhook(Box::new(webhook))),
        Err(_) => decode_by_shape(body),
    }
}

/// Tells the webhook shape from the simple one by the body's keys, then decodes it as that.
fn decode_by_shape(body: &[u8]) -> Result<Event, StageError> {
    let shape: Shape = serde_json::from_slice(body)
        .map_err(|e| StageError::invalid(Stage::Decode, format!("bug event: not JSON: {e}")))?;
    if shape.bug && shape.event {
        bmo::decode(body).map(|e| Event::Webhook(Box::new(e)))
    } else if shape.id || shape.payload_id {
        simple::decode(body).map(Event::SimpleBug)
    } else {
        Err(StageError::invalid(
            Stage::Decode,
            "bug event: neither a BMO webhook body {bug, event} nor a simple {id, delta_ts}",
        ))
    }
}

/// Which of the keys that tell a bug event's shape its top level has (`payload.id`: a
/// simple event in a Pulse envelope). Read without building a tree of the values, since a
/// webhook's `bug` is most of its bytes and the typed decoder reads them next.
#[derive(Debug, Default)]
struct Shape {
    bug: bool,
    event: bool,
    id: bool,
    payload_id: bool,
}

/// Whether a value is an object with an `id` key.
#[derive(Debug, Default)]
struct HasId(bool);

/// A value learnt from an object's keys; any JSON that is not an object has none of them
/// (`Default`).
trait FromKeys: Default {
    /// Reads the value of `key` from `map` (exactly once).
    fn key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl FromKeys for Shape {
    fn key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        if key == "payload" {
            self.payload_id = map.next_value::<HasId>()?.0;
            return Ok(());
        }
        map.next_value::<IgnoredAny>()?;
        match key {
            "bug" => self.bug = true,
            "event" => self.event = true,
            "id" => self.id = true,
            _ => {}
        }
        Ok(())
    }
}

impl FromKeys for HasId {
    fn key<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        map.next_value::<IgnoredAny>()?;
        self.0 |= key == "id";
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(Keys(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for HasId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HasId, D::Error> {
        d.deserialize_any(Keys(std::marker::PhantomData))
    }
}

/// Visits any JSON value into a [`FromKeys`] `T`.
struct Keys<T>(std::marker::PhantomData<T>);

impl<'de, T: FromKeys> Visitor<'de> for Keys<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut value = T::default();
        while let Some(key) = map.next_key::<String>()? {
            value.key(&key, &mut map)?;
        }
        Ok(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape as it was read before: the whole body parsed into a tree first.
    fn shape_from_a_tree(body: &str) -> Option<(bool, bool, bool, bool)> {
        let probe: serde_json::Value = serde_json::from_str(body).ok()?;
        Some((
            probe.get("bug").is_some(),
            probe.get("event").is_some(),
            probe.get("id").is_some(),
            probe.get("payload").and_then(|p| p.get("id")).is_some(),
        ))
    }

    /// Bug event bodies of every shape: webhooks, a REST bug, simple events, and the
    /// malformed.
    const BODIES: [&str; 23] = [
        include_str!("../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"),
        include_str!("../../tests/fixtures/pulse/bmo_webhook_comment_create_example.json"),
        include_str!("../../tests/fixtures/pulse/bmo_rest_get_bug_35_response.json"),
        r#"{"id": 5, "delta_ts": "2026-01-01T00:00:00Z"}"#,
        r#"{"payload": {"id": 5}, "_meta": {}}"#,
        r#"{"payload": {"ids": [5]}}"#,
        r#"{"payload": 5}"#,
        r#"{"payload": [{"id": 1}]}"#,
        r#"{"bug": null, "event": null}"#,
        r#"{"bug": {"event": 1}}"#,
        r#"{"b\u0075g": 1, "event": 2}"#,
        r#"{"id": 1, "id": 2}"#,
        r#"[{"bug": 1, "event": 2}]"#,
        "{}",
        "[]",
        "null",
        "3.5",
        "-7",
        "\"bug\"",
        "true",
        "{\"bug\": 1,",
        "not json",
        "",
    ];

    #[test]
    fn the_shape_read_from_keys_is_the_shape_read_from_a_tree() {
        for body in BODIES {
            let keys = serde_json::from_str::<Shape>(body)
                .ok()
                .map(|s| (s.bug, s.event, s.id, s.payload_id));
            assert_eq!(keys, shape_from_a_tree(body), "{body:.80}");
        }
    }

    #[test]
    fn a_webhook_read_first_decodes_every_body_as_its_shape_did() {
        let mut bodies: Vec<String> = BODIES.iter().map(|b| (*b).to_owned()).collect();
        // Webhooks that fail their own checks, or carry a key twice, say so as before.
        let webhook: serde_json::Value = serde_json::from_str(BODIES[0]).expect("a sample");
        for (pointer, value) in [("/bug/id", 0.into()), ("/event/routing_key", "bug".into())] {
            let mut bad = webhook.clone();
            *bad.pointer_mut(pointer).expect("the sample has it") = value;
            bodies.push(bad.to_string());
        }
        bodies.push(format!(r#"{{"bug": 1, {}"#, &BODIES[0].trim_start()[1..]));
        for body in &bodies {
            // Before, every body was decoded by its shape.
            let before = decode_by_shape(body.as_bytes()).map_err(|e| e.to_string());
            let now = decode_bug_event(body.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(now, before, "{body:.80}");
        }
    }
}
