//! `bugflow dead-letters list | replay`: the dead letters the store keeps.
//!
//! `list` prints the newest, with their reasons. `replay` publishes each one's original body
//! and headers back to the exchange and routing key it first came through (once you fixed
//! what made it fail), with a publisher confirm, and forgets it once confirmed. The copy in
//! the dead-letter queue stays there for whoever reads that queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::pulse::publish::{Outgoing, Publisher};
use crate::pulse::source::json_to_headers;
use crate::store::{DeadLetter, Store};

/// What to replay.
pub struct Selection<'a> {
    /// One dead letter by id; else every one (of `consumer`, if given), up to `limit`.
    pub id: Option<&'a str>,
    pub consumer: Option<&'a str>,
    pub limit: usize,
}

async fn selected(store: &Store, which: &Selection<'_>) -> anyhow::Result<Vec<DeadLetter>> {
    match which.id {
        Some(id) => match store.dead_letter(id).await? {
            Some(letter) => Ok(vec![letter]),
            None => anyhow::bail!("no dead letter {id} in the store (bugflow dead-letters list)"),
        },
        None => store.dead_letters(which.consumer, which.limit).await,
    }
}

/// Prints the newest dead letters.
pub async fn list(store: &Store, consumer: Option<&str>, limit: usize) -> anyhow::Result<()> {
    let letters = store.dead_letters(consumer, limit).await?;
    let total = store.dead_letter_count().await?;
    println!(
        "{:<32}  {:<25}  {:<12}  {:<8}  reason",
        "id", "at", "consumer", "stage"
    );
    for d in &letters {
        let reason: String = d.reason.chars().take(100).collect();
        println!(
            "{:<32}  {:<25}  {:<12}  {:<8}  {reason}",
            d.id,
            d.at.get(..25).unwrap_or(&d.at),
            d.consumer,
            d.stage
        );
    }
    println!("{} shown, {total} kept", letters.len());
    Ok(())
}

/// Publishes the selected dead letters to where they first came from; returns how many.
pub async fn replay(
    config: Arc<Config>,
    store: &Store,
    which: &Selection<'_>,
) -> anyhow::Result<usize> {
    let publisher = Publisher::new(config);
    let mut sent = 0;
    for d in selected(store, which).await? {
        let Some(body) = &d.body else {
            eprintln!(
                "{}: its body was longer than the store keeps: not replayed",
                d.id
            );
            continue;
        };
        if d.exchange.starts_with('(') {
            eprintln!(
                "{}: it came from {} (not an exchange): not replayed",
                d.id, d.exchange
            );
            continue;
        }
        let mut headers: BTreeMap<String, Value> =
            serde_json::from_str(&d.headers).unwrap_or_default();
        // A fresh start: no retry count, no earlier dead-lettering.
        headers.retain(|k, _| !k.starts_with("x-bugflow-") && k != "x-death");
        let out = Outgoing {
            exchange: &d.exchange,
            routing_key: &d.routing_key,
            body,
            message_id: None,
            headers: json_to_headers(&headers)?,
            mandatory: true,
        };
        match publisher.publish(&out).await {
            Ok(()) => {
                store.remove_dead_letter(&d.id).await?;
                sent += 1;
            }
            Err(e) => eprintln!("{}: not replayed: {e}", d.id),
        }
    }
    publisher.close().await;
    println!("{sent} dead letter(s) replayed");
    Ok(sent)
}
