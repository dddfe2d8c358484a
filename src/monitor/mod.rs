//! What the dashboard shows: the results and dead-letter streams, watched.
//!
//! The dashboard is one more consumer of bugflow's own output. [`Monitor::follow`]
//! (`follow.rs`) taps the results exchange and the dead-letter exchange with a private
//! queue (exclusive, auto-deleted, named `queue/<user>/bugflow-dashboard-…` as Pulse
//! requires), and folds every message into a small in-memory view: throughput per consumer,
//! the latest decisions, the commit risk per component of every consumer that scores
//! pushes, dead letters. The web process sees what every worker process does without a
//! store write on the workers' hot path. It is a view, not a record: it starts empty, and
//! messages are auto-acknowledged (losing one loses a dot on a chart, never a result).

mod follow;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::models::ModelKind;
use crate::models::registry::ModelSet;
use crate::result::ResultMessage;
use crate::score::Score;

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
    /// By (consumer, component): the risk of the commits of every scored push.
    components: BTreeMap<(String, String), ComponentRisk>,
    /// Queue depths (ready + unacked) polled from the broker, by consumer.
    depths: BTreeMap<String, u32>,
    dead_letter_queue: Option<u32>,
    connected: bool,
}

#[derive(Default)]
struct Throughput {
    results: u64,
    duplicates: u64,
    /// Results of shadow bundles (`<consumer>.shadow.<subject>`): counted, not shown as
    /// decisions.
    shadow: u64,
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

    /// Folds one result (as published to the results exchange) into the view.
    pub fn observe_result(&self, result: &ResultMessage, bugzilla_url: &str) {
        let consumer = result.consumer.clone();
        let now = Instant::now();
        let mut view = self.view();
        let t = view.consumers.entry(consumer.clone()).or_default();
        if result.kind == crate::pipeline::SHADOW_KIND {
            t.shadow += 1;
            return;
        }
        t.results += 1;
        if result.possible_duplicate {
            t.duplicates += 1;
        }
        t.window.push_back(now);
        while t.window.front().is_some_and(|at| now - *at > WINDOW) {
            t.window.pop_front();
        }
        t.last = Some(Utc::now());
        // A push score lists the push's commits, each with its components and risk.
        if result.models.iter().any(|m| matches!(m, Score::Push(_))) {
            fold_components(&mut view.components, &consumer, &result.data);
        }
        view.recent
            .push_front(decision(&consumer, result, bugzilla_url));
        view.recent.truncate(RECENT);
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
                    "shadow_results": t.shadow,
                    "per_minute": recent,
                    "last": t.last,
                    "queue": view.depths.get(name),
                })
            })
            .collect();
        let mut components: Vec<Value> = view
            .components
            .iter()
            .map(|((consumer, name), c)| {
                json!({
                    "consumer": consumer,
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
        let model_list: Vec<Value> = ModelKind::all()
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
            // `seen` and `recent` come from the store (the dashboard handler adds them).
            "dead_letters": {
                "seen": 0,
                "queued": view.dead_letter_queue,
                "recent": [],
            },
        })
    }
}

/// Adds the commits of a push result (`data.commits`) to the risk per component.
fn fold_components(
    components: &mut BTreeMap<(String, String), ComponentRisk>,
    consumer: &str,
    data: &Value,
) {
    for commit in data["commits"].as_array().into_iter().flatten() {
        let Some(risk) = commit["risk"].as_f64() else {
            continue;
        };
        for component in commit["components"].as_array().into_iter().flatten() {
            let name = component.as_str().unwrap_or("?").to_owned();
            let c = components.entry((consumer.to_owned(), name)).or_default();
            c.commits += 1;
            c.sum += risk;
            c.max = c.max.max(risk);
            c.risky += u64::from(risk >= 0.5);
        }
    }
}

/// One row of the "recent decisions" table, with a link to the bug or the push.
fn decision(consumer: &str, result: &ResultMessage, bugzilla_url: &str) -> Value {
    let models: Vec<Value> = result
        .models
        .iter()
        .map(|m| {
            let (class, p, skipped) = match m {
                Score::Bug(b) => (Some(b.class.as_str()), Some(b.confidence()), None),
                Score::Push(s) => (s.class.as_deref(), s.push_risk, None),
                Score::Skipped(s) => (None, None, Some(s.skipped.as_str())),
                Score::Request(_) => (None, None, None),
            };
            json!({"model": m.model(), "class": class, "p": p, "skipped": skipped})
        })
        .collect();
    json!({
        "consumer": consumer,
        "subject": result.subject,
        "event": result.input.event,
        "at": result.produced_at,
        "link": link(&result.data, bugzilla_url),
        "models": models,
        "actions": result.actions.len(),
        "possible_duplicate": result.possible_duplicate,
    })
}

/// The page of the bug, or the pushlog of the push, a result is about.
fn link(data: &Value, bugzilla_url: &str) -> Option<String> {
    let bug = data["bug_id"]
        .as_u64()
        .or_else(|| data["answers"][0]["bug_id"].as_u64());
    if let Some(bug) = bug {
        return Some(format!(
            "{}/show_bug.cgi?id={bug}",
            bugzilla_url.trim_end_matches('/')
        ));
    }
    let (repo_url, push) = (data["repo_url"].as_str()?, data["push_id"].as_u64()?);
    Some(format!(
        "{}/pushloghtml?startID={}&endID={push}",
        repo_url.trim_end_matches('/'),
        push.saturating_sub(1)
    ))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
