//! Proof under faults, against the real RabbitMQ and a stateful fake Bugzilla. Each test
//! prints what it measured (run with `--nocapture` to see it):
//!
//! 1. `writes_under_closes` — 10,000 bug events while every connection is force-closed
//!    again and again: every event has its result, every bug is written exactly once;
//! 2. `kill_and_restart` — `kill -9` of a running `bugflow run`, then a restart: the same;
//! 3. `bugzilla_faults` — Bugzilla answering 500, 429 and too slowly: nothing is acked before
//!    it is done or dead-lettered with its reason;
//! 4. `broker_restart` — `rabbitmqctl stop_app` / `start_app` mid-stream: nothing lost, and
//!    how long the consumer takes to come back;
//! 5. `queue_depth` — a sustained input rate: the queue stays far below Pulse's 8,000, and
//!    bugflow warns past `queue_warn_messages`;
//! 6. `writes_once` — PUTs answered late or with a 500 after they landed, PUTs that fail,
//!    two events about one bug at once, a cap under concurrency: one write per bug.
//!
//! A binary of its own, its tests one at a time: they close every connection on the broker
//! and stop it.

#[path = "../common/mod.rs"]
mod common;
mod fake_bugzilla;

mod broker_restart;
mod bugzilla_faults;
mod kill_and_restart;
mod queue_depth;
mod writes_once;
mod writes_under_closes;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bugflow::config::Config;
use bugflow::consumer::ConsumerSpec;
use bugflow::effects::bugzilla::WriterConfig;
use bugflow::pipeline::Pipeline;
use bugflow::secret::Secret;
use bugflow::store::Store;

use common::TestBroker;
use fake_bugzilla::FakeBugzilla;

/// One fault test at a time: each disturbs the whole broker.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Bugzilla writer that gives every bug the fake serves exactly one type change (the
/// other models never reach their thresholds), with the shipped claim lease.
pub fn type_writer() -> WriterConfig {
    WriterConfig {
        enabled: true,
        dry_run: false,
        max_writes_per_hour: 1_000_000,
        bugtype: 0.0,
        component: 2.0,
        general_component: 2.0,
        spam: 2.0,
        regression: 2.0,
        ..WriterConfig::default()
    }
}

/// The bug-triage consumer writing bug types back to the fake Bugzilla.
pub fn writing_triage(broker: &mut TestBroker) -> ConsumerSpec {
    let mut spec = broker.spec("bug-triage");
    spec.outputs.bugzilla = type_writer();
    spec
}

/// Reads results until every one of `expected` subjects has one (or `within` passes; `alive`
/// is checked each round); returns the subjects and how many results were read.
pub async fn result_subjects(
    reader: &TestBroker,
    queue: &str,
    expected: u64,
    within: Duration,
    mut alive: impl FnMut(),
) -> (BTreeSet<String>, usize) {
    let deadline = Instant::now() + within;
    let mut subjects = BTreeSet::new();
    let mut read = 0;
    while (subjects.len() as u64) < expected {
        assert!(
            Instant::now() < deadline,
            "{} of {expected} results",
            subjects.len()
        );
        alive();
        for got in reader.take(queue, 20_000, Duration::from_millis(500)).await {
            read += 1;
            subjects.insert(got.json()["subject"].as_str().unwrap().to_owned());
        }
    }
    (subjects, read)
}

/// The broker's config pointed at the fake Bugzilla.
pub fn config_for(broker: &TestBroker, bugzilla: &FakeBugzilla, timeout_seconds: u64) -> Config {
    let mut config = (*broker.config).clone();
    config.bugzilla.url = bugzilla.base.clone();
    config.bugzilla.api_key = Secret::new("fault-test-key");
    config.bugzilla.timeout_seconds = timeout_seconds;
    config.bugzilla.block_seconds = 2;
    config.bugzilla.attempts = 2;
    config.hg.enabled = false;
    // Two tries, a second apart: a failure is dead-lettered within seconds.
    config.amqp.retry_attempts = 2;
    config.amqp.retry_delay_seconds = 1;
    config
}

pub async fn pipeline(config: &Config, spec: ConsumerSpec, store: Arc<Store>) -> Pipeline {
    bugflow::app::pipeline_for(
        config,
        spec,
        common::models_writing_at_configured_thresholds(),
        Some(store),
    )
    .unwrap()
}
