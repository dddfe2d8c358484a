//! The result JSON of every consumer on the demo stream, pinned.
//!
//! Each message of `tests/fixtures/demo-stream.jsonl` goes through `dispatch` (the same path
//! as `bugflow run`: pipeline → effects → sinks → settle decision) for every consumer whose
//! bindings match it; bug-triage runs with a store and a dry-run Bugzilla writer, so the
//! actions are pinned too, and the api-requests consumer answers two prediction requests
//! from a fake BMO. What each message became (the result lines written to the JSONL sink,
//! or the skip or dead-letter reason) is compared with `tests/fixtures/golden/results.json`.
//!
//! A change of the result format on purpose: `BUGFLOW_BLESS=1 cargo test --test golden`
//! rewrites the file; the diff then shows exactly what changed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bugflow::archive::ArchiveLine;
use bugflow::clients::bugzilla::Bugzilla;
use bugflow::config::Config;
use bugflow::consumer::{BUILTIN, ConsumerSpec};
use bugflow::dispatch::{Done, Settle, Sinks, Stats, dispatch};
use bugflow::effects::bugzilla::{BugzillaWriter, WriterConfig};
use bugflow::message::Message;
use bugflow::pipeline::Pipeline;
use bugflow::secret::Secret;
use bugflow::sinks::jsonl::JsonlSink;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/golden/results.json"
);

fn spec(name: &str) -> ConsumerSpec {
    let text = BUILTIN.iter().find(|(n, _)| *n == name).unwrap().1;
    ConsumerSpec::parse(name, name, text, &Config::default()).unwrap()
}

/// A dry-run writer that acts on any bug age, so that its plan (not today's date) decides.
fn dry_run_writer(server: &MockServer, store: Arc<bugflow::store::Store>) -> BugzillaWriter {
    BugzillaWriter {
        client: Bugzilla::new(
            &server.uri(),
            Secret::new("golden-key"),
            Duration::from_secs(5),
            Duration::from_secs(3600),
            1,
            8,
        )
        .unwrap(),
        store,
        config: WriterConfig {
            enabled: true,
            dry_run: true,
            max_bug_age_days: 1_000_000,
            component: 0.0,
            general_component: 0.0,
            ..WriterConfig::default()
        },
        consumer: "bug-triage".into(),
    }
}

/// The fake BMO: bug 1388990 for the api-requests consumer (999 does not exist), and the
/// full bug 1629704 for bug-triage.
async fn fake_bmo() -> MockServer {
    let server = MockServer::start().await;
    let sample: Value = serde_json::from_slice(&common::sample(
        "bugbug_bmo_bug_1388990_with_comments_history_attachments.json",
    ))
    .unwrap();
    let bug = sample
        .get("bugs")
        .and_then(|b| b.get(0))
        .cloned()
        .unwrap_or(sample);
    Mock::given(method("GET"))
        .and(path("/rest/bug"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"bugs": [bug]})))
        .mount(&server)
        .await;
    // The full bug behind the webhook samples (bug-triage reads it before scoring).
    let webhook: Value = serde_json::from_slice(&common::sample(
        "bmo_webhook_public_bug_modify_example.json",
    ))
    .unwrap();
    let mut full = webhook["bug"].clone();
    full["creation_time"] = json!("2020-04-20T08:00:00Z");
    full["comments"] = json!([{"text": "The sync button does nothing after the update. Steps to reproduce: click sync.", "count": 0}]);
    full["history"] = json!([]);
    Mock::given(method("GET"))
        .and(path("/rest/bug/1629704"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"bugs": [full]})))
        .mount(&server)
        .await;
    server
}

/// Drops what changes from run to run (the time a result was produced).
fn normalised(mut result: Value) -> Value {
    result["produced_at"] = json!("(time)");
    result
}

async fn pipelines(server: &MockServer) -> (Vec<Pipeline>, tempfile::TempDir) {
    let (store, dir) = common::temp_store().await;
    let models = common::shipped_models();
    let hg = bugflow::cmd::demo::bundled_hg();
    let client = Bugzilla::new(
        &server.uri(),
        Secret::new(""),
        Duration::from_secs(5),
        Duration::from_secs(3600),
        1,
        8,
    )
    .unwrap();
    let all = vec![
        Pipeline::new(spec("pushes"), models.clone()).with_hg(hg.clone()),
        Pipeline::new(spec("landings"), models.clone()).with_hg(hg.clone()),
        Pipeline::new(spec("bug-triage"), models.clone())
            .with_store(store.clone())
            .with_bugzilla(client.clone())
            .with_writer(dry_run_writer(server, store.clone())),
        Pipeline::new(spec("api-requests"), models)
            .with_store(store)
            .with_bugzilla(client)
            .with_hg(hg),
    ];
    (all, dir)
}

/// The demo stream, then two prediction requests for the api-requests consumer.
fn stream() -> Vec<Message> {
    let mut messages: Vec<Message> = bugflow::cmd::demo::DEMO_STREAM
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| ArchiveLine::parse(l).expect("a demo line parses"))
        .collect();
    let requests = "exchange/bugflow/bugflow-requests";
    for (key, body) in [
        (
            "predict.defectenhancementtask",
            json!({"request": "bugs", "model": "defectenhancementtask", "bugs": [1388990, 999]}),
        ),
        (
            "predict.spambug",
            json!({"request": "bugs", "model": "spambug", "bugs": [1388990]}),
        ),
        (
            "push.risk",
            json!({"request": "push-risk", "branch": "integration/autoland", "rev": "5fb1d9a0e1ce"}),
        ),
    ] {
        messages.push(Message::new(
            requests,
            key,
            serde_json::to_vec(&body).unwrap(),
        ));
    }
    for m in &mut messages {
        m.received_at = "2026-11-28T10:00:00Z".parse().unwrap();
    }
    messages
}

async fn outcomes() -> Value {
    let server = fake_bmo().await;
    let (pipelines, dir) = pipelines(&server).await;
    let stats = Arc::new(Stats::default());
    let mut seen = Vec::new();
    for (i, message) in stream().iter().enumerate() {
        for pipeline in pipelines
            .iter()
            .filter(|p| p.spec().accepts(&message.exchange, &message.routing_key))
        {
            let out = dir.path().join(format!("{i}-{}.jsonl", pipeline.name()));
            let sinks = Sinks {
                jsonl: Some(JsonlSink::open(&out).await.unwrap()),
                ..Sinks::default()
            };
            let settle = dispatch(pipeline, &sinks, &stats, message).await;
            let written = std::fs::read_to_string(&out).unwrap_or_default();
            let results: Vec<Value> = written
                .lines()
                .map(|l| normalised(serde_json::from_str(l).unwrap()))
                .collect();
            let became = match settle {
                Settle::Ack(Done::Published(_)) => json!({"results": results}),
                Settle::Ack(Done::Skipped(reason)) => json!({"skipped": reason}),
                Settle::Ack(Done::DeadLettered(reason)) => json!({"dead_lettered": reason}),
                Settle::Ack(Done::Retrying(reason)) => json!({"retrying": reason}),
                Settle::Requeue(reason) => json!({"requeued": reason}),
                Settle::Halt(reason) => json!({"halted": reason}),
                Settle::Reject(reason) => json!({"rejected": reason}),
            };
            seen.push(json!({
                "line": i + 1,
                "routing_key": message.routing_key,
                "consumer": pipeline.name(),
                "became": became,
            }));
        }
    }
    Value::Array(seen)
}

#[tokio::test]
async fn every_consumer_gives_the_pinned_result_json_on_the_demo_stream() {
    let got = outcomes().await;
    let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
    if std::env::var_os("BUGFLOW_BLESS").is_some() {
        std::fs::create_dir_all(Path::new(GOLDEN).parent().unwrap()).unwrap();
        std::fs::write(GOLDEN, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(GOLDEN)
        .expect("tests/fixtures/golden/results.json (BUGFLOW_BLESS=1 writes it)");
    let want: Value = serde_json::from_str(&want).unwrap();
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            g, w,
            "line {} through {}: the result JSON changed",
            w["line"], w["consumer"]
        );
    }
    assert_eq!(got.len(), want.len(), "as many outcomes as pinned");
}
