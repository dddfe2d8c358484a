//! Runs one consumer against the broker: deliveries → [`dispatch`] → ack.
//!
//! * At most `prefetch` messages are in flight, each handled by a task of its own, so that
//!   scoring runs on every worker thread of the runtime while this loop takes deliveries
//!   and the publisher waits for confirms (as one task, everything in flight was polled
//!   on one thread: bug-triage's features and models, ~35 µs a message, capped the
//!   consumer there). Each is settled (ack / requeue / reject) only after its sinks
//!   reported delivery.
//! * Every `ack` returns a `bool`: `false` means lapin did not send it (the channel broke);
//!   the broker will redeliver the message (marked `redelivered`) and we count it.
//! * When the connection breaks, lapin's recovery reconnects and replays the topology; if
//!   that fails the runner reconnects from scratch and re-declares everything (also after a
//!   `basic.cancel`, e.g. Pulse deleted the queue).
//! * On shutdown: stop taking deliveries, finish and settle those in flight, cancel, close.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::dispatch::{Settle, Sinks, Stats, dispatch};
use crate::pipeline::Pipeline;
use crate::pulse::depth;
use crate::pulse::source::message_from_delivery;
use crate::pulse::tap::{Next, RECOVERY_TIMEOUT, Reconnect, Tap, TapOptions, TapQueue};
use crate::telemetry::Counted;

/// How often the queue depth is checked against Pulse's limits.
const DEPTH_INTERVAL: Duration = Duration::from_secs(5);
/// How long an ack, nack or reject may take before it is counted as not sent.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Cheap to clone (shared parts): each delivery is handled by a task of its own.
#[derive(Clone)]
pub struct Runner {
    config: Arc<Config>,
    pipeline: Arc<Pipeline>,
    /// Shared: a runner is cloned for every delivery, and the sinks hold exchange names.
    sinks: Arc<Sinks>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    /// Where retried messages come back from (resolved once, not per message).
    retry_exchange: Arc<str>,
}

enum SessionEnd {
    Shutdown,
    /// The broker cancelled our consumer (queue deleted): re-declare and go on.
    Cancelled,
    /// Nothing can be processed until an operator acts (why): stop taking messages.
    Halted(String),
}

impl Runner {
    pub fn new(
        config: Arc<Config>,
        pipeline: Arc<Pipeline>,
        sinks: Sinks,
        shutdown: CancellationToken,
    ) -> Self {
        crate::telemetry::register_consumer(pipeline.name());
        Runner {
            retry_exchange: config.retry_exchange().into(),
            config,
            pipeline,
            sinks: Arc::new(sinks),
            stats: Arc::new(Stats::default()),
            shutdown,
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until shutdown, reconnecting as often as needed.
    pub async fn run(&self) -> anyhow::Result<()> {
        let name = self.pipeline.name().to_owned();
        let mut reconnect = Reconnect::default();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            match self.session().await {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::Halted(reason)) => {
                    tracing::error!(consumer = %name, %reason, "stopped taking messages until restarted: they stay queued");
                    self.shutdown.cancelled().await;
                    return Ok(());
                }
                Ok(SessionEnd::Cancelled) => {
                    tracing::warn!(consumer = %name, "consumer cancelled by the broker (queue deleted?): re-declaring");
                }
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "consumer session ended; reconnecting");
                }
            }
            metrics::counter!("bugflow_reconnects_total", "consumer" => name.clone()).increment(1);
            let pause = reconnect.pause(started);
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn session(&self) -> anyhow::Result<SessionEnd> {
        let spec = self.pipeline.spec();
        let options = TapOptions {
            queue: TapQueue::Consumer(spec),
            prefetch: spec.prefetch,
            auto_ack: false,
            purpose: &format!("consumer-{}", spec.name),
        };
        let mut tap = Tap::open(&self.config, options).await?;
        tracing::info!(consumer = %spec.name, queue = %spec.queue, backlog = tap.backlog, prefetch = spec.prefetch, "consuming");

        let limit = usize::from(spec.prefetch);
        let mut in_flight = FuturesUnordered::new();
        let mut depth_timer = tokio::time::interval(DEPTH_INTERVAL);
        // lapin's recovery can give up and leave the connection "reconnecting" for good,
        // with deliveries and acks waiting on it: past RECOVERY_TIMEOUT, start afresh.
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        let mut down_since: Option<std::time::Instant> = None;
        let end = loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break Ok(SessionEnd::Shutdown),
                Some(handled) = in_flight.next(), if !in_flight.is_empty() => {
                    match handled {
                        Ok(None) => {}
                        Ok(Some(reason)) => break Ok(SessionEnd::Halted(reason)),
                        // Its delivery was never settled: a new session (a new channel)
                        // makes the broker deliver it again.
                        Err(e) => break Err(anyhow::anyhow!("a message's task failed: {e}")),
                    }
                }
                _ = watchdog.tick() => {
                    if tap.connected() {
                        down_since = None;
                    } else if down_since.get_or_insert_with(std::time::Instant::now).elapsed() > RECOVERY_TIMEOUT {
                        break Err(anyhow::anyhow!("the connection did not recover within {RECOVERY_TIMEOUT:?}"));
                    }
                }
                _ = depth_timer.tick() => {
                    self.check_depth(&tap, in_flight.len()).await;
                }
                next = tap.next(), if in_flight.len() < limit => match next {
                    Next::Delivery(delivery) => {
                        let runner = self.clone();
                        in_flight.push(tokio::spawn(async move { runner.handle(delivery).await }));
                    }
                    Next::Lost(e) => break Err(e),
                    Next::Cancelled => break Ok(SessionEnd::Cancelled),
                },
            }
        };
        // Stop new deliveries first, then finish and settle what is in flight.
        if matches!(end, Ok(SessionEnd::Shutdown | SessionEnd::Halted(_))) {
            tap.cancel().await;
        }
        while in_flight.next().await.is_some() {}
        tap.close("bugflow consumer done").await;
        end
    }

    /// Processes one delivery and settles it; says why if the consumer must halt.
    async fn handle(&self, mut delivery: Delivery) -> Option<String> {
        let mut message = message_from_delivery(&mut delivery);
        message.restore_retried(&self.retry_exchange);
        let span = tracing::info_span!(
            "message",
            consumer = %self.pipeline.name(),
            exchange = %message.exchange,
            routing_key = %message.routing_key,
            redelivered = message.redelivered,
        );
        async {
            let settle = dispatch(&self.pipeline, &self.sinks, &self.stats, &message).await;
            let halted = match &settle {
                Settle::Halt(reason) => Some(reason.clone()),
                _ => None,
            };
            self.settle(&delivery, settle).await;
            halted
        }
        .instrument(span)
        .await
    }

    async fn settle(&self, delivery: &Delivery, settle: Settle) {
        let consumer = self.pipeline.name().to_owned();
        let sending = async {
            match &settle {
                Settle::Ack(_) => delivery.ack(BasicAckOptions::default()).await,
                Settle::Requeue(_) | Settle::Halt(_) => {
                    delivery
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await
                }
                Settle::Reject(_) => delivery.reject(BasicRejectOptions { requeue: false }).await,
            }
        };
        // On a channel stuck in recovery an ack could wait forever; unsent, the broker
        // redelivers the message when the channel is gone.
        let sent = match tokio::time::timeout(SETTLE_TIMEOUT, sending).await {
            Ok(sent) => sent,
            Err(_) => Ok(false),
        };
        match sent {
            Ok(true) => {
                if matches!(settle, Settle::Ack(_)) {
                    self.stats.count(&consumer, Counted::Acked);
                }
            }
            Ok(false) => {
                // The channel this delivery came on is gone: the broker requeued it and will
                // deliver it again, marked redelivered.
                self.stats.count(&consumer, Counted::AckNotSent);
                tracing::warn!("settle not sent (channel closed): the broker will redeliver");
            }
            Err(error) => {
                self.stats.count(&consumer, Counted::AckNotSent);
                tracing::warn!(%error, "settle failed: the broker will redeliver");
            }
        }
    }

    /// Pulse deletes a queue over 8,000 messages (ready + unacked): publish the depth and
    /// warn past the configured threshold.
    async fn check_depth(&self, tap: &Tap, in_flight: usize) {
        let spec = self.pipeline.spec();
        let Some(ready) = depth::ready(&tap.connection, &tap.queue).await else {
            return;
        };
        let depth = u64::from(ready) + in_flight as u64;
        metrics::gauge!("bugflow_queue_messages", "consumer" => spec.name.clone())
            .set(depth as f64);
        if depth > u64::from(self.config.queue_warn_messages) {
            self.stats.count(&spec.name, Counted::QueueWarning);
            tracing::warn!(
                consumer = %spec.name,
                depth,
                threshold = self.config.queue_warn_messages,
                "queue is growing: Pulse deletes queues over 8,000 messages"
            );
        }
        // The dead-letter queue too: nobody consumes it, so only an operator empties it.
        let dead_letters = self.config.dead_letter_queue();
        if let Some(dead) = depth::ready(&tap.connection, &dead_letters).await {
            metrics::gauge!("bugflow_dead_letter_queue_messages").set(f64::from(dead));
            if dead > self.config.queue_warn_messages {
                self.stats.count(&spec.name, Counted::QueueWarning);
                tracing::warn!(
                    queue = %dead_letters,
                    depth = dead,
                    threshold = self.config.queue_warn_messages,
                    "the dead-letter queue is growing: Pulse deletes it past 8,000 messages \
                     (the store keeps each dead letter: bugflow dead-letters list)"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::ConsumerSpec;
    use crate::models::registry::ModelSet;

    /// Each message in flight is a task holding [`Runner::handle`]'s future: its size is
    /// copied when the task is spawned and when it ends, and held by each of `prefetch`
    /// messages. It was 33 KB in the release build (8.4 KB in this test build; `dispatch`'s
    /// 16 KB held twice there): the paths few messages take
    /// are boxed (`dispatch`), and no future is kept beside the one that wraps it.
    #[test]
    fn a_message_in_flight_is_a_small_future() {
        let config = Config::default();
        let spec = ConsumerSpec::builtin("bug-triage", &config).unwrap();
        let runner = Runner::new(
            Arc::new(config),
            Arc::new(Pipeline::new(spec, ModelSet::empty())),
            Sinks::default(),
            CancellationToken::new(),
        );
        let delivery = Delivery::mock(
            1,
            "exchange/bugzilla/webhooks".into(),
            "bug.modify".into(),
            false,
            b"{}".to_vec(),
        );
        let handled = runner.handle(delivery);
        let bytes = std::mem::size_of_val(&handled);
        eprintln!("a message's future: {bytes} bytes");
        assert!(bytes <= 8 * 1024, "a message's future is {bytes} bytes");
    }
}
