//! Opening a connection to the broker.

use std::str::FromStr;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::Config;
use crate::secret::redact_url;

/// How long one connection attempt may take before we call the broker unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection named `bugflow-<purpose>` (the name shows in the management UI), with
/// lapin's automatic recovery on: after a broken connection lapin reconnects and replays
/// the channels, QoS, queues, bindings and consumers it knows of.
pub async fn connect(config: &Config, purpose: &str) -> anyhow::Result<Connection> {
    let url = config.amqp.url.expose();
    let mut uri = AMQPUri::from_str(url)
        .map_err(|e| anyhow::anyhow!("bad AMQP URL {}: {e}", redact_url(url)))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(config.amqp.heartbeat);
    }
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(config.amqp.frame_max);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(CONNECT_TIMEOUT.as_millis() as u64);
    }
    let properties = ConnectionProperties::default()
        .enable_auto_recover()
        .with_connection_name(format!("bugflow-{purpose}").into());
    // With recovery on, lapin retries even the first connection; bound the whole attempt so
    // that a caller (the webhook, a CLI command) can answer "broker down" in time.
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "cannot connect to {}: {e}",
            redact_url(url)
        )),
        Err(_) => Err(anyhow::anyhow!(
            "cannot connect to {}: no answer within {}s",
            redact_url(url),
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}
