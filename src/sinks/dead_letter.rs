//! The dead-letter exchange: where messages that can never be processed are parked.
//!
//! bugflow publishes the original body and headers itself (rather than relying on the
//! broker's reject-to-DLX alone) so that it can add why: `x-bugflow-reason`, the stage, the
//! consumer and the original exchange and routing key. Only if that publish fails is the
//! message rejected, and the queue's own `x-dead-letter-exchange` still catches it (with
//! RabbitMQ's `x-death` header instead of our reason).
//!
//! Nothing is lost when the dead-letter queue is gone (Pulse deletes a queue past 8,000
//! messages): each dead letter is first kept in the store with its reason and body, and
//! the queue is declared again before every publish. Only that queue is bound to the
//! exchange (one per env: `exchange/<user>/bugflow-dead-letter-<env>`; the dashboard reads
//! the store, it does not tap the exchange), so the `mandatory` publish is confirmed only
//! when the durable queue took the message.

use lapin::types::{AMQPValue, LongString};

use crate::config::Config;
use crate::error::StageError;
use crate::message::Message;
use crate::pulse::publish::{Outgoing, PublishError, Publisher};
use crate::pulse::source::json_to_headers;
use crate::store::{NewDeadLetter, Store};

pub const REASON_HEADER: &str = "x-bugflow-reason";
pub const STAGE_HEADER: &str = "x-bugflow-stage";
pub const CONSUMER_HEADER: &str = "x-bugflow-consumer";
pub const EXCHANGE_HEADER: &str = "x-bugflow-original-exchange";
pub const ROUTING_KEY_HEADER: &str = "x-bugflow-original-routing-key";

#[derive(Clone)]
pub struct DeadLetterSink {
    publisher: Publisher,
    exchange: String,
    queue: String,
}

impl DeadLetterSink {
    pub fn new(publisher: Publisher, config: &Config) -> Self {
        DeadLetterSink {
            publisher,
            exchange: config.dead_letter_exchange(),
            queue: config.dead_letter_queue(),
        }
    }

    /// Parks `message` with the reason — in `store` (when there is one), then in the
    /// dead-letter queue; returns once the broker confirmed it.
    pub async fn send(
        &self,
        store: Option<&Store>,
        consumer: &str,
        message: &Message,
        error: &StageError,
    ) -> Result<(), PublishError> {
        if let Some(store) = store {
            let headers = serde_json::to_string(&message.headers).unwrap_or_default();
            let kept = store
                .add_dead_letter(&NewDeadLetter {
                    consumer,
                    stage: error.stage.as_str(),
                    reason: &error.reason,
                    exchange: &message.exchange,
                    routing_key: &message.routing_key,
                    headers: &headers,
                    body: &message.body,
                })
                .await;
            if let Err(e) = kept {
                tracing::warn!(error = %e, "could not keep the dead letter in the store");
            }
        }
        // Declared again each time: Pulse may have deleted it.
        let channel = self.publisher.channel().await?;
        crate::pulse::topology::declare_bound_queue(&channel, &self.queue, &self.exchange, "#")
            .await
            .map_err(|e| PublishError::Unavailable(format!("declaring {}: {e}", self.queue)))?;
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
