//! The retry queue: where a message whose processing failed transiently waits before its
//! next try, the usual RabbitMQ pattern.
//!
//! Each consumer has a durable queue `<its queue>-retry` on the retry exchange (bound with
//! `wait.<consumer>`). A failed message is published there with `expiration` =
//! `amqp.retry_delay_seconds` and its try counted in `x-bugflow-attempt`; when it expires
//! the broker dead-letters it to the retry exchange with routing key `back.<consumer>`,
//! which is bound to the consumer's own queue — so it comes back to this consumer only,
//! after the delay, and the original is acked as soon as the broker confirmed the copy.
//! Its original exchange and routing key travel in headers and are restored on arrival
//! ([`Message::restore_retried`](crate::message::Message::restore_retried)).

use lapin::types::{AMQPValue, LongString};

use crate::error::StageError;
use crate::message::{ATTEMPT_HEADER, Message};
use crate::pulse::publish::{Outgoing, PublishError, Publisher};
use crate::pulse::source::json_to_headers;
use crate::sinks::dead_letter::{EXCHANGE_HEADER, REASON_HEADER, ROUTING_KEY_HEADER};

/// The routing key a consumer's retry queue is bound with.
pub fn wait_key(consumer: &str) -> String {
    format!("wait.{consumer}")
}

/// The routing key that brings an expired retry back to the consumer's queue.
pub fn back_key(consumer: &str) -> String {
    format!("back.{consumer}")
}

#[derive(Clone)]
pub struct RetrySink {
    publisher: Publisher,
    exchange: String,
    /// How long a message waits, in milliseconds (its AMQP `expiration`).
    delay_ms: u64,
    /// Tries before a message is dead-lettered.
    pub attempts: u32,
}

impl RetrySink {
    pub fn new(publisher: Publisher, exchange: String, delay_ms: u64, attempts: u32) -> Self {
        RetrySink {
            publisher,
            exchange,
            delay_ms,
            attempts: attempts.max(1),
        }
    }

    /// Parks `message` in `consumer`'s retry queue for its next try; returns once the broker
    /// confirmed it.
    pub async fn send(
        &self,
        consumer: &str,
        message: &Message,
        error: &StageError,
    ) -> Result<(), PublishError> {
        // RabbitMQ's own record of earlier dead-letterings grows with every try; ours is
        // the attempt count.
        let mut kept = message.headers.clone();
        kept.remove("x-death");
        let mut headers = json_to_headers(&kept)?;
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(message.attempt()) + 1),
        );
        headers.insert(REASON_HEADER.into(), text(&error.reason));
        headers.insert(EXCHANGE_HEADER.into(), text(&message.exchange));
        headers.insert(ROUTING_KEY_HEADER.into(), text(&message.routing_key));
        let routing_key = wait_key(consumer);
        let expiration = self.delay_ms.to_string();
        let out = Outgoing {
            exchange: &self.exchange,
            routing_key: &routing_key,
            body: &message.body,
            message_id: None,
            headers,
            // The retry queue must take it; if it is missing, the message is requeued.
            mandatory: true,
        };
        self.publisher
            .publish_expiring(&out, Some(&expiration))
            .await
    }
}
