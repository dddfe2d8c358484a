//! Issue 12, finding 1: names longer than AMQP's 255 bytes never crash a consumer.
//!
//! Before the fix, lapin's `ShortString::from` panicked on them: a push whose repository
//! path made the result's routing key too long killed the runner task (and `bugflow run`),
//! and the same unsettled delivery did it again after a restart; a BMO webhook whose routing
//! key listed many changed fields dropped the HTTP connection without an answer.

use std::sync::Arc;
use std::time::Duration;

use bugflow::secret::Secret;

use crate::common::{TestBroker, push, sample};

#[tokio::test]
async fn a_push_whose_result_key_would_be_too_long_is_published_under_a_shortened_key() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());

    let long_repo = format!("try/{}", "deep/".repeat(60));
    let mut body: serde_json::Value =
        serde_json::from_slice(&push(&long_repo, 7, "a@b.c")).unwrap();
    assert!(long_repo.len() > 255);
    body["_meta"]["routing_key"] = "try".into();
    broker
        .publish(
            &broker.hgpushes(),
            "try",
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
    // The next message is processed too: the consumer is still there.
    broker
        .publish(&broker.hgpushes(), "try", &push("try", 8, "a@b.c"))
        .await;

    let got = broker.take(&results, 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "both pushes have a result");
    let long = got
        .iter()
        .find(|g| g.json()["data"]["push_id"] == 7)
        .unwrap();
    assert!(long.routing_key.len() <= 255, "{}", long.routing_key.len());
    assert!(long.routing_key.starts_with("pushes.push.try/deep/"));
    assert_eq!(long.json()["routing_key"], long.routing_key.as_str());
    assert!(
        !running.task.is_finished(),
        "the runner goes on after the long key"
    );
    running.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_webhook_whose_routing_key_is_too_long_is_answered_400() {
    let broker = TestBroker::new().await;
    let mut config = (*broker.config).clone();
    config.http.webhook_secret = Secret::new("long-names-secret");
    let (base, stop) = crate::common::serve_http(Arc::new(config)).await;

    // bug.modify: and twenty cf_status_firefoxNNN fields: 430 bytes, as BMO sends it.
    let fields: Vec<String> = (100..120)
        .map(|n| format!("cf_status_firefox{n}"))
        .collect();
    let mut body: serde_json::Value =
        serde_json::from_slice(&sample("bmo_webhook_public_bug_modify_example.json")).unwrap();
    body["event"]["routing_key"] = format!("bug.modify:{}", fields.join(",")).into();
    bugflow::init_tls();
    let answer = reqwest::Client::new()
        .post(format!("{base}/bugzilla/webhook"))
        .header("X-Bugflow-Webhook-Secret", "long-names-secret")
        .json(&body)
        .send()
        .await
        .expect("an HTTP answer, not a dropped connection");
    assert_eq!(answer.status(), 400);
    let text = answer.text().await.unwrap();
    assert!(text.contains("AMQP allows 255"), "{text}");
    stop.cancel();
    broker.cleanup().await;
}
