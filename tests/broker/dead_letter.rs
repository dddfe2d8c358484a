use std::time::Duration;

use bugflow::dispatch::Stats;
use bugflow::sinks::dead_letter::{CONSUMER_HEADER, REASON_HEADER, STAGE_HEADER};

use crate::common::{TestBroker, push};

#[tokio::test]
async fn a_malformed_body_is_dead_lettered_with_its_reason_and_the_consumer_keeps_going() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let dead_letters = broker.config.dead_letter_queue();
    let running = broker.start(spec.clone());

    let exchange = broker.hgpushes();
    broker
        .publish(&exchange, "integration/autoland", b"{\"payload\": not json")
        .await;
    broker
        .publish(
            &exchange,
            "integration/autoland",
            br#"{"payload": {"type": "changegroup.1", "data": {"repo_url": "https://hg.mozilla.org/integration/autoland", "heads": ["xyz"]}}}"#,
        )
        .await;
    broker
        .publish(
            &exchange,
            "integration/autoland",
            &push("integration/autoland", 42, "dev@mozilla.com"),
        )
        .await;

    let dead = broker.take(&dead_letters, 2, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 2, "both bad messages are parked");
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| d.headers[REASON_HEADER].as_str().unwrap().to_owned())
        .collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("40-hex"), "{reasons:?}");
    for d in &dead {
        assert_eq!(d.headers[STAGE_HEADER], "decode");
        assert_eq!(d.headers[CONSUMER_HEADER], "pushes");
        assert_eq!(d.routing_key, "pushes");
    }
    assert_eq!(
        dead[0].body, b"{\"payload\": not json",
        "the original bytes are kept"
    );

    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        1,
        "the good message after them still yields its result"
    );
    assert_eq!(got[0].routing_key, "pushes.push.integration/autoland/42");

    let stats = running.stats.clone();
    broker
        .eventually(
            Duration::from_secs(10),
            "all three inputs are acked",
            || Stats::get(&stats.acked) == 3,
        )
        .await;
    assert_eq!(Stats::get(&stats.dead_lettered), 2);
    assert_eq!(broker.ready(&spec.queue).await, 0);
    running.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn skipped_messages_are_acked_without_a_result() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let running = broker.start(spec.clone());
    let exchange = broker.hgpushes();
    broker
        .publish(&exchange, "try", &push("try", 1, "wptsync@mozilla.com"))
        .await;
    broker
        .publish(
            &exchange,
            "try",
            br#"{"payload": {"type": "newrepo.1", "data": {"repo_url": "https://hg.mozilla.org/try"}}}"#,
        )
        .await;
    broker
        .publish(&exchange, "try", &push("try", 2, "dev@mozilla.com"))
        .await;
    let got = broker.take(&results, 3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].routing_key, "pushes.push.try/2");
    let stats = running.stats.clone();
    broker
        .eventually(Duration::from_secs(10), "three acks", || {
            Stats::get(&stats.acked) == 3
        })
        .await;
    assert_eq!(Stats::get(&stats.skipped), 2);
    assert_eq!(broker.ready(&broker.config.dead_letter_queue()).await, 0);
    running.stop().await;
    broker.cleanup().await;
}
