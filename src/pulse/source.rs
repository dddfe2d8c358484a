//! Deliveries in, [`Message`]s out.

use std::collections::BTreeMap;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

use crate::pulse::short::{TooLong, checked};
use serde_json::{Value, json};

use crate::message::Message;

/// What the pipeline needs out of a delivery: its body is moved, not copied (it is read only
/// from the message; the delivery is kept for its acker).
pub fn message_from_delivery(delivery: &mut Delivery) -> Message {
    let properties = &delivery.properties;
    Message {
        exchange: delivery.exchange.to_string(),
        routing_key: delivery.routing_key.to_string(),
        headers: properties
            .headers()
            .as_ref()
            .map(headers_to_json)
            .unwrap_or_default(),
        content_type: properties.content_type().as_ref().map(|c| c.to_string()),
        body: std::mem::take(&mut delivery.data),
        redelivered: delivery.redelivered,
        received_at: Utc::now(),
        enrichment: None,
    }
}

/// AMQP headers as JSON, for archives and logs.
pub fn headers_to_json(table: &FieldTable) -> BTreeMap<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.to_string(), amqp_to_json(v)))
        .collect()
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => json!(headers_to_json(t)),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// JSON headers back to AMQP (for re-publishing archived messages). A header name longer
/// than AMQP allows is an error, not a panic.
pub fn json_to_headers(headers: &BTreeMap<String, Value>) -> Result<FieldTable, TooLong> {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(checked(k, "header name")?, json_to_amqp(v)?);
    }
    Ok(table)
}

fn json_to_amqp(value: &Value) -> Result<AMQPValue, TooLong> {
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) => AMQPValue::Double(f),
            _ => AMQPValue::LongString(n.to_string().into()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(a) => AMQPValue::FieldArray(
            a.iter()
                .map(json_to_amqp)
                .collect::<Result<Vec<_>, _>>()?
                .into(),
        ),
        Value::Object(o) => {
            let map: BTreeMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            AMQPValue::FieldTable(json_to_headers(&map)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_a_round_trip() {
        let mut headers = BTreeMap::new();
        headers.insert("CC".to_string(), json!(["route.a", "route.b"]));
        headers.insert("x-count".to_string(), json!(3));
        headers.insert("x-flag".to_string(), json!(true));
        assert_eq!(
            headers_to_json(&json_to_headers(&headers).unwrap()),
            headers
        );
        let mut long = BTreeMap::new();
        long.insert("x".repeat(300), json!(1));
        assert!(
            json_to_headers(&long).is_err(),
            "a 300-byte header name is refused, not a panic"
        );
    }
}
