//! The monitor's tap on the results exchange, and its queue-depth polls (the consumers' and
//! the dead-letter queue's). Dead letters themselves are read from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;

use super::Monitor;
use crate::config::Config;
use crate::consumer::ConsumerSpec;
use crate::pulse::depth;
use crate::pulse::tap::{Next, Reconnect, Tap, TapOptions, TapQueue};
use crate::result::ResultMessage;

/// How often the queue depths are read.
const POLL: Duration = Duration::from_secs(5);
/// A dashboard that stops reading must not grow a queue: the broker keeps the newest.
const MAX_QUEUED: i32 = 1000;

impl Monitor {
    /// Follows the results exchange until `shutdown`, reconnecting after a
    /// broken connection; every few seconds also reads the depth of each consumer's queue.
    pub async fn follow(
        self: Arc<Self>,
        config: Arc<Config>,
        consumers: Vec<ConsumerSpec>,
        shutdown: CancellationToken,
    ) {
        let mut reconnect = Reconnect::default();
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            if let Err(e) = self.follow_once(&config, &consumers, &shutdown).await {
                tracing::warn!(error = %e, "dashboard: lost the broker");
            }
            self.view().connected = false;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(reconnect.pause(started)) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        config: &Config,
        consumers: &[ConsumerSpec],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Not the dead-letter exchange: a tap there would take dead letters that the
        // durable queue must (they are read from the store instead).
        let bindings = [(config.results_exchange(), vec!["#".to_owned()])];
        let arguments = FieldTable::from(BTreeMap::from([(
            "x-max-length".into(),
            AMQPValue::LongInt(MAX_QUEUED),
        )]));
        let options = TapOptions {
            queue: TapQueue::Private {
                purpose: "dashboard",
                bindings: &bindings,
                arguments,
            },
            prefetch: 0,
            auto_ack: true,
            purpose: "dashboard",
        };
        let mut tap = Tap::open(config, options).await?;
        self.view().connected = true;
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tap.close("shutdown").await;
                    return Ok(());
                }
                _ = poll.tick() => self.poll_depths(&tap, config, consumers).await,
                next = tap.next() => match next {
                    Next::Delivery(delivery) => self.observe(&delivery, config),
                    Next::Cancelled => anyhow::bail!("the dashboard's consumer was cancelled"),
                    Next::Lost(e) => return Err(e),
                },
            }
        }
    }

    /// A result, folded into the view.
    fn observe(&self, delivery: &Delivery, config: &Config) {
        match serde_json::from_slice::<ResultMessage>(&delivery.data) {
            Ok(result) => self.observe_result(&result, &config.bugzilla.url),
            Err(e) => tracing::debug!(error = %e, "dashboard: not a bugflow result"),
        }
    }

    /// Reads each consumer's queue depth, and the dead-letter queue's.
    async fn poll_depths(&self, tap: &Tap, config: &Config, consumers: &[ConsumerSpec]) {
        let mut depths = BTreeMap::new();
        for c in consumers {
            if let Some(n) = depth::ready(&tap.connection, &c.queue).await {
                depths.insert(c.name.clone(), n);
            }
        }
        let dead = depth::ready(&tap.connection, &config.dead_letter_queue()).await;
        let mut view = self.view();
        view.dead_letter_queue = dead;
        view.depths = depths;
    }
}
