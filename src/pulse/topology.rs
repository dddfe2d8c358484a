//! Declaring queues, exchanges and bindings — idempotently, so every (re)start may do it.
//!
//! Rules (README.md, "Delivery rules"):
//! * a consumer's queue is durable, non-exclusive, never auto-deleted, named
//!   `queue/<user>/bugflow-<consumer>-<env>`, with the dead-letter exchange as its
//!   `x-dead-letter-exchange`, so even a broker-side reject is parked, not dropped;
//! * exchanges we own (`exchange/<user>/…`: results, dead letters, bug events) are declared
//!   topic + durable;
//! * exchanges we do not own (`exchange/hgpushes/v2`) are declared passively — unless
//!   `amqp.declare_exchanges` is set for a local or test broker. A passive declare of a
//!   missing exchange closes the channel, so each check gets a channel of its own.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::Config;
use crate::consumer::ConsumerSpec;

/// Declares a topic exchange that bugflow owns.
pub async fn declare_own_exchange(channel: &Channel, name: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares the dead-letter exchange and its queue (bound with `#`), and the results exchange.
pub async fn declare_shared(channel: &Channel, config: &Config) -> anyhow::Result<()> {
    let dlx = config.dead_letter_exchange();
    declare_own_exchange(channel, &dlx).await?;
    declare_own_exchange(channel, &config.results_exchange()).await?;
    declare_own_exchange(channel, &config.bugzilla_exchange()).await?;
    declare_own_exchange(channel, &config.requests_exchange()).await?;
    declare_own_exchange(channel, &config.retry_exchange()).await?;
    declare_bound_queue(channel, &config.dead_letter_queue(), &dlx, "#").await?;
    Ok(())
}

/// Binds `queue` to `exchange` with `key`.
pub async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares a durable queue (no arguments) and binds it to `exchange` with `key`.
pub async fn declare_bound_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    bind(channel, queue, exchange, key).await
}

/// Declares a queue that lives as long as this connection (exclusive, auto-deleted), named
/// `queue/<user>/bugflow-<purpose>-<env>-<random>` as Pulse requires (server-named queues
/// are refused there). For taps: `bugflow record`, the dashboard.
pub async fn declare_private_queue(
    channel: &Channel,
    config: &Config,
    purpose: &str,
    arguments: FieldTable,
) -> lapin::Result<String> {
    let queue = format!(
        "queue/{}/bugflow-{purpose}-{}-{}",
        config.user,
        config.env,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    Ok(queue)
}

/// The arguments of a consumer queue. Keep them stable: RabbitMQ refuses (406) a
/// re-declare with different arguments.
pub fn consumer_queue_arguments(config: &Config, spec: &ConsumerSpec) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(config.dead_letter_exchange())),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(spec.name.as_str())),
    );
    args
}

/// Declares everything one consumer needs and binds its queue. Returns the number of
/// messages ready in the queue (its backlog).
pub async fn declare_consumer(
    connection: &Connection,
    channel: &Channel,
    config: &Config,
    spec: &ConsumerSpec,
) -> anyhow::Result<u32> {
    declare_shared(channel, config).await?;
    let queue = channel
        .queue_declare(
            spec.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            consumer_queue_arguments(config, spec),
        )
        .await
        .map_err(|e| anyhow::anyhow!("declaring queue {}: {e}", spec.queue))?;
    for binding in &spec.bindings {
        let owned = binding
            .exchange
            .starts_with(&format!("exchange/{}/", config.user));
        if owned || config.amqp.declare_exchanges {
            declare_own_exchange(channel, &binding.exchange).await?;
        } else if !exchange_exists(connection, &binding.exchange).await? {
            if binding.optional {
                tracing::warn!(
                    consumer = %spec.name,
                    exchange = %binding.exchange,
                    "optional exchange does not exist: not bound"
                );
                continue;
            }
            anyhow::bail!(
                "consumer {}: exchange {} does not exist on the broker (mark the binding \
                 `optional = true` if it may be missing)",
                spec.name,
                binding.exchange
            );
        }
        for key in &binding.keys {
            bind(channel, &spec.queue, &binding.exchange, key).await?;
        }
    }
    declare_retry_queue(channel, config, spec).await?;
    Ok(queue.message_count())
}

/// The consumer's retry queue, `<its queue>-retry`: a message parked there expires after
/// its delay and the broker dead-letters it back to the consumer's queue (see
/// [`crate::sinks::retry`]). Never consumed from.
pub async fn declare_retry_queue(
    channel: &Channel,
    config: &Config,
    spec: &ConsumerSpec,
) -> anyhow::Result<()> {
    use crate::sinks::retry::{back_key, wait_key};
    let exchange = config.retry_exchange();
    let queue = retry_queue(spec);
    crate::pulse::short::checked(&queue, "retry queue name")?;
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from(exchange.as_str())),
    );
    args.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(back_key(&spec.name))),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(|e| anyhow::anyhow!("declaring queue {queue}: {e}"))?;
    for (queue, key) in [
        (queue.as_str(), wait_key(&spec.name)),
        (spec.queue.as_str(), back_key(&spec.name)),
    ] {
        bind(channel, queue, &exchange, &key).await?;
    }
    Ok(())
}

/// The name of a consumer's retry queue.
pub fn retry_queue(spec: &ConsumerSpec) -> String {
    format!("{}-retry", spec.queue)
}

/// The broker's 404 NOT_FOUND (a passive declare of something missing).
pub fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

/// Checks for an exchange with a passive declare, on a channel of its own.
pub async fn exchange_exists(connection: &Connection, name: &str) -> anyhow::Result<bool> {
    let probe = connection.create_channel().await?;
    let found = probe
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match found {
        Ok(()) => {
            let _ = probe.close(200, "done".into()).await;
            Ok(true)
        }
        // 404 NOT_FOUND closes the probe channel; the connection lives on.
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
