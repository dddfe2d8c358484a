//! The dashboard of a running bugflow, fed with sample messages, loaded in headless
//! Chromium (Debian's `chromium`; `scripts/test` installs it when missing). The test reads
//! the page as the browser rendered it (after its scripts ran) and saves a screenshot to
//! `target/dashboard.png`; the API page (`/doc`) likewise, to `target/doc.png`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bugflow::clients::hg;
use bugflow::http::{AppState, serve};
use bugflow::pipeline::Pipeline;
use bugflow::pulse::publish::Publisher;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::{TestBroker, push, sample};

fn chromium() -> PathBuf {
    let path = std::env::var("BUGFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (apt-get install -y chromium) or set BUGFLOW_CHROMIUM; scripts/test does it",
        path.display()
    );
    path
}

/// Headless Chromium with the flags a closed network needs, and a fresh profile.
fn browser(profile: &std::path::Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Let the page's scripts fetch and render before the DOM is read.
        "--virtual-time-budget=8000",
        "--window-size=1400,1300",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The DOM of `url` as Chromium rendered it, after the page's scripts ran.
async fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let mut cmd = browser(profile.path());
        cmd.arg("--dump-dom").arg(url);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !dom.is_empty(),
        "{} failed on {url}: {}",
        chromium().display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// Saves Chromium's screenshot of `url` to `target/<name>`, and checks it is a real image.
async fn screenshot(url: &str, name: &str) {
    let shot = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).join(name);
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let status = tokio::task::spawn_blocking({
        let mut cmd = browser(profile.path());
        cmd.arg(format!("--screenshot={}", shot.display())).arg(url);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "the screenshot is {size} bytes");
    println!("screenshot of {url}: {} ({size} bytes)", shot.display());
}

#[tokio::test]
async fn the_dashboard_shows_the_stream_in_a_browser() {
    // Fail at once, before any set-up, when the browser is missing.
    chromium();
    let mut broker = TestBroker::new().await;
    let models = crate::common::shipped_models();

    // Landings scored from a bundled json-pushes answer; bug triage from webhook events.
    let landings = broker.spec("landings");
    let triage = broker.spec("bug-triage");
    broker.declare(&landings).await;
    broker.declare(&triage).await;
    let url = "https://hg.mozilla.org/mozilla-central/json-pushes?version=2&full=1&startID=136597&endID=136598";
    let bundled = hg::Source::Bundled(Arc::new(BTreeMap::from([(
        url.to_owned(),
        String::from_utf8(sample("treeherder_hg_json_pushes_v2_full_response.json")).unwrap(),
    )])));
    // One store, as workers and the web side share it: dead letters are read from there.
    let (store, _dir) = crate::common::temp_store().await;
    let running = [
        broker.start_pipeline(
            Pipeline::new(landings.clone(), models.clone())
                .with_hg(bundled)
                .with_store(store.clone()),
        ),
        broker.start_pipeline(
            Pipeline::new(triage.clone(), models.clone()).with_store(store.clone()),
        ),
    ];

    // The web side, with its monitor following the results and dead letters.
    let stop = CancellationToken::new();
    let mut state = AppState::new(
        broker.config.clone(),
        Publisher::new(broker.config.clone()).with_attempts(2),
    );
    state.models = models;
    state.store = Some(store);
    state.prometheus = bugflow::telemetry::prometheus();
    let monitor = state.monitor.clone();
    tokio::spawn(monitor.follow(broker.config.clone(), vec![landings, triage], stop.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let token = stop.clone();
    tokio::spawn(async move { serve(listener, state, token).await });
    let client = reqwest::Client::new();
    let data = || async {
        client
            .get(format!("{base}/api/dashboard"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while data().await["broker_connected"] != true {
        assert!(Instant::now() < deadline, "the dashboard never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The sample stream: 3 landings, 2 bug events, 1 message that is not a push.
    for user in ["a@mozilla.com", "b@mozilla.com", "c@mozilla.com"] {
        broker
            .publish(
                &broker.hgpushes(),
                "mozilla-central",
                &push("mozilla-central", 136598, user),
            )
            .await;
    }
    let bugs = broker.config.bugzilla_exchange();
    broker
        .publish(
            &bugs,
            "bug.modify:priority",
            &sample("bmo_webhook_public_bug_modify_example.json"),
        )
        .await;
    broker
        .publish(
            &bugs,
            "comment.create",
            &sample("bmo_webhook_comment_create_example.json"),
        )
        .await;
    broker
        .publish(&broker.hgpushes(), "mozilla-central", b"{\"payload\": 42}")
        .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        let d = data().await;
        if d["total_results"] == 5 && d["dead_letters"]["seen"] == 1 {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard did not see the stream: {d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !snapshot["components"].as_array().unwrap().is_empty(),
        "{snapshot}"
    );
    let component = snapshot["components"][0]["component"]
        .as_str()
        .unwrap()
        .to_owned();

    // /metrics, in Prometheus' text format, per consumer.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Other tests of this binary may count too (one recorder per process): at least.
    for (series, at_least) in [
        (
            r#"bugflow_messages_received_total{consumer="landings"}"#,
            4.0,
        ),
        (
            r#"bugflow_messages_acked_total{consumer="bug-triage"}"#,
            2.0,
        ),
        (
            r#"bugflow_messages_dead_lettered_total{consumer="landings",stage="decode"}"#,
            1.0,
        ),
        (
            r#"bugflow_stage_seconds_bucket{consumer="landings",stage="process",le="+Inf"}"#,
            4.0,
        ),
        (r#"bugflow_queue_messages{consumer="landings"}"#, 0.0),
    ] {
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= at_least),
            "{series} is {value:?}, expected at least {at_least}, in:\n{metrics}"
        );
    }

    // The page as Chromium renders it.
    let dom = dump_dom(&format!("{base}/")).await;
    assert!(
        dom.contains(r#"<div class="n" id="total-results">5</div>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<div class="n" id="dead-letters">1</div>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<td data-consumer="landings">landings</td><td class="num">3</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<td data-consumer="bug-triage">bug-triage</td><td class="num">2</td>"#),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<td>{component}</td>")),
        "no component {component}: {dom}"
    );
    assert!(
        dom.contains("show_bug.cgi?id=1629704"),
        "no link to the bug: {dom}"
    );
    assert!(
        dom.contains("pushloghtml?startID=136597&amp;endID=136598"),
        "no link to the push: {dom}"
    );
    assert!(dom.contains("commit-risk"), "{dom}");
    assert!(dom.contains("<td>bugtype</td>"), "no model row: {dom}");
    assert!(dom.contains("broker connected"), "{dom}");

    // And a screenshot, for people.
    screenshot(&format!("{base}/"), "dashboard.png").await;

    stop.cancel();
    for r in running {
        r.stop().await;
    }
    broker.cleanup().await;
}

/// `/doc`, bugbug's API page: the OpenAPI document rendered by the page's own script, no CDN
/// (issue 15; before, `/doc` was a 404). Every operation of the document shows, with its
/// parameters and responses, and a screenshot goes to `target/doc.png`.
#[tokio::test]
async fn the_api_page_renders_the_openapi_document_in_a_browser() {
    let broker = TestBroker::new().await;
    let state = AppState::new(
        broker.config.clone(),
        Publisher::new(broker.config.clone()).with_attempts(1),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { serve(listener, state, token).await });

    let dom = dump_dom(&format!("{base}/doc")).await;
    let doc: Value = serde_json::from_str(bugflow::http::health::OPENAPI).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        dom.contains(&format!(r#"data-operations="{operations}""#)),
        "not every operation rendered: {dom}"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                dom.contains(&format!(r#"id="{method}-{path}""#)),
                "{method} {path} is missing: {dom}"
            );
        }
    }
    assert!(dom.contains("bugflow API 0.1.0"), "{dom}");
    assert!(
        dom.contains("defectenhancementtask"),
        "the model enum: {dom}"
    );
    assert!(dom.contains(r#"data-status="503""#), "{dom}");
    assert!(
        dom.contains(r#"<p id="error"></p>"#),
        "the page says an error: {dom}"
    );

    screenshot(&format!("{base}/doc"), "doc.png").await;

    stop.cancel();
    broker.cleanup().await;
}

/// Issue 16: the dashboard's live chart, from a store where people labelled bugtype's
/// predictions over four weeks, and one week whose predictions are all `task` (drift).
#[tokio::test]
async fn the_dashboard_draws_live_accuracy_and_drift_in_a_browser() {
    use bugflow::models::ModelKind;
    use bugflow::models::live;
    use bugflow::models::registry::Registry;
    use bugflow::store::{Predicted, Role};

    let broker = TestBroker::new().await;
    let (store, _dir) = crate::common::temp_store().await;
    let registry = Registry::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let serving = registry.current(ModelKind::BUGTYPE).unwrap().unwrap();
    let version = serving.manifest.version.clone();
    // Ordinary weeks predict the classes in the test set's shares, at its mean confidence:
    // no drift. The week one week ago says `task` every time: drift.
    let reference = live::reference(&serving.manifest);
    let confidence = reference.mean_confidence.unwrap();
    let class_at = |i: u64| -> String {
        let q = (i as f64 + 0.5) / 60.0;
        let mut sum = 0.0;
        for (class, share) in &reference.class_share {
            sum += share;
            if q < sum {
                return class.clone();
            }
        }
        reference.class_share.keys().last().unwrap().clone()
    };
    let now = chrono::Utc::now();
    let mut bug = 1_000_000u64;
    for weeks_ago in (0..4i64).rev() {
        let at = now - chrono::Duration::weeks(weeks_ago) - chrono::Duration::hours(1);
        let drifted = weeks_ago == 1;
        for i in 0..60u64 {
            bug += 1;
            let class = if drifted {
                "task".to_owned()
            } else {
                class_at(i)
            };
            // People agree three times in four.
            let truth = if i % 4 == 0 {
                "enhancement".to_owned()
            } else {
                class.clone()
            };
            let predicted = Predicted {
                bug_id: bug,
                model: "bugtype",
                version: &version,
                role: Role::Serving,
                class: &class,
                confidence,
                at: &at.to_rfc3339(),
            };
            store.record_prediction(&predicted).await.unwrap();
            if i % 3 == 0 {
                let labelled = (at + chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:%S");
                store
                    .harvest(
                        bug,
                        "bugtype",
                        &truth,
                        "triager@mozilla.com",
                        &labelled.to_string(),
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let report = live::report(&store, &registry, live::WEEKS).await.unwrap();
    let bugtype = report
        .models
        .iter()
        .find(|m| m.model == ModelKind::BUGTYPE)
        .unwrap();
    assert_eq!(bugtype.weeks.len(), 4, "{bugtype:?}");
    assert!(bugtype.weeks.iter().all(|w| w.scores.labels == 20));
    let drifted: Vec<&str> = bugtype
        .drift
        .iter()
        .filter(|d| !d.warnings.is_empty())
        .map(|d| d.week.as_str())
        .collect();
    assert_eq!(
        drifted,
        vec![bugtype.drift[2].week.as_str()],
        "{:?}",
        bugtype.drift
    );
    // The same numbers, as Prometheus scrapes them.
    let prometheus = bugflow::telemetry::prometheus().expect("a Prometheus recorder");
    live::export(&report);
    let scraped = prometheus.render();
    let week = &bugtype.weeks[0];
    let gauge = format!(
        r#"bugflow_live_labels{{model="bugtype",week="{}"}} 20"#,
        week.week
    );
    assert!(scraped.contains(&gauge), "{gauge} in {scraped}");
    let shift = format!(
        r#"bugflow_drift_class_shift{{model="bugtype",week="{}"}}"#,
        drifted[0]
    );
    assert!(scraped.contains(&shift), "{shift} in {scraped}");
    assert!(
        scraped.contains(r#"bugflow_drift_warning{model="bugtype"}"#),
        "{scraped}"
    );

    let mut state = AppState::new(
        broker.config.clone(),
        Publisher::new(broker.config.clone()).with_attempts(1),
    );
    state.store = Some(store.clone());
    state.live = Arc::new(std::sync::RwLock::new(report.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { serve(listener, state, token).await });

    let dom = dump_dom(&format!("{base}/")).await;
    assert!(
        dom.contains(r#"data-model="bugtype" data-weeks="4""#),
        "no bugtype chart of four weeks: {dom}"
    );
    assert_eq!(dom.matches(r#"data-series="macro_f1""#).count(), 4, "{dom}");
    assert_eq!(dom.matches(r#"data-series="ece""#).count(), 4, "{dom}");
    assert_eq!(
        dom.matches(r#"class="drift""#).count(),
        1,
        "one drift mark: {dom}"
    );
    assert!(
        dom.contains(&format!(r#"class="drift" data-week="{}""#, drifted[0])),
        "{dom}"
    );
    // The newest week is an ordinary one: the model is not marked as drifting now.
    assert!(!bugtype.drifting, "{bugtype:?}");
    assert!(!dom.contains(r#"<span class="drifting">"#), "{dom}");
    screenshot(&format!("{base}/"), "live.png").await;

    stop.cancel();
    broker.cleanup().await;
}
