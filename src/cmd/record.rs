//! `bugflow record`: tap exchanges into a JSONL archive.
//!
//! A temporary queue (`queue/<user>/bugflow-record-<env>-<id>`, exclusive, deleted when
//! recording ends) is bound to each `--bind EXCHANGE=KEY[,KEY…]`; every message is written
//! as one archive line, flushed, and only then acked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions};
use lapin::types::FieldTable;
use tokio::io::AsyncWriteExt;

use crate::archive::ArchiveLine;
use crate::config::Config;
use crate::pulse::connect::connect;
use crate::pulse::source::message_from_delivery;
use crate::pulse::topology::{declare_private_queue, exchange_exists};

pub struct RecordOptions {
    /// `(exchange, routing keys)` pairs.
    pub bindings: Vec<(String, Vec<String>)>,
    pub out: PathBuf,
    /// Stop after this many messages.
    pub limit: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Parses `EXCHANGE=KEY[,KEY…]` (no `=`: all keys, `#`).
pub fn parse_binding(s: &str) -> Result<(String, Vec<String>), String> {
    let (exchange, keys) = match s.split_once('=') {
        Some((e, k)) => (e, k.split(',').map(str::to_owned).collect()),
        None => (s, vec!["#".to_owned()]),
    };
    if exchange.is_empty() {
        return Err(format!("{s:?}: expected EXCHANGE=KEY[,KEY…]"));
    }
    Ok((exchange.to_owned(), keys))
}

/// Records until the limit, the duration or Ctrl-C; returns how many messages were written.
pub async fn record(config: Arc<Config>, options: RecordOptions) -> anyhow::Result<u64> {
    let connection = connect(&config, "record").await?;
    let channel = connection.create_channel().await?;
    let queue = declare_private_queue(&channel, &config, "record", FieldTable::default()).await?;
    for (exchange, keys) in &options.bindings {
        if !exchange_exists(&connection, exchange).await? {
            anyhow::bail!("exchange {exchange} does not exist on the broker");
        }
        for key in keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    channel.basic_qos(200, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bugflow-record".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut file = tokio::io::BufWriter::new(
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&options.out)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", options.out.display()))?,
    );
    tracing::info!(%queue, out = %options.out.display(), "recording");
    let deadline = async {
        match options.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut written = 0u64;
    loop {
        if options.limit.is_some_and(|limit| written >= limit) {
            break;
        }
        let delivery = tokio::select! {
            _ = super::shutdown_signal() => break,
            _ = &mut deadline => break,
            next = consumer.next() => match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => anyhow::bail!("recording stopped: {e}"),
                None => break,
            },
        };
        let line = ArchiveLine::from_message(&message_from_delivery(&delivery)).to_line();
        file.write_all(line.as_bytes()).await?;
        file.write_all(b"\n").await?;
        file.flush().await?;
        if !delivery.ack(BasicAckOptions::default()).await? {
            tracing::warn!("ack not sent; the message may be recorded twice");
        }
        written += 1;
    }
    file.flush().await?;
    let _ = connection.close(200, "recording done".into()).await;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::parse_binding;

    #[test]
    fn bindings_parse() {
        assert_eq!(
            parse_binding("exchange/hgpushes/v2=mozilla-central,try").unwrap(),
            (
                "exchange/hgpushes/v2".to_owned(),
                vec!["mozilla-central".to_owned(), "try".to_owned()]
            )
        );
        assert_eq!(parse_binding("x").unwrap().1, vec!["#".to_owned()]);
        assert!(parse_binding("=a").is_err());
    }
}
