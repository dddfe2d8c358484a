//! The results exchange: `exchange/<user>/bugflow-results`, topic, durable.
//!
//! Each result is persistent JSON with content type `application/json`, routing key
//! `<consumer>.<kind>.<subject>` and a stable `message_id`, so that downstream consumers can
//! bind what they need (`pushes.#`, `bug-triage.bug.*`) and drop duplicates.

use crate::outcome::ResultMessage;
use crate::pulse::publish::{Outgoing, PublishError, Publisher};

/// Pulse's advice: keep messages under 8 KiB.
pub const MAX_RESULT_BYTES: usize = 8 * 1024;

#[derive(Clone)]
pub struct ResultsSink {
    publisher: Publisher,
    exchange: String,
}

impl ResultsSink {
    pub fn new(publisher: Publisher, exchange: String) -> Self {
        ResultsSink {
            publisher,
            exchange,
        }
    }

    /// Publishes one result and returns once the broker confirmed it.
    pub async fn send(&self, result: &ResultMessage) -> Result<(), PublishError> {
        let body = result.to_json();
        if body.len() > MAX_RESULT_BYTES {
            tracing::warn!(
                message_id = %result.message_id,
                bytes = body.len(),
                "result is larger than Pulse's advised 8 KiB"
            );
        }
        let mut out = Outgoing::json(&self.exchange, &result.routing_key, &body);
        out.message_id = Some(&result.message_id);
        self.publisher.publish(&out).await
    }
}
