//! What the dashboard shows: the results and dead-letter streams, watched.
//!
//! The dashboard is one more consumer of bugflow's own output. [`Monitor::follow`] binds a
//! private queue (exclusive, auto-deleted, named `queue/<user>/bugflow-dashboard-…` as
//! Pulse requires) to the results exchange and the dead-letter exchange, and folds every
//! message into a small in-memory view: throughput per consumer, the latest decisions, the
//! landings' risk per component, dead letters. The web process sees what every worker
//! process does without a store write on the workers' hot path. It is a view, not a
//! record: it starts empty, and messages are auto-acknowledged (losing one loses a dot on
//! a chart, never a result).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::consumer::ConsumerSpec;
use crate::models::ModelKind;
use crate::models::registry::ModelSet;
use crate::pulse::connect::connect;
use crate::pulse::topology::declare_private_queue;
use crate::sinks::dead_letter::{CONSUMER_HEADER, REASON_HEADER};

/// Decisions kept for the "recent" table.
const RECENT: usize = 50;
/// The window of the per-consumer rate.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Monitor {
    view: Mutex<View>,
}

#[derive(Default)]
struct View {
    consumers: BTreeMap<String, Throughput>,
    recent: VecDeque<Value>,
    components: BTreeMap<String, ComponentRisk>,
    dead_letters: u64,
    recent_dead_letters: VecDeque<Value>,
    /// Queue depths (ready + unacked) polled from the broker, by consumer.
    depths: BTreeMap<String, u32>,
    dead_letter_queue: Option<u32>,
    connected: bool,
}

#[derive(Default)]
struct Throughput {
    results: u64,
    duplicates: u64,
    window: VecDeque<Instant>,
    last: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct ComponentRisk {
    commits: u64,
    sum: f64,
    max: f64,
    /// Commits scored 0.5 or more.
    risky: u64,
}

impl Monitor {
    pub fn new() -> Arc<Monitor> {
        Arc::new(Monitor::default())
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one result (the JSON published to the results exchange) into the view.
    pub fn observe_result(&self, result: &Value, bugzilla_url: &str) {
        let consumer = result["consumer"].as_str().unwrap_or("?").to_owned();
        let now = Instant::now();
        let mut view = self.view();
        let t = view.consumers.entry(consumer.clone()).or_default();
        t.results += 1;
        if result["possible_duplicate"].as_bool() == Some(true) {
            t.duplicates += 1;
        }
        t.window.push_back(now);
        while t.window.front().is_some_and(|at| now - *at > WINDOW) {
            t.window.pop_front();
        }
        t.last = Some(Utc::now());
        if result["kind"] == "landing" {
            for commit in result["data"]["commits"].as_array().into_iter().flatten() {
                let Some(risk) = commit["risk"].as_f64() else {
                    continue;
                };
                for component in commit["components"].as_array().into_iter().flatten() {
                    let c = view
                        .components
                        .entry(component.as_str().unwrap_or("?").to_owned())
                        .or_default();
                    c.commits += 1;
                    c.sum += risk;
                    c.max = c.max.max(risk);
                    c.risky += u64::from(risk >= 0.5);
                }
            }
        }
        view.recent
            .push_front(decision(&consumer, result, bugzilla_url));
        view.recent.truncate(RECENT);
    }

    /// Counts one dead letter, with the reason bugflow put in its headers.
    pub fn observe_dead_letter(
        &self,
        routing_key: &str,
        reason: Option<&str>,
        consumer: Option<&str>,
    ) {
        let mut view = self.view();
        view.dead_letters += 1;
        view.recent_dead_letters.push_front(json!({
            "at": Utc::now(),
            "routing_key": routing_key,
            "consumer": consumer,
            "reason": reason.unwrap_or("(rejected without a reason header)"),
        }));
        view.recent_dead_letters.truncate(10);
    }

    /// The dashboard's data (`GET /api/dashboard`).
    pub fn snapshot(&self, models: &ModelSet) -> Value {
        let now = Instant::now();
        let view = self.view();
        let consumers: Vec<Value> = view
            .consumers
            .iter()
            .map(|(name, t)| {
                let recent = t.window.iter().filter(|at| now - **at <= WINDOW).count();
                json!({
                    "consumer": name,
                    "results": t.results,
                    "possible_duplicates": t.duplicates,
                    "per_minute": recent,
                    "last": t.last,
                    "queue": view.depths.get(name),
                })
            })
            .collect();
        let mut components: Vec<Value> = view
            .components
            .iter()
            .map(|(name, c)| {
                json!({
                    "component": name,
                    "commits": c.commits,
                    "mean_risk": round(c.sum / c.commits.max(1) as f64),
                    "max_risk": round(c.max),
                    "risky": c.risky,
                })
            })
            .collect();
        components.sort_by(|a, b| {
            b["mean_risk"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&a["mean_risk"].as_f64().unwrap_or(0.0))
        });
        let model_list: Vec<Value> = ModelKind::ALL
            .iter()
            .filter_map(|&kind| {
                let bundle = models.get(kind)?;
                let m = &bundle.manifest;
                Some(json!({
                    "model": kind.name(),
                    "version": m.version,
                    "created_at": m.created_at,
                    "macro_f1": round(m.macro_f1()),
                    "accuracy": round(m.metrics.accuracy),
                    "auc": m.metrics.roc_auc.map(round),
                    "test_samples": m.metrics.samples,
                    "forced": m.forced,
                }))
            })
            .collect();
        json!({
            "bugflow_version": env!("CARGO_PKG_VERSION"),
            "broker_connected": view.connected,
            "total_results": view.consumers.values().map(|t| t.results).sum::<u64>(),
            "consumers": consumers,
            "recent": view.recent,
            "components": components,
            "models": model_list,
            "dead_letters": {
                "seen": view.dead_letters,
                "queued": view.dead_letter_queue,
                "recent": view.recent_dead_letters,
            },
        })
    }

    /// Follows the results and dead-letter exchanges until `shutdown`, reconnecting after a
    /// broken connection; every few seconds also reads the depth of each consumer's queue.
    pub async fn follow(
        self: Arc<Self>,
        config: Arc<Config>,
        consumers: Vec<ConsumerSpec>,
        shutdown: CancellationToken,
    ) {
        let mut pause = Duration::from_secs(1);
        while !shutdown.is_cancelled() {
            if let Err(e) = self.follow_once(&config, &consumers, &shutdown).await {
                tracing::warn!(error = %e, retry_in = ?pause, "dashboard: lost the broker");
            }
            let was_connected = std::mem::replace(&mut self.view().connected, false);
            if was_connected {
                pause = Duration::from_secs(1);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    async fn follow_once(
        &self,
        config: &Config,
        consumers: &[ConsumerSpec],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let connection = connect(config, "dashboard").await?;
        let channel = connection.create_channel().await?;
        // A dashboard that stops reading must not grow a queue: keep the newest 1,000.
        let arguments = FieldTable::from(BTreeMap::from([(
            "x-max-length".into(),
            lapin::types::AMQPValue::LongInt(1000),
        )]));
        let queue = declare_private_queue(&channel, config, "dashboard", arguments).await?;
        let results = config.results_exchange();
        let dead = config.dead_letter_exchange();
        for exchange in [&results, &dead] {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                "bugflow-dashboard".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.view().connected = true;
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = connection.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                _ = poll.tick() => self.poll_depths(&connection, config, consumers).await,
                next = deliveries.next() => {
                    let Some(delivery) = next else {
                        anyhow::bail!("the dashboard's consumer was cancelled");
                    };
                    let delivery = delivery?;
                    let exchange = delivery.exchange.as_str();
                    if exchange == dead {
                        let headers = delivery
                            .properties
                            .headers()
                            .as_ref()
                            .map(crate::pulse::source::headers_to_json)
                            .unwrap_or_default();
                        self.observe_dead_letter(
                            delivery.routing_key.as_str(),
                            headers.get(REASON_HEADER).and_then(Value::as_str),
                            headers.get(CONSUMER_HEADER).and_then(Value::as_str),
                        );
                    } else if let Ok(result) = serde_json::from_slice::<Value>(&delivery.data) {
                        self.observe_result(&result, &config.bugzilla.url);
                    }
                }
            }
        }
    }

    /// Reads each consumer's queue depth with a passive declare (on a throwaway channel: a
    /// missing queue closes the channel it was asked on).
    async fn poll_depths(
        &self,
        connection: &lapin::Connection,
        config: &Config,
        consumers: &[ConsumerSpec],
    ) {
        let mut depths = BTreeMap::new();
        let mut names: Vec<(String, String)> = consumers
            .iter()
            .map(|c| (c.name.clone(), c.queue.clone()))
            .collect();
        names.push(("(dead letters)".into(), config.dead_letter_queue()));
        for (name, queue) in names {
            let Ok(channel) = connection.create_channel().await else {
                return;
            };
            if let Ok(q) = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
            {
                depths.insert(name, q.message_count());
            }
            let _ = channel.close(200, "".into()).await;
        }
        let mut view = self.view();
        view.dead_letter_queue = depths.remove("(dead letters)");
        view.depths = depths;
    }
}

/// One row of the "recent decisions" table, with a link to the bug or the push.
fn decision(consumer: &str, result: &Value, bugzilla_url: &str) -> Value {
    let data = &result["data"];
    let bug = data["bug_id"]
        .as_u64()
        .or_else(|| data["answers"][0]["bug_id"].as_u64());
    let link = if let Some(bug) = bug {
        Some(format!(
            "{}/show_bug.cgi?id={bug}",
            bugzilla_url.trim_end_matches('/')
        ))
    } else if let (Some(repo_url), Some(push)) =
        (data["repo_url"].as_str(), data["push_id"].as_u64())
    {
        Some(format!(
            "{}/pushloghtml?startID={}&endID={push}",
            repo_url.trim_end_matches('/'),
            push.saturating_sub(1)
        ))
    } else {
        None
    };
    let models: Vec<Value> = result["models"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let p = m["prob"]
                .as_array()
                .and_then(|p| p.get(m["index"].as_u64().unwrap_or(0) as usize))
                .and_then(Value::as_f64)
                .or_else(|| m["push_risk"].as_f64());
            json!({
                "model": m["model"],
                "class": m["class"],
                "p": p,
                "skipped": m["skipped"],
            })
        })
        .collect();
    json!({
        "consumer": consumer,
        "subject": result["subject"],
        "event": result["input"]["event"],
        "at": result["produced_at"],
        "link": link,
        "models": models,
        "actions": result["actions"].as_array().map(|a| a.len()).unwrap_or(0),
        "possible_duplicate": result["possible_duplicate"],
    })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
