use std::path::Path;
use std::time::Duration;

use bugflow::models::ModelKind;
use bugflow::models::registry::{ModelSet, Registry};
use bugflow::pipeline::Pipeline;
use bugflow::train::{TrainOptions, train};
use tokio_util::sync::CancellationToken;

use crate::common::{TestBroker, sample};

fn options(out: &Path, seed: u64) -> TrainOptions {
    TrainOptions {
        files: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data/bugs.jsonl")],
        out: out.to_path_buf(),
        split: None,
        seed,
        test_fraction: None,
        force: true,
        shadow: false,
        progress: false,
        export: None,
    }
}

fn bugtype_version(result: &serde_json::Value) -> String {
    result["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "bugtype")
        .and_then(|m| m["version"].as_str())
        .expect("a bugtype prediction with its version")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_consumer_switches_bundles_on_promote_rollback_and_shadow() {
    let dir = tempfile::tempdir().unwrap();
    // bugtype, made to learn from the 58 fixture bugs.
    crate::common::fixture_model("bugtype", "bugtype");
    let first = train(ModelKind::BUGTYPE, &options(dir.path(), 1))
        .unwrap()
        .manifest
        .version;
    let second = train(ModelKind::BUGTYPE, &options(dir.path(), 2))
        .unwrap()
        .manifest
        .version;
    let registry = Registry::new(dir.path());
    let models = ModelSet::load(registry.clone()).unwrap();
    let stop_watch = CancellationToken::new();
    tokio::spawn(
        models
            .clone()
            .watch(Duration::from_millis(100), stop_watch.clone()),
    );

    let mut broker = TestBroker::new().await;
    let spec = broker.spec("bug-triage");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start_pipeline(Pipeline::new(spec, models.clone()));
    let exchange = broker.config.bugzilla_exchange();
    let event = |time: &str| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample("bmo_webhook_public_bug_modify_example.json")).unwrap();
        v["event"]["time"] = time.into();
        serde_json::to_vec(&v).unwrap()
    };

    broker
        .publish(
            &exchange,
            "bug.modify:priority",
            &event("2026-11-28T10:00:00"),
        )
        .await;
    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(
        bugtype_version(&got[0].json()),
        second,
        "the newest bundle serves"
    );

    registry.rollback(ModelKind::BUGTYPE, "test").unwrap();
    let set = models.clone();
    broker
        .eventually(
            Duration::from_secs(10),
            "the rollback reaches the running consumer",
            || set.versions().get(&ModelKind::BUGTYPE) == Some(&first),
        )
        .await;
    broker
        .publish(
            &exchange,
            "bug.modify:priority",
            &event("2026-11-28T10:05:00"),
        )
        .await;
    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(
        bugtype_version(&got[0].json()),
        first,
        "the rolled-back bundle serves, no restart"
    );

    // Issue 16: the other bundle shadows it. The running consumer loads it, scores each bug
    // with both, and publishes the shadow's result on its own routing key.
    registry.shadow(ModelKind::BUGTYPE, &second).unwrap();
    let set = models.clone();
    broker
        .eventually(
            Duration::from_secs(10),
            "the shadow reaches the running consumer",
            || {
                set.shadow(ModelKind::BUGTYPE)
                    .map(|b| b.manifest.version.clone())
                    == Some(second.clone())
            },
        )
        .await;
    broker
        .publish(
            &exchange,
            "bug.modify:priority",
            &event("2026-11-28T10:10:00"),
        )
        .await;
    let mut got = broker.take(&results, 2, Duration::from_secs(20)).await;
    got.sort_by(|a, b| a.routing_key.cmp(&b.routing_key));
    let keys: Vec<&str> = got.iter().map(|g| g.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        ["bug-triage.bug.1629704", "bug-triage.shadow.1629704"]
    );
    assert_eq!(bugtype_version(&got[0].json()), first, "the serving result");
    let shadow = got[1].json();
    assert_eq!(bugtype_version(&shadow), second, "the shadow's result");
    assert_eq!(shadow["kind"], "shadow");
    assert_eq!(shadow["actions"], serde_json::json!([]));

    // Stopped, it is gone from the next event.
    registry.stop_shadow(ModelKind::BUGTYPE, "test").unwrap();
    let set = models.clone();
    broker
        .eventually(Duration::from_secs(10), "the shadow stops", || {
            set.shadow(ModelKind::BUGTYPE).is_none()
        })
        .await;
    broker
        .publish(
            &exchange,
            "bug.modify:priority",
            &event("2026-11-28T10:15:00"),
        )
        .await;
    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(got[0].routing_key, "bug-triage.bug.1629704");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(broker.ready(&results).await, 0, "no shadow result");

    stop_watch.cancel();
    running.stop().await;
    broker.cleanup().await;
}
