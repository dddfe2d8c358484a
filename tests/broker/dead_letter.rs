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

/// Issue 12, finding 5: before, one dead-letter exchange served every env (each env's queue
/// got every env's dead letters); with the dead-letter queue gone (Pulse deletes it past
/// 8,000), a tap on the exchange — the dashboard's — took the dead letter and the mandatory
/// publish counted that as delivered; nothing else kept it.
#[tokio::test]
async fn a_dead_letter_reaches_its_envs_queue_and_the_store_even_after_the_queue_was_deleted() {
    let mut broker = TestBroker::new().await;
    let mut other = (*broker.config).clone();
    other.env = "other".into();
    bugflow::pulse::topology::declare_shared(&broker.channel, &other)
        .await
        .unwrap();
    broker.track(
        &[other.dead_letter_queue()],
        &[other.dead_letter_exchange(), other.retry_exchange()],
    );
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let dead_letters = broker.config.dead_letter_queue();
    // Pulse deleted the dead-letter queue; a tap listens on the exchange.
    broker
        .channel
        .queue_delete(dead_letters.as_str().into(), Default::default())
        .await
        .unwrap();
    let tap = broker.config.resolve("queue/{user}/a-tap");
    broker
        .bind_queue(&tap, &broker.config.dead_letter_exchange(), "#")
        .await;

    let (store, _dir) = crate::common::temp_store().await;
    let pipeline = bugflow::pipeline::Pipeline::new(
        spec.clone(),
        bugflow::models::registry::ModelSet::empty(),
    )
    .with_store(store.clone());
    let running = broker.start_pipeline(pipeline);
    let bad = b"{\"payload\": not json";
    broker
        .publish(&broker.hgpushes(), "integration/autoland", bad)
        .await;
    let stats = running.stats.clone();
    broker
        .eventually(
            Duration::from_secs(20),
            "the bad message is dead-lettered",
            || Stats::get(&stats.dead_lettered) == 1,
        )
        .await;
    running.stop().await;

    let parked = broker.take(&dead_letters, 5, Duration::from_secs(2)).await;
    assert_eq!(parked.len(), 1, "the queue was declared again and holds it");
    assert_eq!(parked[0].body, bad);
    assert_eq!(
        broker.ready(&other.dead_letter_queue()).await,
        0,
        "another env's dead-letter queue gets none of ours"
    );
    let kept = store.dead_letters(None, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].reason.contains("not JSON"), "{}", kept[0].reason);
    assert_eq!(
        (kept[0].consumer.as_str(), kept[0].stage.as_str()),
        ("pushes", "decode")
    );
    assert_eq!(kept[0].body.as_deref(), Some(&bad[..]));

    // `bugflow dead-letters replay` sends it back where it came from, and forgets it.
    let probe = broker.config.resolve("queue/{user}/replayed");
    broker
        .bind_queue(&probe, &broker.hgpushes(), "integration/autoland")
        .await;
    let which = bugflow::cmd::dead_letters::Selection {
        id: Some(&kept[0].id),
        consumer: None,
        limit: 10,
    };
    let sent = bugflow::cmd::dead_letters::replay(broker.config.clone(), &store, &which)
        .await
        .unwrap();
    assert_eq!(sent, 1);
    let replayed = broker.take(&probe, 1, Duration::from_secs(5)).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].body, bad);
    assert_eq!(store.dead_letter_count().await.unwrap(), 0);
    broker.cleanup().await;
}
