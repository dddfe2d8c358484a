//! How many messages wait in a queue: the one depth probe.
//!
//! A passive declare answers with the number of ready messages. It runs on a channel of
//! its own, because a passive declare of a missing queue closes the channel it was asked
//! on. Pulse deletes queues over 8,000 messages, so the runner and the dashboard watch it.

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// The messages ready in `queue`, or `None` when it is missing or the broker cannot say.
pub async fn ready(connection: &Connection, queue: &str) -> Option<u32> {
    let channel = connection.create_channel().await.ok()?;
    let found = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = channel.close(200, "depth probe".into()).await;
    found
}
