//! The results exchange: `exchange/<user>/bugflow-results`, topic, durable.
//!
//! Each result is persistent JSON with content type `application/json`, routing key
//! `<consumer>.<kind>.<subject>` and a stable `message_id`, so that downstream consumers can
//! bind what they need (`pushes.#`, `bug-triage.bug.*`) and drop duplicates.

use crate::pulse::publish::{Outgoing, PublishError, Publisher};
use crate::result::ResultMessage;

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

    /// Publishes one result and returns once the broker confirmed it. If the first attempt
    /// is not confirmed (the connection broke: the broker may or may not have it), the result
    /// is re-published marked `possible_duplicate`.
    pub async fn send(&self, result: &ResultMessage) -> Result<(), PublishError> {
        match self.send_with(result, false).await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, message_id = %result.message_id, "result not confirmed; re-publishing it marked as a possible duplicate");
                let mut marked = result.clone();
                marked.possible_duplicate = true;
                // Boxed: rare, and a publish with retries is a large future (`dispatch`).
                Box::pin(self.send_with(&marked, true)).await
            }
            other => other,
        }
    }

    async fn send_with(&self, result: &ResultMessage, retry: bool) -> Result<(), PublishError> {
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
        if retry {
            self.publisher.publish(&out).await
        } else {
            self.publisher.publish_once(&out).await
        }
    }
}
