//! Issue 12, finding 6: oversized reasons and bodies.
//!
//! Before the fix, a reason quoting a 300 KB field went verbatim into `x-bugflow-reason`:
//! RabbitMQ closed the shared publisher connection (`frame_too_large`) on every attempt and
//! the message reached the dead-letter queue only through the queue's own DLX, without a
//! reason. And a body of any size was read and scored.

use std::time::Duration;

use bugflow::sinks::dead_letter::REASON_HEADER;

use crate::common::{TestBroker, push};

#[tokio::test]
async fn a_huge_reason_is_cut_and_a_huge_body_is_dead_lettered_unread() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let dead_letters = broker.config.dead_letter_queue();
    let running = broker.start(spec.clone());
    let exchange = broker.hgpushes();

    // A head of 300,000 bytes: the decoder's reason quotes it.
    let mut bad: serde_json::Value =
        serde_json::from_slice(&push("integration/autoland", 1, "a@b.c")).unwrap();
    bad["payload"]["data"]["heads"][0] = "z".repeat(300_000).into();
    broker
        .publish(
            &exchange,
            "integration/autoland",
            &serde_json::to_vec(&bad).unwrap(),
        )
        .await;
    // 1.5 MiB of valid JSON: over amqp.max_body_bytes (1 MiB).
    let mut big: serde_json::Value =
        serde_json::from_slice(&push("integration/autoland", 2, "a@b.c")).unwrap();
    big["padding"] = "p".repeat(1_500_000).into();
    broker
        .publish(
            &exchange,
            "integration/autoland",
            &serde_json::to_vec(&big).unwrap(),
        )
        .await;
    broker
        .publish(
            &exchange,
            "integration/autoland",
            &push("integration/autoland", 3, "a@b.c"),
        )
        .await;

    let dead = broker.take(&dead_letters, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2, "both are parked by bugflow, with a reason");
    let reasons: Vec<&str> = dead
        .iter()
        .map(|d| {
            d.headers[REASON_HEADER]
                .as_str()
                .expect("bugflow's reason header")
        })
        .collect();
    assert!(
        reasons.iter().all(|r| r.len() <= 1024),
        "{:?}",
        reasons.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    assert!(
        reasons[0].starts_with("hg push changegroup: head"),
        "{}",
        &reasons[0][..80]
    );
    assert!(reasons[0].ends_with("bytes in all)"), "says it was cut");
    assert!(reasons[1].starts_with("too large: "), "{}", reasons[1]);
    assert!(dead[1].body.len() > 1_500_000, "the body is kept whole");

    let got = broker.take(&results, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "the good push after them has its result");
    assert_eq!(got[0].routing_key, "pushes.push.integration/autoland/3");
    running.stop().await;
    broker.cleanup().await;
}
