// Over 400 lines on purpose: the relay and the pipeline are measured with one setup, side by
// side in one file, so that nothing differs between them but what is measured.
//! `bugflow bench`: the pipeline's throughput against a bare relay, on the real broker.
//!
//! Both variants drain the same preloaded queue of hg push messages with the same prefetch
//! and the same ack policy (each message acked after its output was confirmed):
//!
//! * **relay** — consume → publish the body to the results exchange with a confirm → ack;
//! * **pipeline** — a consumer (`--consumer`, `pushes` by default) as `bugflow run` runs
//!   it, its metrics recorded as there: consume → decode → models → result → publish with a
//!   confirm → ack.
//!
//! Rounds alternate the order of the variants, and the report compares medians, so that a
//! noisy machine hurts both alike. Each round also reads the CPU time the bench process
//! and the local broker spent on it ([`super::bench_cpu`]): what a message costs each side
//! moves less between runs than the throughput does, and says which side grew. A third row
//! measures the in-process pipeline alone (the speed of `bugflow replay`). Last, a child
//! process (`bench serve`) drains one more queue with the pipeline alone, as a service
//! would, and reports its resident memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use super::bench_cpu::{CpuClock, CpuPerMessage, micros};
use crate::archive::ArchiveLine;
use crate::cmd::replay::Item;
use crate::config::Config;
use crate::consumer::{Binding, ConsumerSpec};
use crate::dispatch::Stats;
use crate::error::Stage;
use crate::message::Message;
use crate::models::registry::ModelSet;
use crate::pipeline::Pipeline;
use crate::pulse::connect::connect;
use crate::pulse::publish::{Outgoing, Publisher};
use crate::pulse::tap::{Next, Tap, TapOptions, TapQueue};
use crate::pulse::topology::{
    declare_bound_queue, declare_consumer, declare_own_exchange, retry_queue,
};
use crate::runner::Runner;
use crate::score::Score;

pub struct BenchOptions {
    pub messages: u64,
    pub prefetch: u16,
    pub rounds: u32,
    /// The shipped consumer measured: `pushes` (hg pushes, no models: json-pushes is not
    /// fetched) or `bug-triage` (BMO webhook events through every serving bug model,
    /// without Bugzilla enrichment or writes).
    pub consumer: String,
    /// The config file the bench was started with, passed on to its `bench serve` child.
    pub config_path: Option<std::path::PathBuf>,
    /// The pipeline also keeps each message in this archive (`[sinks.archive]`).
    pub archive: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Relay,
    Pipeline,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub variant: Variant,
    pub round: u32,
    pub seconds: f64,
    pub per_second: f64,
    /// CPU a message, the bench process's and the broker's, over the round.
    pub cpu: CpuPerMessage,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub samples: Vec<Sample>,
    pub relay_median: f64,
    pub pipeline_median: f64,
    pub ratio: f64,
    /// Median CPU µs a message of the relay's rounds and of the pipeline's.
    pub relay_cpu: CpuPerMessage,
    pub pipeline_cpu: CpuPerMessage,
    pub in_process_per_second: f64,
    /// The memory of the consuming process: a child that runs only the pipeline, as
    /// `bugflow run` would (see [`Memory`]).
    pub memory: Memory,
}

/// Resident memory (MiB) of a process that runs only the pipeline, measured apart from the
/// bench's own work (preloading 20,000 messages and relaying them cost the bench process
/// ~30 MiB a service never spends): with every serving model loaded, before the first
/// message, and at most while it drains the preloaded queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub loaded_mib: f64,
    pub peak_mib: f64,
}

/// An hg push (v2 `changegroup.1`) with a distinct push id.
pub fn push_body(i: u64) -> Vec<u8> {
    let head = format!("{:040x}", (i as u128) * 0x9e37_79b9_7f4a_7c15 + 1);
    serde_json::to_vec(&serde_json::json!({
        "payload": {"type": "changegroup.1", "data": {
            "repo_url": "https://hg.mozilla.org/integration/autoland",
            "heads": [&head[head.len() - 40..]],
            "pushlog_pushes": [{
                "pushid": i, "time": 1_700_000_000 + i as i64, "user": "dev@mozilla.com",
                "push_json_url": format!("https://hg.mozilla.org/integration/autoland/json-pushes?version=2&startID={}&endID={}", i, i + 1),
                "push_full_json_url": format!("https://hg.mozilla.org/integration/autoland/json-pushes?version=2&full=1&startID={}&endID={}", i, i + 1),
            }],
            "source": "push"}},
        "_meta": {"exchange": "exchange/hgpushes/v2", "routing_key": "integration/autoland",
                  "serializer": "json", "sent": "2026-11-28T10:00:00"}
    }))
    .expect("a JSON literal serializes")
}

/// The three public BMO webhook samples (`bug.modify`, `comment.create`,
/// `attachment.create`), as recorded.
static WEBHOOK_SAMPLES: std::sync::LazyLock<Vec<serde_json::Value>> =
    std::sync::LazyLock::new(|| {
        [
            include_str!("../../tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_comment_create_example.json"),
            include_str!("../../tests/fixtures/pulse/bmo_webhook_attachment_create_example.json"),
        ]
        .iter()
        .map(|text| serde_json::from_str(text).expect("the bundled webhook samples are JSON"))
        .collect()
    });

/// The 58 fixture bugs, full (comments, history), as Bugzilla's REST API gives them.
static FIXTURE_BUGS: std::sync::LazyLock<Vec<serde_json::Value>> = std::sync::LazyLock::new(|| {
    include_str!("../../tests/fixtures/data/bugs.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
});

/// Each fixture bug's summary and description (its comment 0; empty when it has none).
static FIXTURE_TEXTS: std::sync::LazyLock<Vec<(String, String)>> = std::sync::LazyLock::new(|| {
    FIXTURE_BUGS
        .iter()
        .filter_map(|b| {
            let summary = b["summary"].as_str()?.to_owned();
            let description = b["comments"][0]["text"].as_str().unwrap_or_default();
            Some((summary, description.to_owned()))
        })
        .collect()
});

/// A BMO webhook event (the real `bug.modify` sample) about bug `i`, with the summary and
/// the description (comment 0, as a `bug.create` carries it) of one of the fixture bugs, so
/// that the models read varied text, and every bug model answers (one that learned from
/// descriptions is not scored on an event without one).
pub fn webhook_body(i: u64) -> Vec<u8> {
    let mut event = WEBHOOK_SAMPLES[0].clone();
    event["bug"]["id"] = serde_json::json!(1_000_000 + i);
    if let Some((summary, description)) = fixture_texts(i) {
        event["bug"]["summary"] = serde_json::json!(summary);
        event["bug"]["comment"]["number"] = serde_json::json!(0);
        event["bug"]["comment"]["body"] = serde_json::json!(description);
    }
    serde_json::to_vec(&event).expect("a JSON value serializes")
}

/// The texts of fixture bug `i` (modulo their number), if there are any.
fn fixture_texts(i: u64) -> Option<&'static (String, String)> {
    FIXTURE_TEXTS.get(i as usize % FIXTURE_TEXTS.len().max(1))
}

/// One of the three public BMO webhook samples about bug `i`, as recorded but for the
/// summary, one of the fixture bugs' (the same title every time would be scored from
/// cache). None carries a description, so a model that reads descriptions (regression)
/// does not answer: the stream a bug-triage consumer mostly sees, where `webhook_body` is
/// a bug's creation.
pub fn sample_webhook(i: u64) -> Message {
    let mut event = WEBHOOK_SAMPLES[i as usize % WEBHOOK_SAMPLES.len()].clone();
    event["bug"]["id"] = serde_json::json!(1_000_000 + i);
    if let Some((summary, _)) = fixture_texts(i) {
        event["bug"]["summary"] = serde_json::json!(summary);
    }
    let routing_key = event["event"]["routing_key"]
        .as_str()
        .unwrap_or("bug.modify")
        .to_owned();
    let body = serde_json::to_vec(&event).expect("a JSON value serializes");
    Message::new("bench", routing_key, body)
}

/// The API's request `i` (`GET /<model>/predict/<bug>`): one fixture bug, by each bug model
/// in turn, with the bug stored as `bugflow record --enrich` keeps it (Bugzilla's answer),
/// so that an offline pipeline scores it without fetching.
pub fn stored_request(i: u64) -> Message {
    const MODELS: [&str; 4] = ["bugtype", "component", "spam", "regression"];
    let model = MODELS[i as usize % MODELS.len()];
    let bug = FIXTURE_BUGS
        .get(i as usize % FIXTURE_BUGS.len().max(1))
        .cloned()
        .unwrap_or_default();
    let request = serde_json::json!({"request": "bugs", "model": model, "bugs": [bug["id"]]});
    let body = serde_json::to_vec(&request).expect("a JSON value serializes");
    let mut m = Message::new("bench", format!("predict.{model}"), body);
    let enrichment = crate::message::Enrichment {
        bugs: Some(vec![bug]),
        ..Default::default()
    };
    m.enrichment = Some(Arc::new(enrichment));
    m
}

/// A message for consumer `name`: its routing key and body.
fn bench_message(name: &str, i: u64) -> (&'static str, Vec<u8>) {
    match name {
        "bug-triage" => ("bug.modify", webhook_body(i)),
        _ => ("integration/autoland", push_body(i)),
    }
}

/// The shipped consumer `name`, reading `input` only, with the bench's queue and prefetch;
/// it never writes to Bugzilla.
fn bench_spec(
    config: &Config,
    name: &str,
    input: &str,
    prefetch: u16,
) -> anyhow::Result<ConsumerSpec> {
    let mut spec = ConsumerSpec::builtin(name, config)?;
    spec.queue = format!("queue/{}/bench-{name}", config.user);
    spec.prefetch = prefetch;
    spec.bindings = vec![Binding {
        exchange: input.to_owned(),
        keys: vec!["#".into()],
        optional: false,
    }];
    spec.outputs.bugzilla.enabled = false;
    Ok(spec)
}

/// [`bench_spec`] as `bench pipeline` runs it: pushes unscored, since scoring a push means
/// fetching json-pushes (the pushes bench measures the rest; `bench replay` scores them
/// from stored answers).
fn pipeline_bench_spec(
    config: &Config,
    name: &str,
    input: &str,
    prefetch: u16,
) -> anyhow::Result<ConsumerSpec> {
    let mut spec = bench_spec(config, name, input, prefetch)?;
    if name == "pushes" {
        spec.models.clear();
    }
    Ok(spec)
}

/// One bench deployment: its own user namespace, so that nothing collides or lingers.
struct Deployment {
    config: Arc<Config>,
    spec: ConsumerSpec,
    models: Arc<ModelSet>,
    input: String,
    results_queue: String,
}

impl Deployment {
    async fn create(
        base: &Config,
        options: &BenchOptions,
        models: Arc<ModelSet>,
    ) -> anyhow::Result<Deployment> {
        let user = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let deployment = Deployment::named(base, options, &user, models)?;
        let (config, spec) = (&deployment.config, &deployment.spec);
        let connection = connect(config, "bench-setup").await?;
        let channel = connection.create_channel().await?;
        declare_consumer(&connection, &channel, config, spec).await?;
        declare_own_exchange(&channel, &deployment.input).await?;
        let results = config.results_exchange();
        declare_bound_queue(&channel, &deployment.results_queue, &results, "#").await?;
        preload(
            &channel,
            &deployment.input,
            &options.consumer,
            options.messages,
        )
        .await?;
        let _ = connection.close(200, "setup done".into()).await;
        Ok(deployment)
    }

    /// The deployment of bench user `user`, declaring nothing: what [`create`](Self::create)
    /// declares, and what a `bench serve` child attaches to.
    fn named(
        base: &Config,
        options: &BenchOptions,
        user: &str,
        models: Arc<ModelSet>,
    ) -> anyhow::Result<Deployment> {
        let mut config = base.clone();
        config.user = user.to_owned();
        config.amqp.declare_exchanges = true;
        let input = format!("exchange/{user}/bench-input");
        let spec = pipeline_bench_spec(&config, &options.consumer, &input, options.prefetch)?;
        Ok(Deployment {
            results_queue: format!("queue/{user}/bench-results"),
            config: Arc::new(config),
            spec,
            models,
            input,
        })
    }

    /// Deletes every queue and exchange [`create`](Self::create) declared (the consumer's
    /// topology declares a retry queue and the retry and requests exchanges as well).
    async fn destroy(self) -> anyhow::Result<()> {
        let connection = connect(&self.config, "bench-teardown").await?;
        let channel = connection.create_channel().await?;
        for queue in [
            self.spec.queue.clone(),
            retry_queue(&self.spec),
            self.results_queue.clone(),
            self.config.dead_letter_queue(),
        ] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.input.clone(),
            self.config.results_exchange(),
            self.config.dead_letter_exchange(),
            self.config.bugzilla_exchange(),
            self.config.requests_exchange(),
            self.config.retry_exchange(),
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = connection.close(200, "teardown done".into()).await;
        Ok(())
    }
}

/// Publishes `n` persistent messages with confirms, 1,000 outstanding at a time.
pub async fn preload(
    channel: &Channel,
    exchange: &str,
    consumer: &str,
    n: u64,
) -> anyhow::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending = Vec::with_capacity(1000);
    for i in 0..n {
        let (routing_key, body) = bench_message(consumer, i);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await?;
        pending.push(confirm);
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                anyhow::ensure!(c.await?.is_ack(), "preload publish was nacked");
            }
        }
    }
    for c in pending {
        anyhow::ensure!(c.await?.is_ack(), "preload publish was nacked");
    }
    Ok(())
}

/// Consume → publish with confirm → ack, with the runner's concurrency (prefetch in flight).
async fn relay(deployment: &Deployment, n: u64) -> anyhow::Result<()> {
    let publisher = Publisher::connect(deployment.config.clone()).await?;
    let options = TapOptions {
        queue: TapQueue::Existing(&deployment.spec.queue),
        prefetch: deployment.spec.prefetch,
        auto_ack: false,
        purpose: "bench-relay",
    };
    let mut tap = Tap::open(&deployment.config, options).await?;
    let exchange = deployment.config.results_exchange();
    let limit = usize::from(deployment.spec.prefetch);
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0u64;
    while done < n {
        tokio::select! {
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                let acked: anyhow::Result<bool> = result;
                if acked? { done += 1; }
            }
            next = tap.next(), if in_flight.len() < limit => {
                let delivery = match next {
                    Next::Delivery(d) => d,
                    Next::Cancelled => anyhow::bail!("relay consumer cancelled"),
                    Next::Lost(e) => return Err(e),
                };
                let publisher = &publisher;
                let exchange = &exchange;
                in_flight.push(async move {
                    let out = Outgoing::json(exchange, delivery.routing_key.as_str(), &delivery.data);
                    publisher.publish(&out).await?;
                    Ok(delivery.ack(BasicAckOptions::default()).await?)
                });
            }
        }
    }
    tap.close("relay done").await;
    publisher.close().await;
    Ok(())
}

/// The consumer, exactly as `bugflow run` runs it (keeping `archive` when given), until `n`
/// messages are acked.
async fn pipeline(
    deployment: &Deployment,
    n: u64,
    archive: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let publisher = Publisher::connect(deployment.config.clone()).await?;
    let mut sinks = crate::app::sinks_for(&deployment.config, &deployment.spec, &publisher, None);
    if let Some(path) = archive {
        sinks.archive = Some(crate::sinks::archive::ArchiveSink::open(path).await?);
    }
    let shutdown = CancellationToken::new();
    let runner = Runner::new(
        deployment.config.clone(),
        Arc::new(Pipeline::new(
            deployment.spec.clone(),
            deployment.models.clone(),
        )),
        sinks,
        shutdown.clone(),
    );
    let stats = runner.stats();
    let task = tokio::spawn(async move { runner.run().await });
    let deadline = Instant::now() + Duration::from_secs(600);
    while Stats::get(&stats.acked) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pipeline did not drain in 10 minutes"
        );
        anyhow::ensure!(!task.is_finished(), "the runner stopped early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    shutdown.cancel();
    task.await??;
    publisher.close().await;
    Ok(())
}

/// The consumer's pipeline alone, in-process, on one thread (as the consumer runs it),
/// each result serialised as it would be published.
pub async fn in_process_rate(consumer: &str, models: Arc<ModelSet>, n: u64) -> anyhow::Result<f64> {
    let config = Config::default();
    let spec = pipeline_bench_spec(&config, consumer, "bench", 200)?;
    let pipeline = Pipeline::new(spec, models);
    let messages: Vec<Message> = (0..n)
        .map(|i| {
            let (key, body) = bench_message(consumer, i);
            Message::new("bench", key, body)
        })
        .collect();
    let started = Instant::now();
    let mut bytes = 0usize;
    for m in &messages {
        for r in pipeline.process(m).await? {
            bytes += r.to_json().len();
        }
    }
    std::hint::black_box(bytes);
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// This process's resident memory in MiB (`VmRSS` of /proc/self/status; Linux only).
pub fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Keeps the highest RSS seen in `peak`, sampling every 20 ms until aborted.
fn sample_rss(peak: Arc<std::sync::Mutex<f64>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Some(now) = rss_mib() {
                let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                *p = p.max(now);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

pub async fn bench(base: &Config, options: &BenchOptions) -> anyhow::Result<BenchReport> {
    let models = models_of(base, &options.consumer)?;
    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        let order = if round % 2 == 1 {
            [Variant::Relay, Variant::Pipeline]
        } else {
            [Variant::Pipeline, Variant::Relay]
        };
        for variant in order {
            let deployment = Deployment::create(base, options, models.clone()).await?;
            let (started, cpu_before) = (Instant::now(), CpuClock::now());
            let outcome = match variant {
                Variant::Relay => relay(&deployment, options.messages).await,
                Variant::Pipeline => {
                    pipeline(&deployment, options.messages, options.archive.as_deref()).await
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            let cpu = cpu_before.per_message(&CpuClock::now(), options.messages);
            deployment.destroy().await?;
            outcome?;
            let sample = Sample {
                variant,
                round,
                seconds,
                per_second: options.messages as f64 / seconds,
                cpu,
            };
            eprintln!(
                "round {round}: {:<8} {:>8} msgs in {:>7.3} s = {:>9.0} msg/s; CPU a message: {}",
                format!("{variant:?}").to_lowercase(),
                options.messages,
                seconds,
                sample.per_second,
                sample.cpu
            );
            samples.push(sample);
        }
    }
    let of = |v: Variant| {
        samples
            .iter()
            .filter(|s| s.variant == v)
            .map(|s| s.per_second)
            .collect::<Vec<_>>()
    };
    let relay_median = median(of(Variant::Relay));
    let pipeline_median = median(of(Variant::Pipeline));
    // The median of one reading over a variant's rounds; none if a round could not read it.
    let cpu_of = |v: Variant| {
        let median_of = |part: fn(&CpuPerMessage) -> Option<f64>| {
            let rounds = samples.iter().filter(|s| s.variant == v);
            let values: Option<Vec<f64>> = rounds.map(|s| part(&s.cpu)).collect();
            values.filter(|v| !v.is_empty()).map(median)
        };
        CpuPerMessage {
            own_us: median_of(|c| c.own_us),
            broker_us: median_of(|c| c.broker_us),
        }
    };
    Ok(BenchReport {
        relay_median,
        pipeline_median,
        ratio: pipeline_median / relay_median,
        relay_cpu: cpu_of(Variant::Relay),
        pipeline_cpu: cpu_of(Variant::Pipeline),
        in_process_per_second: in_process_rate(
            &options.consumer,
            models.clone(),
            options.messages.max(10_000),
        )
        .await?,
        samples,
        memory: memory_of_a_consumer(base, options).await?,
    })
}

/// The models the bench's consumer scores with: none for pushes (scoring one would fetch
/// json-pushes), every serving bundle otherwise.
fn models_of(config: &Config, consumer: &str) -> anyhow::Result<Arc<ModelSet>> {
    if consumer == "pushes" {
        Ok(ModelSet::empty())
    } else {
        crate::app::load_models(config)
    }
}

/// Preloads a queue here, then drains it in a child `bugflow bench serve` (which runs
/// only the pipeline, as a service would) and reads the child's resident memory.
async fn memory_of_a_consumer(base: &Config, options: &BenchOptions) -> anyhow::Result<Memory> {
    let deployment = Deployment::create(base, options, ModelSet::empty()).await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child
        .args(["bench", "serve", "--consumer", &options.consumer])
        .args(["--user", &deployment.config.user])
        .args(["--prefetch", &options.prefetch.to_string()])
        .args(["--messages", &options.messages.to_string()])
        .stdin(std::process::Stdio::null());
    if let Some(path) = &options.config_path {
        child.env("BUGFLOW_CONFIG", path);
    }
    let output = child.output().await;
    deployment.destroy().await?;
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // Its log (URLs in it are redacted), last lines first to read.
        let log = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        anyhow::bail!(
            "bench serve failed ({}); the end of its log, last line first:\n{}",
            output.status,
            tail.join("\n")
        );
    }
    parse_memory(&stdout)
        .ok_or_else(|| anyhow::anyhow!("bench serve printed no memory line: {stdout}"))
}

/// The `rss LOADED PEAK` line [`serve_command`] prints.
fn parse_memory(stdout: &str) -> Option<Memory> {
    let line = stdout.lines().find(|l| l.starts_with("rss "))?;
    let mut numbers = line.split_whitespace().skip(1).map(str::parse::<f64>);
    Some(Memory {
        loaded_mib: numbers.next()?.ok()?,
        peak_mib: numbers.next()?.ok()?,
    })
}

/// `bugflow bench serve` (started by `bench pipeline`): loads the serving models, drains the
/// preloaded queue of bench user `user` through the pipeline, and prints its resident memory
/// after loading and its peak while draining, sampled every 20 ms, as `rss LOADED PEAK`.
pub async fn serve_command(
    base: &Config,
    options: &BenchOptions,
    user: &str,
) -> anyhow::Result<()> {
    let models = models_of(base, &options.consumer)?;
    let deployment = Deployment::named(base, options, user, models)?;
    let loaded = rss_mib().ok_or_else(|| {
        anyhow::anyhow!("no resident memory to report: it is read from /proc/self/status (Linux)")
    })?;
    let peak = Arc::new(std::sync::Mutex::new(loaded));
    let sampler = sample_rss(peak.clone());
    let outcome = pipeline(&deployment, options.messages, None).await;
    sampler.abort();
    outcome?;
    let peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    println!("rss {loaded:.1} {peak:.1}");
    Ok(())
}

impl BenchReport {
    pub fn print(&self, options: &BenchOptions) {
        println!();
        println!(
            "bugflow bench — {} messages per run, prefetch {}, {} rounds, broker round trip with confirms",
            options.messages, options.prefetch, options.rounds
        );
        println!("| what | msg/s (median) |");
        println!("|---|---:|");
        for (what, rate) in [
            (
                &"bare relay (consume → publish + confirm → ack)".to_string(),
                self.relay_median,
            ),
            (
                &format!(
                    "pipeline ({} consumer, same prefetch and acks)",
                    options.consumer
                ),
                self.pipeline_median,
            ),
            (
                &"pipeline in-process, one thread, results serialised (no broker)".to_string(),
                self.in_process_per_second,
            ),
        ] {
            println!("| {what} | {rate:.0} |");
        }
        println!();
        println!("CPU a message (median; the broker's when it runs on this machine):");
        println!("| what | bench process | broker |");
        println!("|---|---:|---:|");
        for (what, cpu) in [
            ("bare relay", self.relay_cpu),
            ("pipeline", self.pipeline_cpu),
        ] {
            println!(
                "| {what} | {} | {} |",
                micros(cpu.own_us),
                micros(cpu.broker_us)
            );
        }
        println!();
        println!(
            "RSS of a process running only the {} consumer: {:.1} MiB with its models loaded, \
             {:.1} MiB at most while it drained {} messages (prefetch {}); target ≤ 64 MiB: {}",
            options.consumer,
            self.memory.loaded_mib,
            self.memory.peak_mib,
            options.messages,
            options.prefetch,
            if self.memory.peak_mib <= 64.0 {
                "PASS"
            } else {
                "FAIL"
            }
        );
        println!(
            "ratio pipeline / relay = {:.3} (target ≥ 0.8): {}",
            self.ratio,
            if self.ratio >= 0.8 { "PASS" } else { "FAIL" }
        );
    }
}

/// `items` through `pipeline` as `bugflow replay --consumer` runs an archive (batches
/// processed on every core, delivered in order), results counted; the clock starts once
/// the items are made.
async fn replay_in_memory(
    pipeline: &Pipeline,
    items: Vec<Item>,
) -> anyhow::Result<crate::cmd::replay::Summary> {
    use crate::cmd::replay::{BATCH, Batches};
    let sinks = Default::default();
    let mut batches = Batches::new(Arc::new(vec![pipeline.clone()]), true, Default::default());
    let mut summary = crate::cmd::replay::Summary::default();
    let started = Instant::now();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch = items.by_ref().take(BATCH).collect();
        batches.push(batch, &sinks, &mut summary).await?;
    }
    batches.finish(&sinks, &mut summary).await?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// `bugflow bench replay`: in-process replay msg/s of each shipped stream, with the serving
/// models: pushes scored by commit-risk from stored json-pushes answers (`--offline`), and
/// BMO webhook events through every bug model (without Bugzilla enrichment). Beside the
/// rate, the CPU a message cost, every thread's: a replay that keeps `N` cores busy spends
/// about `N` times its wall-clock µs a message, so the two together tell whether a slower
/// run did more work or had less of the machine.
///
/// `only` measures one consumer's streams (`pushes`, `bug-triage` or `api-requests`: the
/// API's requests, each bug stored with it, `--offline`). The models must be found (run it
/// in the checkout, or set `BUGFLOW_MODELS_DIR`): a stream that no model scores would be
/// measured at several times its real speed, so the bench refuses it.
pub async fn replay_command(config: &Config, n: u64, only: Option<&str>) -> anyhow::Result<()> {
    let models = crate::app::load_models(config)?;
    let changesets = stored_changesets()?;
    let stored_push = |i: u64| stored_push(&changesets, i);
    let pushes =
        Pipeline::new(bench_spec(config, "pushes", "bench", 200)?, models.clone()).offline();
    let triage = Pipeline::new(
        bench_spec(config, "bug-triage", "bench", 200)?,
        models.clone(),
    );
    let requests = Pipeline::new(
        bench_spec(config, "api-requests", "bench", 200)?,
        models.clone(),
    )
    .offline();
    let streams = [
        (
            "pushes",
            "pushes, commit-risk on stored json-pushes (--offline)",
            &pushes,
            &stored_push as &dyn Fn(u64) -> Message,
        ),
        (
            "bug-triage",
            "BMO webhook events, every bug model",
            &triage,
            &|i| Message::new("bench", "bug.modify", webhook_body(i)),
        ),
        (
            "bug-triage",
            "BMO webhook samples as recorded (no description)",
            &triage,
            &sample_webhook,
        ),
        (
            "api-requests",
            "API requests of one full bug each, the bug models in turn, stored (--offline)",
            &requests,
            &stored_request,
        ),
    ];
    let streams: Vec<_> = streams
        .into_iter()
        .filter(|(consumer, ..)| only.is_none_or(|name| name == *consumer))
        .collect();
    println!("bugflow bench replay — {n} messages per stream, in-process, no network");
    for (consumer, what, pipeline, make) in &streams {
        println!("{}", scored_by(consumer, what, pipeline, &make(0)).await?);
    }
    println!("| stream | msg/s | µs per message | CPU a message (every thread) |");
    println!("|---|---:|---:|---:|");
    for (_, what, pipeline, make) in streams {
        replay_rows(what, pipeline, make, n).await?;
    }
    Ok(())
}

/// The changesets of the json-pushes sample: what every bench push's stored answer holds.
fn stored_changesets() -> anyhow::Result<serde_json::Value> {
    let answer: serde_json::Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/pulse/treeherder_hg_json_pushes_v2_full_response.json"
    ))?;
    Ok(answer["pushes"]
        .as_object()
        .and_then(|p| p.values().next())
        .cloned()
        .unwrap_or_default())
}

/// Push `i` with its json-pushes answer stored (as `bugflow record --enrich` keeps it), so
/// that an offline pipeline scores it without fetching.
fn stored_push(changesets: &serde_json::Value, i: u64) -> Message {
    let mut m = Message::new("bench", "integration/autoland", push_body(i));
    let url = format!(
        "https://hg.mozilla.org/integration/autoland/json-pushes?version=2&full=1&startID={}&endID={}",
        i,
        i + 1
    );
    let mut enrichment = crate::message::Enrichment::default();
    let pushes = serde_json::json!({ i.to_string(): changesets });
    enrichment
        .json_pushes
        .insert(url, serde_json::json!({"lastpushid": i, "pushes": pushes}));
    m.enrichment = Some(Arc::new(enrichment));
    m
}

/// Which models score `first` through `pipeline` (the first message of stream `what`), as a
/// line; an error when none does (a stream no model scores is refused, not measured).
async fn scored_by(
    consumer: &str,
    what: &str,
    pipeline: &Pipeline,
    first: &Message,
) -> anyhow::Result<String> {
    let refuse = |why: &str| {
        anyhow::anyhow!(
            "no model scores the {consumer} bench's messages here ({why}): run the bench in \
             the checkout, or set BUGFLOW_MODELS_DIR to a directory of trained bundles"
        )
    };
    let (ran, not): (Vec<Score>, Vec<Score>) = match pipeline.process(first).await {
        Ok(results) => results,
        // A request for a model without a bundle is refused by the flow itself.
        Err(e) if e.stage == Stage::Models => return Err(refuse(&e.reason)),
        Err(e) => anyhow::bail!("{consumer}: the bench's first message: {e}"),
    }
    .into_iter()
    .flat_map(|result| result.models)
    .partition(|s| s.version().is_some());
    if ran.is_empty() {
        return Err(refuse(&reasons(&not)));
    }
    let skipped = if not.is_empty() {
        String::new()
    } else {
        format!(" (not scored: {})", names(&not))
    };
    Ok(format!("{what}: scored by {}{skipped}", names(&ran)))
}

/// The table rows of one stream: `n` messages as the pipeline gets them, then as `bugflow
/// replay --from` reads them (archive lines, each parsed on the core that processes it).
async fn replay_rows(
    what: &str,
    pipeline: &Pipeline,
    make: &dyn Fn(u64) -> Message,
    n: u64,
) -> anyhow::Result<()> {
    let as_lines = |m: Message| Item::Line(0, ArchiveLine::from_message(&m).to_line());
    for (form, item) in [
        ("", &(|m| Item::Routed(0, m)) as &dyn Fn(Message) -> Item),
        (", from archive lines", &as_lines),
    ] {
        let items = (0..n).map(|i| item(make(i))).collect();
        let cpu = CpuClock::of_this_process();
        let summary = replay_in_memory(pipeline, items).await?;
        let cpu = cpu.per_message(&CpuClock::of_this_process(), n);
        let seconds = summary.elapsed.as_secs_f64();
        anyhow::ensure!(
            summary.results == n,
            "{what}{form}: {} results for {n} messages ({:?})",
            summary.results,
            summary.reasons
        );
        println!(
            "| {what}{form} | {:.0} | {:.1} | {} |",
            n as f64 / seconds,
            seconds * 1e6 / n as f64,
            micros(cpu.own_us)
        );
    }
    Ok(())
}

/// The models of `scores`, named.
fn names(scores: &[Score]) -> String {
    let names: Vec<String> = scores.iter().map(|s| s.model().to_string()).collect();
    names.join(", ")
}

/// Why each of `scores` was not scored.
fn reasons(scores: &[Score]) -> String {
    let reasons: Vec<String> = scores
        .iter()
        .filter_map(|s| Some(format!("{}: {}", s.model(), s.skipped()?)))
        .collect();
    reasons.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    /// The names of `queues` and `exchanges` that exist on the broker (each asked with a
    /// passive declare, on a channel of its own: a miss closes the channel).
    async fn existing(
        connection: &lapin::Connection,
        queues: &[String],
        exchanges: &[String],
    ) -> Vec<String> {
        let mut found = Vec::new();
        let named = queues.iter().map(|q| (q, true));
        for (name, is_queue) in named.chain(exchanges.iter().map(|e| (e, false))) {
            let Ok(channel) = connection.create_channel().await else {
                continue;
            };
            let exists = if is_queue {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let declared =
                    channel.queue_declare(name.as_str().into(), passive, FieldTable::default());
                declared.await.is_ok()
            } else {
                let passive = ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let kind = lapin::ExchangeKind::Topic;
                let declared = channel.exchange_declare(
                    name.as_str().into(),
                    kind,
                    passive,
                    FieldTable::default(),
                );
                declared.await.is_ok()
            };
            if exists {
                found.push(name.clone());
            }
        }
        found
    }

    /// A bench deployment leaves nothing on the broker: every queue and exchange it
    /// declared is there after `create` and gone after `destroy`. (It left its consumer's
    /// retry queue and the retry and requests exchanges behind, one set a round: 97 of
    /// each on this machine after a day of benches.)
    #[tokio::test]
    async fn a_bench_deployment_leaves_nothing_on_the_broker() {
        crate::init_tls();
        let mut base = Config::default();
        if let Ok(url) = std::env::var("BUGFLOW_TEST_AMQP_URL") {
            base.amqp.url = crate::secret::Secret::new(url);
        }
        let options = BenchOptions {
            messages: 3,
            prefetch: 10,
            rounds: 1,
            consumer: "bug-triage".into(),
            config_path: None,
            archive: None,
        };
        let deployment = Deployment::create(&base, &options, ModelSet::empty())
            .await
            .expect("RabbitMQ must answer on 127.0.0.1:5672");
        let (config, spec) = (deployment.config.clone(), deployment.spec.clone());
        let user = &config.user;
        // Named here from the topology's functions, not from `destroy`'s list.
        let queues = [
            spec.queue.clone(),
            format!("{}-retry", spec.queue),
            format!("queue/{user}/bench-results"),
            config.dead_letter_queue(),
        ];
        let exchanges = [
            format!("exchange/{user}/bench-input"),
            config.results_exchange(),
            config.dead_letter_exchange(),
            config.bugzilla_exchange(),
            config.requests_exchange(),
            config.retry_exchange(),
        ];
        let connection = connect(&config, "bench-test").await.expect("a connection");
        let declared = existing(&connection, &queues, &exchanges).await;
        deployment.destroy().await.expect("teardown");
        let left = existing(&connection, &queues, &exchanges).await;
        // Whatever is left, this test does not leave it too.
        if let Ok(channel) = connection.create_channel().await {
            for name in &left {
                let _ = channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = connection.close(200, "done".into()).await;
        assert_eq!(
            declared.len(),
            queues.len() + exchanges.len(),
            "declared: {declared:?}"
        );
        assert!(left.is_empty(), "left on the broker: {left:?}");
    }

    /// Without its models (run outside the checkout, say), the bug-triage stream would be
    /// measured at several times its real speed, every model skipped: the bench refuses it,
    /// and says where the models are looked for. With them (the checkout's), it runs.
    #[tokio::test]
    async fn bench_replay_refuses_a_stream_no_model_scores() {
        let mut config = Config {
            models_dir: std::env::temp_dir().join(format!("no-models-{}", uuid::Uuid::new_v4())),
            ..Config::default()
        };
        for consumer in ["bug-triage", "pushes", "api-requests"] {
            let refused = replay_command(&config, 20, Some(consumer))
                .await
                .expect_err("no model scores the bench's messages");
            let refused = refused.to_string();
            assert!(
                refused.contains(&format!("no model scores the {consumer} bench's messages"))
                    && refused.contains("BUGFLOW_MODELS_DIR"),
                "{refused}"
            );
        }
        config.models_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
        replay_command(&config, 20, None)
            .await
            .expect("the shipped models score the bench's messages");
    }
}
