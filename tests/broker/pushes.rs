use std::time::Duration;

use crate::common::{TestBroker, sample};

/// The reconstructed hgpushes v2 sample, moved to integration/autoland.
fn autoland_sample() -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&sample(
        "vct_hgpushes_v2_changegroup1_wire_reconstructed.json",
    ))
    .unwrap();
    v["payload"]["data"]["repo_url"] = "https://hg.mozilla.org/integration/autoland".into();
    v["_meta"]["routing_key"] = "integration/autoland".into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn a_sample_push_becomes_one_confirmed_result_and_the_input_is_acked() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());

    broker
        .publish(
            &broker.hgpushes(),
            "integration/autoland",
            &autoland_sample(),
        )
        .await;
    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "one result");
    let result = &got[0];
    assert_eq!(result.routing_key, "pushes.push.integration/autoland/1");
    assert_eq!(result.content_type.as_deref(), Some("application/json"));
    assert_eq!(result.delivery_mode, Some(2), "persistent");
    let body = result.json();
    assert_eq!(result.message_id.as_deref(), body["message_id"].as_str());
    assert_eq!(body["consumer"], "pushes");
    assert_eq!(body["data"]["repo"], "integration/autoland");
    assert_eq!(body["data"]["push_id"], 1);
    assert_eq!(body["data"]["user"], "user@example.com");
    assert_eq!(
        body["data"]["heads"][0],
        "77538e1ce4bec5f7aac58a7ceca2da0e38e90a72"
    );
    assert_eq!(body["input"]["event"], "changegroup.1");
    assert_eq!(body["input"]["redelivered"], false);

    let stats = running.stats.clone();
    broker
        .eventually(Duration::from_secs(10), "the input is acked", || {
            bugflow::dispatch::Stats::get(&stats.acked) == 1
        })
        .await;
    assert_eq!(
        broker.ready(&spec.queue).await,
        0,
        "the input queue is empty"
    );
    running.stop().await;
    // Nothing was left unacked: after the consumer is gone the queue is still empty.
    assert_eq!(broker.ready(&spec.queue).await, 0);
    broker.cleanup().await;
}

#[tokio::test]
async fn a_repository_the_consumer_does_not_bind_never_arrives() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());
    // pushes binds integration/autoland and try; mozilla-central belongs to landings.
    broker
        .publish(
            &broker.hgpushes(),
            "mozilla-central",
            &crate::common::push("mozilla-central", 5, "a@b.c"),
        )
        .await;
    broker
        .publish(
            &broker.hgpushes(),
            "try",
            &crate::common::push("try", 6, "a@b.c"),
        )
        .await;
    let got = broker.take(&results, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].routing_key, "pushes.push.try/6");
    running.stop().await;
    broker.cleanup().await;
}
