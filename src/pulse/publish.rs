//! Publishing with publisher confirms on a channel that heals itself.
//!
//! A message counts as published only when the broker confirms it (`basic.ack` on a confirm
//! channel): only then may the input that produced it be acked. [`Publisher::publish`]
//! retries transient failures with backon (exponential, jittered); a channel that broke is
//! replaced on the next attempt, so a broker restart costs retries, not messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::pulse::connect::connect;
use crate::pulse::short::checked;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No channel could be had (broker down, connection refused): retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered `basic.nack` (an internal error of the queue): retry.
    #[error("the broker refused (nack) the message")]
    Nacked,
    /// A name is too long for AMQP: this message can never be published as it is.
    #[error(transparent)]
    TooLong(#[from] super::short::TooLong),
    /// `mandatory` was set and no queue is bound for this routing key.
    #[error("no queue is bound to {exchange} for routing key {routing_key}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl PublishError {
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            PublishError::Unroutable { .. } | PublishError::TooLong(_)
        )
    }
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub message_id: Option<&'a str>,
    pub headers: FieldTable,
    /// Ask the broker to return the message if no queue would get it.
    pub mandatory: bool,
}

impl<'a> Outgoing<'a> {
    pub fn json(exchange: &'a str, routing_key: &'a str, body: &'a [u8]) -> Self {
        Outgoing {
            exchange,
            routing_key,
            body,
            message_id: None,
            headers: FieldTable::default(),
            mandatory: false,
        }
    }
}

struct Link {
    connection: Connection,
    channel: Channel,
    /// Since when lapin has been recovering this link (none while connected).
    recovering_since: Option<Instant>,
}

/// How long lapin may try to recover a link before it is replaced by a new connection.
const RECOVERY_GRACE: Duration = Duration::from_secs(15);
/// How long a publish may wait for the broker's confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A confirm-mode channel on a connection of its own, shared by every consumer.
#[derive(Clone)]
pub struct Publisher {
    config: Arc<Config>,
    link: Arc<Mutex<Option<Link>>>,
    attempts: usize,
}

impl Publisher {
    /// A publisher that connects on first use.
    pub fn new(config: Arc<Config>) -> Self {
        let attempts = config.amqp.publish_attempts.max(1);
        Publisher {
            config,
            link: Arc::new(Mutex::new(None)),
            attempts,
        }
    }

    /// A publisher that has already connected once (so that start-up fails fast on a bad URL).
    pub async fn connect(config: Arc<Config>) -> anyhow::Result<Self> {
        let publisher = Self::new(config);
        publisher
            .channel()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(publisher)
    }

    /// With fewer attempts (the webhook answers BMO within its timeout and lets BMO retry).
    pub fn with_attempts(mut self, attempts: usize) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// A usable channel: the current one, or a new connection if it broke for good.
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = loop {
            let mut link = self.link.lock().await;
            let Some(l) = link.as_mut() else {
                break link;
            };
            let status = l.channel.status();
            if status.connected() {
                l.recovering_since = None;
                return Ok(l.channel.clone());
            }
            if !(status.reconnecting() || l.connection.status().reconnecting()) {
                break link;
            }
            // lapin is recovering it: wait for it (a broker restart takes seconds; failing
            // fast would send the message round the queue to the dead-letter queue) — unless
            // that has gone on too long (a recovery that gave up stays "reconnecting").
            let since = *l.recovering_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= RECOVERY_GRACE {
                tracing::warn!("the publisher's connection did not recover: opening a new one");
                break link;
            }
            drop(link);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(old) = link.take() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                old.connection.close(200, "replaced".into()),
            )
            .await;
        }
        let connection = connect(&self.config, "publisher")
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        *link = Some(Link {
            connection,
            channel: channel.clone(),
            recovering_since: None,
        });
        Ok(channel)
    }

    /// Publishes once and waits for the broker's confirm.
    pub async fn publish_once(&self, out: &Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_once_expiring(out, None).await
    }

    /// [`Publisher::publish_once`], with an AMQP `expiration` (milliseconds) when given.
    async fn publish_once_expiring(
        &self,
        out: &Outgoing<'_>,
        expiration: Option<&str>,
    ) -> Result<(), PublishError> {
        let exchange = checked(out.exchange, "exchange name")?;
        let routing_key = checked(out.routing_key, "routing key")?;
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(out.headers.clone());
        if let Some(id) = out.message_id {
            properties = properties.with_message_id(checked(id, "message id")?);
        }
        if let Some(ms) = expiration {
            properties = properties.with_expiration(checked(ms, "expiration")?);
        }
        let channel = self.channel().await?;
        let confirmed = async {
            channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: out.mandatory,
                        ..Default::default()
                    },
                    out.body,
                    properties,
                )
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))
        };
        let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, confirmed)
            .await
            .map_err(|_| {
                PublishError::Unavailable(format!("no confirm within {CONFIRM_TIMEOUT:?}"))
            })??;
        if confirm.is_nack() {
            return Err(PublishError::Nacked);
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Unroutable {
                exchange: out.exchange.into(),
                routing_key: out.routing_key.into(),
            });
        }
        Ok(())
    }

    /// Publishes, retrying transient failures with exponential, jittered back-off.
    pub async fn publish(&self, out: &Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_expiring(out, None).await
    }

    /// [`Publisher::publish`] with an AMQP `expiration` in milliseconds (a retry's delay).
    pub async fn publish_expiring(
        &self,
        out: &Outgoing<'_>,
        expiration: Option<&str>,
    ) -> Result<(), PublishError> {
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(self.attempts.saturating_sub(1))
            .with_jitter();
        (|| self.publish_once_expiring(out, expiration))
            .retry(policy)
            .when(PublishError::is_transient)
            .notify(|e, after| {
                metrics::counter!("bugflow_publish_retries_total").increment(1);
                tracing::warn!(error = %e, exchange = out.exchange, retry_in = ?after, "publish failed; retrying");
            })
            .await
    }

    /// Closes the connection (at shutdown, after the last confirm).
    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            let _ = link
                .connection
                .close(200, "bugflow shutting down".into())
                .await;
        }
    }
}
