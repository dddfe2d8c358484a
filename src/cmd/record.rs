//! `bugflow record`: tap exchanges into a JSONL archive.
//!
//! A temporary queue (`queue/<user>/bugflow-record-<env>-<id>`, exclusive, deleted when
//! recording ends) is bound to each `--bind EXCHANGE=KEY[,KEY…]`; every message is written
//! as one archive line, flushed, and only then acked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;

use crate::config::Config;
use crate::message::{Enrichment, Message};
use crate::pipeline::Pipeline;
use crate::pulse::source::message_from_delivery;
use crate::pulse::tap::{Next, Tap, TapOptions, TapQueue};
use crate::sinks::archive::{ArchiveSink, Kept};

pub struct RecordOptions {
    /// `(exchange, routing keys)` pairs.
    pub bindings: Vec<(String, Vec<String>)>,
    pub out: PathBuf,
    /// Stop after this many messages.
    pub limit: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Store each message's enrichment (fetched by the consumer whose bindings match it).
    pub enrich: bool,
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
    let max = crate::pulse::short::MAX;
    if let Some(name) = std::iter::once(exchange)
        .chain(keys.iter().map(String::as_str))
        .find(|n| n.len() > max)
    {
        return Err(format!(
            "{} bytes in {name:.40}…; AMQP allows {max}",
            name.len()
        ));
    }
    Ok((exchange.to_owned(), keys))
}

/// Records until the limit, the duration or Ctrl-C; returns how many messages were written.
pub async fn record(config: Arc<Config>, options: RecordOptions) -> anyhow::Result<u64> {
    let tap_options = TapOptions {
        queue: TapQueue::Private {
            purpose: "record",
            bindings: &options.bindings,
            arguments: FieldTable::default(),
        },
        prefetch: 200,
        auto_ack: false,
        purpose: "record",
    };
    let enrichers = if options.enrich {
        super::replay::configured_pipelines(config.clone())?
    } else {
        Vec::new()
    };
    let mut tap = Tap::open(&config, tap_options).await?;
    let archive = ArchiveSink::open(&options.out)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", options.out.display()))?;
    tracing::info!(queue = %tap.queue, out = %options.out.display(), "recording");
    let deadline = async {
        match options.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut written = 0u64;
    while options.limit.is_none_or(|limit| written < limit) {
        let mut delivery = tokio::select! {
            _ = super::shutdown_signal() => break,
            _ = &mut deadline => break,
            next = tap.next() => match next {
                Next::Delivery(d) => d,
                Next::Lost(e) => anyhow::bail!("recording stopped: {e}"),
                Next::Cancelled => break,
            },
        };
        let mut message = message_from_delivery(&mut delivery);
        if options.enrich {
            message.enrichment = enrich(&enrichers, &message).await.map(Arc::new);
        }
        let kept = archive.keep(&message).await?;
        if !delivery.ack(BasicAckOptions::default()).await? {
            tracing::warn!(
                "ack not sent; the message will come again (marked redelivered, it is not recorded twice)"
            );
        }
        if kept == Kept::Written {
            written += 1;
        }
    }
    tap.close("recording done").await;
    Ok(written)
}

/// What the first consumer that binds `message` fetches to score it; none (with a warning:
/// a replay will fetch it, or skip it `--offline`) when nothing binds it or the fetch
/// fails.
async fn enrich(pipelines: &[Pipeline], message: &Message) -> Option<Enrichment> {
    let pipeline = pipelines
        .iter()
        .find(|p| p.spec().accepts(&message.exchange, &message.routing_key))?;
    match pipeline.enrichment(message).await {
        Ok(e) if e.is_empty() => None,
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!(consumer = pipeline.name(), error = %e, "not enriched; recorded without");
            None
        }
    }
}

/// `bugflow record`: records, then says how many messages went where.
pub async fn command(config: Arc<Config>, options: RecordOptions) -> anyhow::Result<()> {
    let out = options.out.clone();
    let written = record(config, options).await?;
    eprintln!("recorded {written} messages to {}", out.display());
    Ok(())
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
