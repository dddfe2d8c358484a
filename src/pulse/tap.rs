//! The one way bugflow consumes from the broker: a [`Tap`] on a queue.
//!
//! Every reader of AMQP — the runner (a consumer's durable queue), the dashboard's monitor
//! and `bugflow record` (a private queue bound to exchanges), the bench's bare relay (an
//! existing queue) — opens a tap: connect, declare what it reads, set the prefetch, start
//! consuming. [`Tap::next`] hands out deliveries and waits for lapin's recovery when the
//! stream breaks (bounded by [`RECOVERY_TIMEOUT`]); a tap that cannot go on ends, and its
//! owner opens a new one after the pause [`Reconnect`] says — the one reconnect policy.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::connect::connect;
use super::topology::{declare_consumer, declare_private_queue, exchange_exists};
use crate::config::Config;
use crate::consumer::ConsumerSpec;

/// How long lapin's recovery may take before the tap gives up and its owner reconnects.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest wait between two reconnection attempts.
pub const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(5);

/// What a tap reads.
pub enum TapQueue<'a> {
    /// A consumer's durable queue, declared with its bindings and the shared exchanges.
    Consumer(&'a ConsumerSpec),
    /// A queue that exists already.
    Existing(&'a str),
    /// A queue of this connection only (exclusive, auto-deleted, named
    /// `queue/<user>/bugflow-<purpose>-…`), bound to each exchange with its keys. An
    /// exchange that does not exist is an error that names it.
    Private {
        purpose: &'a str,
        bindings: &'a [(String, Vec<String>)],
        arguments: FieldTable,
    },
}

/// How a tap consumes.
pub struct TapOptions<'a> {
    pub queue: TapQueue<'a>,
    /// The most unacked deliveries at once.
    pub prefetch: u16,
    /// The broker forgets a delivery once sent (the dashboard: a view, not a record).
    pub auto_ack: bool,
    /// Names the connection (`bugflow-<purpose>`) and the consumer tag.
    pub purpose: &'a str,
}

/// An open consumer on one queue.
pub struct Tap {
    pub connection: Connection,
    pub channel: Channel,
    /// The queue read.
    pub queue: String,
    /// Messages ready in the queue when the tap opened.
    pub backlog: u32,
    consumer: lapin::Consumer,
    tag: String,
}

/// What [`Tap::next`] found. (A delivery is moved on at once: boxing it would cost an
/// allocation per message for nothing.)
#[allow(clippy::large_enum_variant)]
pub enum Next {
    Delivery(Delivery),
    /// The broker cancelled the consumer (the queue was deleted): open a new tap.
    Cancelled,
    /// The connection broke and did not recover: open a new tap.
    Lost(anyhow::Error),
}

impl Tap {
    pub async fn open(config: &Config, options: TapOptions<'_>) -> anyhow::Result<Tap> {
        let connection = connect(config, options.purpose).await?;
        let channel = connection.create_channel().await?;
        let (queue, backlog) = match options.queue {
            TapQueue::Consumer(spec) => {
                let backlog = declare_consumer(&connection, &channel, config, spec).await?;
                (spec.queue.clone(), backlog)
            }
            TapQueue::Existing(queue) => (queue.to_owned(), 0),
            TapQueue::Private {
                purpose,
                bindings,
                arguments,
            } => {
                let queue = declare_private_queue(&channel, config, purpose, arguments).await?;
                bind_all(&connection, &channel, &queue, bindings).await?;
                (queue, 0)
            }
        };
        channel
            .basic_qos(options.prefetch, BasicQosOptions { global: false })
            .await?;
        let tag = format!(
            "bugflow-{}-{}",
            options.purpose,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    no_ack: options.auto_ack,
                    exclusive: options.auto_ack,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Tap {
            connection,
            channel,
            queue,
            backlog,
            consumer,
            tag,
        })
    }

    /// The next delivery; waits for lapin's recovery (at most [`RECOVERY_TIMEOUT`]) when
    /// the stream breaks.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.consumer.next().await {
                Some(Ok(delivery)) => return Next::Delivery(delivery),
                None => return Next::Cancelled,
                Some(Err(error)) => {
                    tracing::warn!(queue = %self.queue, %error, "delivery stream failed; waiting for recovery");
                    let recovery = self.channel.wait_for_recovery(error);
                    match tokio::time::timeout(RECOVERY_TIMEOUT, recovery).await {
                        Ok(Ok(())) => {
                            tracing::info!(queue = %self.queue, "connection recovered");
                            metrics::counter!("bugflow_recoveries_total", "queue" => self.queue.clone()).increment(1);
                        }
                        Ok(Err(e)) => return Next::Lost(anyhow::anyhow!("not recoverable: {e}")),
                        Err(_) => {
                            return Next::Lost(anyhow::anyhow!(
                                "recovery took longer than {RECOVERY_TIMEOUT:?}"
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Is the connection up (not recovering)?
    pub fn connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Stops new deliveries; those already received can still be settled.
    pub async fn cancel(&self) {
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }

    /// Closes the channel and the connection (at most 5 s: a broken one may not answer).
    pub async fn close(self, why: &str) {
        let closing = async {
            let _ = self.channel.close(200, why.into()).await;
            let _ = self.connection.close(200, why.into()).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
}

/// Binds `queue` to each exchange with each of its keys.
async fn bind_all(
    connection: &Connection,
    channel: &Channel,
    queue: &str,
    bindings: &[(String, Vec<String>)],
) -> anyhow::Result<()> {
    for (exchange, keys) in bindings {
        if !exchange_exists(connection, exchange).await? {
            anyhow::bail!("exchange {exchange} does not exist on the broker");
        }
        for key in keys {
            crate::pulse::topology::bind(channel, queue, exchange, key).await?;
        }
    }
    Ok(())
}

/// When to try again after a tap ended: 0.5 s, 1 s, 2 s, 4 s, then every 5 s, counted
/// from the first failure after a session that lasted at least 30 s. A broker that comes
/// back is used within seconds; one that stays away is not hammered.
#[derive(Debug, Default)]
pub struct Reconnect {
    failures: u32,
}

impl Reconnect {
    /// The pause before the next attempt, after a session that started at `started`.
    pub fn pause(&mut self, started: Instant) -> Duration {
        if started.elapsed() > Duration::from_secs(30) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(250u64 << self.failures.min(5)).min(MAX_RECONNECT_PAUSE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_then_stay_at_five_seconds() {
        let mut r = Reconnect::default();
        let now = Instant::now();
        let pauses: Vec<u128> = (0..6).map(|_| r.pause(now).as_millis()).collect();
        assert_eq!(pauses, [500, 1000, 2000, 4000, 5000, 5000]);
    }
}
