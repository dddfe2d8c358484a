use std::sync::Arc;
use std::time::Duration;

use bugflow::archive::ArchiveLine;
use bugflow::cmd::record::{RecordOptions, record};
use bugflow::cmd::replay::publish_back;

use crate::common::{TestBroker, json_pushes_for, push};

#[tokio::test]
async fn record_taps_an_exchange_and_replay_publish_puts_it_back_for_the_consumer() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let exchange = broker.hgpushes();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("tap.jsonl");

    let recorder = tokio::spawn(record(
        broker.config.clone(),
        RecordOptions {
            bindings: vec![(exchange.clone(), vec!["#".into()])],
            out: archive.clone(),
            limit: Some(3),
            duration: Some(Duration::from_secs(30)),
            enrich: false,
        },
    ));
    // Publish until the recorder's queue is bound and has taken three messages.
    let mut id = 0;
    while !recorder.is_finished() {
        id += 1;
        broker
            .publish(&exchange, "try", &push("try", id, "dev@mozilla.com"))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(id < 200, "the recorder never finished");
    }
    assert_eq!(recorder.await.unwrap().unwrap(), 3);
    let text = std::fs::read_to_string(&archive).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let first = ArchiveLine::parse(lines[0]).unwrap();
    assert_eq!(first.exchange, exchange);
    assert_eq!(first.routing_key, "try");
    assert!(serde_json::from_slice::<serde_json::Value>(&first.body).is_ok());

    // Everything published so far also reached the consumer queue; empty it, then put the
    // recorded three back through the broker.
    let backlog = broker.ready(&spec.queue).await as usize;
    let drained = broker
        .take(&spec.queue, backlog, Duration::from_secs(10))
        .await;
    assert_eq!(drained.len(), backlog);
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());
    let summary = publish_back(Arc::clone(&broker.config), &[archive])
        .await
        .unwrap();
    assert_eq!(summary.published, 3);
    let got = broker.take(&results, 4, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3, "the three recorded pushes, once each");
    running.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_messages_and_exits_cleanly() {
    let mut broker = TestBroker::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("consumers")).unwrap();
    let text = bugflow::consumer::BUILTIN[0]
        .1
        .replace("exchange/hgpushes/v2", "exchange/{user}/hgpushes-v2");
    std::fs::write(dir.path().join("consumers/pushes.toml"), text).unwrap();
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    for id in 1..=200 {
        broker
            .publish(
                &broker.hgpushes(),
                "try",
                &push("try", id, "dev@mozilla.com"),
            )
            .await;
    }

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bugflow"))
        .args(["run", "--no-http"])
        .current_dir(dir.path())
        .env("BUGFLOW_USER", &broker.config.user)
        .env("BUGFLOW_ENV", &broker.config.env)
        .env("BUGFLOW_AMQP__DECLARE_EXCHANGES", "false")
        .stderr(std::process::Stdio::piped())
        // A failing assertion must not leave it running (it would re-declare the queues).
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let got = broker.take(&results, 200, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 200);
    // Keep it busy while it is told to stop.
    for id in 201..=400 {
        broker
            .publish(
                &broker.hgpushes(),
                "try",
                &push("try", id, "dev@mozilla.com"),
            )
            .await;
    }
    let pid = child.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("bugflow stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // Whatever it took, it settled: the rest waits in the queue, nothing is unacked, and
    // every push has exactly one result once a new consumer drains the rest.
    let running = broker.start(spec.clone());
    let mut rest = broker.take(&results, 200, Duration::from_secs(30)).await;
    rest.extend(broker.take(&results, 1, Duration::from_secs(1)).await);
    let mut subjects: Vec<String> = got
        .iter()
        .chain(rest.iter())
        .map(|g| g.json()["subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    let before = subjects.len();
    subjects.dedup();
    assert_eq!(subjects.len(), 400, "every push has a result");
    assert_eq!(
        before, 400,
        "and none twice: in-flight work was settled, not dropped"
    );
    running.stop().await;
    broker.cleanup().await;
}

/// Issue 14: `replay --publish` of an archive with a line whose exchange does not exist
/// counts that line and publishes the rest. (Before: the broker closed the channel on the
/// missing exchange and the whole replay stopped with "broker unavailable".) The binary
/// says so in a warning, not in lapin's ERROR for the probe's closed channel (before: an
/// `ERROR Channel closed … NOT_FOUND` for each missing exchange).
#[tokio::test]
async fn a_publish_replay_counts_lines_whose_exchange_is_missing_and_goes_on() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let exchange = broker.hgpushes();
    let missing = broker.config.resolve("exchange/{user}/never-declared");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("mixed.jsonl");
    let line = |exchange: &str, id: u64| {
        ArchiveLine::from_message(&bugflow::message::Message::new(
            exchange,
            "try",
            push("try", id, "dev@mozilla.com"),
        ))
        .to_line()
    };
    let lines = [
        line(&exchange, 1),
        line(&missing, 2),
        line(&exchange, 3),
        line(&missing, 4),
        line(&exchange, 5),
    ];
    std::fs::write(&archive, lines.join("\n")).unwrap();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        publish_back(Arc::clone(&broker.config), std::slice::from_ref(&archive)),
    )
    .await
    .expect("the replay ends")
    .unwrap();
    assert_eq!(summary.read, 5);
    assert_eq!(summary.published, 3, "{summary:?}");
    assert_eq!(summary.missing_exchange, 2, "{summary:?}");
    assert_eq!(broker.ready(&spec.queue).await, 3);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bugflow"))
        .current_dir(dir.path())
        .args(["replay", "--publish", "--from"])
        .arg(&archive)
        .env("BUGFLOW_USER", &broker.config.user)
        .env("BUGFLOW_ENV", &broker.config.env)
        .env("BUGFLOW_AMQP__URL", broker.config.amqp.url.expose())
        .env("BUGFLOW_AMQP__DECLARE_EXCHANGES", "false")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("archived exchange does not exist"), "{said}");
    assert!(!said.contains("Channel closed"), "{said}");
    assert!(!said.contains("ERROR"), "{said}");
    assert_eq!(broker.ready(&spec.queue).await, 6);
    broker.cleanup().await;
}

/// Issue 14: `record --enrich` stores each push's json-pushes answer with it (fetched from
/// a fake hg.mozilla.org), and `replay --offline` of that archive scores every push from
/// what was stored, with the fake gone.
#[tokio::test]
async fn record_enrich_stores_json_pushes_and_an_offline_replay_needs_nothing_else() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let exchange = broker.hgpushes();
    let hg = MockServer::start().await;
    for id in 1..=300u64 {
        Mock::given(method("GET"))
            .and(path("/try/json-pushes"))
            .and(wiremock::matchers::query_param("endID", id.to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json_pushes_for(id)))
            .mount(&hg)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("consumers")).unwrap();
    let text = bugflow::consumer::BUILTIN[0]
        .1
        .replace("exchange/hgpushes/v2", "exchange/{user}/hgpushes-v2");
    std::fs::write(dir.path().join("consumers/pushes.toml"), text).unwrap();
    let mut config = (*broker.config).clone();
    config.consumers_dir = dir.path().join("consumers");
    config.models_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models").into();
    let host = hg.address().to_string();
    config.hg.allowed_hosts = vec![host.clone()];
    let config = Arc::new(config);
    let body = |id: u64| {
        let base = format!("http://{host}/try");
        serde_json::to_vec(&serde_json::json!({
            "payload": {"type": "changegroup.1", "data": {
                "repo_url": base, "heads": [format!("{:040x}", id)], "source": "push",
                "pushlog_pushes": [{"pushid": id, "time": 1_764_324_000, "user": "dev@mozilla.com",
                    "push_json_url": format!("{base}/json-pushes?version=2&startID={}&endID={id}", id - 1),
                    "push_full_json_url": format!("{base}/json-pushes?version=2&full=1&startID={}&endID={id}", id - 1)}]}},
            "_meta": {}
        }))
        .unwrap()
    };
    let archive = dir.path().join("enriched.jsonl");
    let recorder = tokio::spawn(record(
        config.clone(),
        RecordOptions {
            bindings: vec![(exchange.clone(), vec!["#".into()])],
            out: archive.clone(),
            limit: Some(3),
            duration: Some(Duration::from_secs(30)),
            enrich: true,
        },
    ));
    let mut id = 0;
    while !recorder.is_finished() {
        id += 1;
        broker.publish(&exchange, "try", &body(id)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(id < 300, "the recorder never finished");
    }
    assert_eq!(recorder.await.unwrap().unwrap(), 3);
    drop(hg);
    let text = std::fs::read_to_string(&archive).unwrap();
    for line in text.lines() {
        let stored: serde_json::Value = serde_json::from_str(line).unwrap();
        let answers = stored["enrichment"]["json_pushes"].as_object().unwrap();
        assert_eq!(answers.len(), 1, "{stored}");
    }
    let out = dir.path().join("results.jsonl");
    let pipelines = bugflow::cmd::replay::configured_pipelines(config.clone()).unwrap();
    let summary = crate::replay::replay_offline(&pipelines, archive, &out).await;
    assert_eq!((summary.read, summary.results), (3, 3), "{summary:?}");
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let result: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(result["models"][0]["scored_commits"], 2, "{result}");
    }
    broker.cleanup().await;
}
