//! Shared by the broker tests: a unique namespace per test on the real RabbitMQ, helpers to
//! publish, read and count, and clean-up of everything the test declared.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bugflow::config::Config;
use bugflow::consumer::{BUILTIN, ConsumerSpec};
use bugflow::dispatch::Stats;
use bugflow::models::registry::ModelSet;
use bugflow::pipeline::Pipeline;
use bugflow::pulse::connect::connect;
use bugflow::pulse::publish::Publisher;
use bugflow::pulse::source::headers_to_json;
use bugflow::pulse::topology::{declare_bound_queue, declare_consumer, declare_shared};
use bugflow::runner::Runner;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pulse");

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SAMPLES}/{name}")).expect("fixture exists")
}

/// A message read back from a queue.
#[derive(Debug, Clone)]
pub struct Got {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, Value>,
    pub message_id: Option<String>,
    pub content_type: Option<String>,
    pub delivery_mode: Option<u8>,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub struct TestBroker {
    pub config: Arc<Config>,
    pub connection: Connection,
    pub channel: Channel,
    /// Deleted at clean-up (or when dropped by a failing test).
    queues: std::sync::Mutex<Vec<String>>,
    exchanges: Vec<String>,
}

/// A running consumer.
pub struct Running {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<Stats>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the runner stops within 30 s")
            .expect("the runner task does not panic")
            .expect("the runner ends without error");
    }
}

impl TestBroker {
    /// A fresh namespace `t<random>` on the broker at `BUGFLOW_TEST_AMQP_URL` (default
    /// guest@127.0.0.1:5672).
    pub async fn new() -> TestBroker {
        bugflow::init_tls();
        let mut config = Config {
            user: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            env: "test".into(),
            ..Config::default()
        };
        if let Ok(url) = std::env::var("BUGFLOW_TEST_AMQP_URL") {
            config.amqp.url = bugflow::secret::Secret::new(url);
        }
        // Exchanges under exchange/<user>/ are ours and declared; any other is checked
        // passively, as on Pulse.
        config.amqp.declare_exchanges = false;
        // A transient failure is tried once more, a second later, then dead-lettered.
        config.amqp.retry_attempts = 2;
        config.amqp.retry_delay_seconds = 1;
        let connection = connect(&config, "test").await.expect(
            "RabbitMQ must answer on 127.0.0.1:5672 (start it with `rabbitmq-server -detached`)",
        );
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let config = Arc::new(config);
        declare_shared(&channel, &config).await.unwrap();
        let exchanges = vec![
            config.results_exchange(),
            config.dead_letter_exchange(),
            config.bugzilla_exchange(),
            config.requests_exchange(),
            config.retry_exchange(),
            config.resolve("exchange/{user}/hgpushes-v2"),
        ];
        let queues = std::sync::Mutex::new(vec![config.dead_letter_queue()]);
        TestBroker {
            config,
            connection,
            channel,
            queues,
            exchanges,
        }
    }

    /// The test's stand-in for `exchange/hgpushes/v2`.
    pub fn hgpushes(&self) -> String {
        self.config.resolve("exchange/{user}/hgpushes-v2")
    }

    /// A shipped consumer, with `exchange/hgpushes/v2` replaced by the test's exchange.
    pub fn spec(&mut self, name: &str) -> ConsumerSpec {
        let text = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a built-in consumer")
            .1
            .replace("exchange/hgpushes/v2", "exchange/{user}/hgpushes-v2");
        let spec = ConsumerSpec::parse(name, name, &text, &self.config).unwrap();
        self.queues.lock().unwrap().extend([
            spec.queue.clone(),
            bugflow::pulse::topology::retry_queue(&spec),
        ]);
        spec
    }

    /// Declares a consumer's queue and bindings (as its first start would).
    pub async fn declare(&self, spec: &ConsumerSpec) {
        self.queues.lock().unwrap().extend([
            spec.queue.clone(),
            bugflow::pulse::topology::retry_queue(spec),
        ]);
        declare_consumer(&self.connection, &self.channel, &self.config, spec)
            .await
            .unwrap();
    }

    /// A queue that collects every result.
    pub async fn results_queue(&mut self) -> String {
        let queue = self.config.resolve("queue/{user}/test-results");
        self.bind_queue(&queue, &self.config.results_exchange(), "#")
            .await;
        queue
    }

    pub async fn bind_queue(&mut self, queue: &str, exchange: &str, key: &str) {
        declare_bound_queue(&self.channel, queue, exchange, key)
            .await
            .unwrap();
        self.queues.lock().unwrap().push(queue.to_owned());
    }

    /// Starts a consumer in this process, as `bugflow run` would (without models).
    pub fn start(&self, spec: ConsumerSpec) -> Running {
        self.start_pipeline(Pipeline::new(spec, ModelSet::empty()))
    }

    /// Starts a consumer with the given pipeline.
    pub fn start_pipeline(&self, pipeline: Pipeline) -> Running {
        self.start_with(self.config.clone(), pipeline)
    }

    /// Starts a consumer with the given pipeline and configuration (its retry settings).
    pub fn start_with(&self, config: Arc<Config>, pipeline: Pipeline) -> Running {
        let spec = pipeline.spec().clone();
        let publisher = Publisher::new(config.clone());
        let sinks = bugflow::app::sinks_for(&config, &spec, &publisher, None);
        let stop = CancellationToken::new();
        let runner = Runner::new(config, Arc::new(pipeline), sinks, stop.clone());
        let stats = runner.stats();
        let task = tokio::spawn(async move {
            let result = runner.run().await;
            publisher.close().await;
            result
        });
        Running { stop, task, stats }
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Reads (and acks) up to `n` messages, waiting at most `within`.
    pub async fn take(&self, queue: &str, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            match self
                .channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .unwrap()
            {
                Some(message) => {
                    let props = &message.delivery.properties;
                    got.push(Got {
                        routing_key: message.delivery.routing_key.to_string(),
                        body: message.delivery.data.clone(),
                        headers: props
                            .headers()
                            .as_ref()
                            .map(headers_to_json)
                            .unwrap_or_default(),
                        message_id: props.message_id().as_ref().map(|s| s.to_string()),
                        content_type: props.content_type().as_ref().map(|s| s.to_string()),
                        delivery_mode: *props.delivery_mode(),
                    });
                    message
                        .delivery
                        .ack(BasicAckOptions::default())
                        .await
                        .unwrap();
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        got
    }

    /// Messages ready in a queue.
    pub async fn ready(&self, queue: &str) -> u32 {
        bugflow::pulse::depth::ready(&self.connection, queue)
            .await
            .unwrap_or_else(|| panic!("queue {queue} exists"))
    }

    /// Waits until `check` holds, or panics with `what` after `within`.
    pub async fn eventually(&self, within: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The same namespace on a new connection (after chaos closed the first one).
    pub async fn reconnect(other: &TestBroker) -> TestBroker {
        let connection = connect(&other.config, "test-reader").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        TestBroker {
            config: other.config.clone(),
            connection,
            channel,
            queues: Default::default(),
            exchanges: Vec::new(),
        }
    }

    /// Deletes `queues` and `exchanges` at clean-up too (names a test declared itself).
    pub fn track(&mut self, queues: &[String], exchanges: &[String]) {
        self.queues.lock().unwrap().extend(queues.iter().cloned());
        self.exchanges.extend(exchanges.iter().cloned());
    }

    /// Cleans up `other`'s names through this connection.
    pub async fn cleanup_with(mut self, mut other: TestBroker) {
        let theirs = std::mem::take(&mut *other.queues.lock().unwrap());
        self.queues.lock().unwrap().extend(theirs);
        self.exchanges.extend(std::mem::take(&mut other.exchanges));
        self.cleanup().await;
    }

    /// Deletes every queue and exchange the test declared.
    pub async fn cleanup(mut self) {
        let (queues, exchanges) = (
            std::mem::take(&mut *self.queues.lock().unwrap()),
            std::mem::take(&mut self.exchanges),
        );
        delete_all(&self.config, &queues, &exchanges).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

async fn delete_all(config: &Config, queues: &[String], exchanges: &[String]) {
    let Ok(connection) = connect(config, "test-cleanup").await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in exchanges {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "cleanup".into()).await;
}

/// A test that fails (panics) before its `cleanup` still deletes what it declared: on a
/// thread of its own, with a runtime of its own, since drop cannot await.
impl Drop for TestBroker {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|p| p.into_inner()));
        if queues.is_empty() && self.exchanges.is_empty() {
            return;
        }
        let (config, exchanges) = (self.config.clone(), std::mem::take(&mut self.exchanges));
        let cleaning = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(delete_all(&config, &queues, &exchanges));
            }
        });
        let _ = cleaning.join();
    }
}

/// An hg push (v2 `changegroup.1`) to `repo` with push id `pushid`.
pub fn push(repo: &str, pushid: u64, user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "payload": {"type": "changegroup.1", "data": {
            "repo_url": format!("https://hg.mozilla.org/{repo}"),
            "heads": [format!("{:040x}", pushid as u128 * 7919 + 13)],
            "pushlog_pushes": [{"pushid": pushid, "time": 1_764_324_000 + pushid as i64, "user": user,
                "push_json_url": format!("https://hg.mozilla.org/{repo}/json-pushes?version=2&startID={}&endID={pushid}", pushid.saturating_sub(1)),
                "push_full_json_url": format!("https://hg.mozilla.org/{repo}/json-pushes?version=2&full=1&startID={}&endID={pushid}", pushid.saturating_sub(1))}],
            "source": "push"}},
        "_meta": {"exchange": "exchange/hgpushes/v2", "routing_key": repo, "serializer": "json", "sent": "2026-11-28T10:00:00"}
    }))
    .unwrap()
}

/// bugflow's HTTP side for `config` on a free port of 127.0.0.1: its base URL, and the
/// token that stops it.
pub async fn serve_http(config: Arc<Config>) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let state =
        bugflow::http::AppState::new(config.clone(), Publisher::new(config).with_attempts(2));
    let token = stop.clone();
    tokio::spawn(async move { bugflow::http::serve(listener, state, token).await });
    (base, stop)
}

/// A SQLite store in a fresh temporary folder (kept alive by the returned guard).
pub async fn temp_store() -> (Arc<bugflow::store::Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let store = bugflow::store::Store::open(path.to_str().unwrap())
        .await
        .unwrap();
    (Arc::new(store), dir)
}

/// The serving bundles shipped in `models/`.
pub fn shipped_models() -> Arc<ModelSet> {
    ModelSet::load(bugflow::models::registry::Registry::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models"
    )))
    .unwrap()
}

/// `rabbitmqctl close_all_connections`: every connection on the broker, the test's own too.
pub async fn close_all_connections() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["close_all_connections", "bugflow fault test"])
            .output()
            .expect("rabbitmqctl is installed with RabbitMQ")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A model added to the catalogue by a file, as a user adds one: `name` is the shipped
/// model `based_on` made to learn from the 58 fixture bugs (a class needs 2 records, not
/// 50; the gate asks 1 test record per class). `name` = `based_on` replaces the shipped
/// entry in this test binary.
pub fn fixture_model(name: &str, based_on: &str) -> bugflow::models::ModelKind {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("models/catalogue/{based_on}.toml"));
    let text = std::fs::read_to_string(shipped).unwrap();
    let mut spec: toml::Table = toml::from_str(&text).unwrap();
    spec.insert("name".into(), name.into());
    spec.insert("min_class_records".into(), 2.into());
    spec.remove("untrained");
    if name != based_on {
        spec.remove("aliases");
    }
    let mut gate = toml::Table::new();
    gate.insert("min_test_support".into(), 1.into());
    gate.insert("max_ece_increase".into(), 1.0.into());
    spec.insert("gate".into(), gate.into());
    std::fs::write(
        dir.path().join(format!("{name}.toml")),
        toml::to_string(&spec).unwrap(),
    )
    .unwrap();
    bugflow::models::catalogue::load_dir(dir.path()).unwrap();
    bugflow::models::ModelKind::parse(name).unwrap()
}

/// A models folder of the shipped bundles with their writer thresholds taken out (made once
/// per test binary; weights are linked, not copied). The writer then acts at the
/// configuration's thresholds alone, which the writer tests set to 0 so that every event
/// writes: they test how a write happens, not when a model may write.
pub fn models_dir_without_writer_thresholds() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let root = std::env::temp_dir().join(format!(
            "bugflow-test-models-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        for model in std::fs::read_dir(&shipped).unwrap().flatten() {
            let history = model.path().join("history.json");
            if !history.exists() {
                continue;
            }
            let into = root.join(model.file_name());
            std::fs::create_dir_all(&into).unwrap();
            std::fs::copy(&history, into.join("history.json")).unwrap();
            for bundle in std::fs::read_dir(model.path()).unwrap().flatten() {
                let manifest = bundle.path().join("manifest.json");
                if !manifest.exists() {
                    continue;
                }
                let to = into.join(bundle.file_name());
                std::fs::create_dir_all(&to).unwrap();
                let mut m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
                if let Some(m) = m.as_object_mut() {
                    m.remove("writer");
                }
                std::fs::write(to.join("manifest.json"), m.to_string()).unwrap();
                std::os::unix::fs::symlink(
                    bundle.path().join("weights.json"),
                    to.join("weights.json"),
                )
                .unwrap();
            }
        }
        root
    })
    .clone()
}

/// [`shipped_models`] without their writer thresholds (see
/// [`models_dir_without_writer_thresholds`]).
pub fn models_writing_at_configured_thresholds() -> Arc<ModelSet> {
    ModelSet::load(bugflow::models::registry::Registry::new(
        models_dir_without_writer_thresholds(),
    ))
    .unwrap()
}

/// A json-pushes v2 answer (the real one of `treeherder_hg_json_pushes_v2_full_response`)
/// for push `pushid`.
pub fn json_pushes_for(pushid: u64) -> serde_json::Value {
    let text = include_str!("../fixtures/pulse/treeherder_hg_json_pushes_v2_full_response.json");
    let real: serde_json::Value = serde_json::from_str(text).unwrap();
    let push = real["pushes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    serde_json::json!({"lastpushid": pushid, "pushes": {pushid.to_string(): push}})
}

/// Every `Product::Component` of the shipped Bugzilla data (the 1,014 full bugs and the
/// 8,000 Firefox bugs): a predicted component must be one of them.
pub fn real_components() -> std::collections::BTreeSet<String> {
    use std::io::BufRead;
    let mut real = std::collections::BTreeSet::new();
    for file in [
        "bugs-2009-2018-full.jsonl.zst",
        "firefox-open-bugs-2022.jsonl.zst",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/data/bugzilla")
            .join(file);
        for line in bugflow::train::data::open(&path).unwrap().lines() {
            let bug: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            real.insert(format!(
                "{}::{}",
                bug["product"].as_str().unwrap_or_default(),
                bug["component"].as_str().unwrap_or_default()
            ));
        }
    }
    real
}

/// A models folder holding the shipped bundles of `models` (history and manifests copied,
/// weights linked): a test may train, shadow and promote in it without touching `models/`.
pub fn linked_models(models: &[&str]) -> tempfile::TempDir {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let root = tempfile::tempdir().unwrap();
    for model in models {
        let from = shipped.join(model);
        let into = root.path().join(model);
        std::fs::create_dir_all(&into).unwrap();
        std::fs::copy(from.join("history.json"), into.join("history.json")).unwrap();
        for bundle in std::fs::read_dir(&from).unwrap().flatten() {
            if !bundle.path().join("manifest.json").exists() {
                continue;
            }
            let to = into.join(bundle.file_name());
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(
                bundle.path().join("manifest.json"),
                to.join("manifest.json"),
            )
            .unwrap();
            std::os::unix::fs::symlink(bundle.path().join("weights.json"), to.join("weights.json"))
                .unwrap();
        }
    }
    root
}

/// The newest `n` bugs (by id) of the 8,000 Firefox bugs of 2022: both shipped bug models
/// held them out of training (the newest 20% by id are their test part).
pub fn newest_firefox_bugs(n: usize) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/bugzilla/firefox-open-bugs-2022.jsonl.zst");
    let mut bugs: Vec<serde_json::Value> = bugflow::train::data::open(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    bugs.sort_by_key(|b| std::cmp::Reverse(b["id"].as_u64().unwrap()));
    bugs.truncate(n);
    bugs
}
