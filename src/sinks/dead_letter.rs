//! The dead-letter exchange: where messages that can never be processed are parked.
//!
//! bugflow publishes the original body and headers itself (rather than relying on the
//! broker's reject-to-DLX alone) so that it can add why: `x-bugflow-reason`, the stage, the
//! consumer and the original exchange and routing key. Only if that publish fails is the
//! message rejected, and the queue's own `x-dead-letter-exchange` still catches it (with
//! RabbitMQ's `x-death` header instead of our reason).

use lapin::types::{AMQPValue, LongString};

use crate::error::StageError;
use crate::message::Message;
use crate::pulse::publish::{Outgoing, PublishError, Publisher};
use crate::pulse::source::json_to_headers;

pub const REASON_HEADER: &str = "x-bugflow-reason";
pub const STAGE_HEADER: &str = "x-bugflow-stage";
pub const CONSUMER_HEADER: &str = "x-bugflow-consumer";
pub const EXCHANGE_HEADER: &str = "x-bugflow-original-exchange";
pub const ROUTING_KEY_HEADER: &str = "x-bugflow-original-routing-key";

#[derive(Clone)]
pub struct DeadLetterSink {
    publisher: Publisher,
    exchange: String,
}

impl DeadLetterSink {
    pub fn new(publisher: Publisher, exchange: String) -> Self {
        DeadLetterSink {
            publisher,
            exchange,
        }
    }

    /// Parks `message` with the reason; returns once the broker confirmed it.
    pub async fn send(
        &self,
        consumer: &str,
        message: &Message,
        error: &StageError,
    ) -> Result<(), PublishError> {
        // The original headers travel along, unless one cannot (a name over 255 bytes).
        let mut headers = json_to_headers(&message.headers).unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(REASON_HEADER.into(), text(&error.reason));
        headers.insert(STAGE_HEADER.into(), text(error.stage.as_str()));
        headers.insert(CONSUMER_HEADER.into(), text(consumer));
        headers.insert(EXCHANGE_HEADER.into(), text(&message.exchange));
        headers.insert(ROUTING_KEY_HEADER.into(), text(&message.routing_key));
        let out = Outgoing {
            exchange: &self.exchange,
            routing_key: consumer,
            body: &message.body,
            message_id: None,
            headers,
            // The dead-letter queue must exist; if it does not, say so rather than drop.
            mandatory: true,
        };
        self.publisher.publish(&out).await
    }
}
