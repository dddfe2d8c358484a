//! Connections force-closed mid-stream (`rabbitmqctl close_all_connections`).
//!
//! In a test binary of its own: closing every connection on the broker would disturb the
//! other tests if they ran alongside.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bugflow::dispatch::Stats;

use common::{TestBroker, push};

const MESSAGES: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_closed_connections_lose_nothing_and_every_duplicate_is_marked() {
    let mut broker = TestBroker::new().await;
    let mut spec = broker.spec("pushes");
    // A small prefetch keeps the stream going long enough for the chaos to land mid-stream.
    spec.prefetch = 20;
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let exchange = broker.hgpushes();
    for id in 1..=MESSAGES {
        broker
            .publish(
                &exchange,
                "integration/autoland",
                &push("integration/autoland", id, "dev@mozilla.com"),
            )
            .await;
    }

    let running = broker.start(spec.clone());
    let stats = running.stats.clone();
    let mut closes = 0;
    let started = Instant::now();
    while Stats::get(&stats.acked) < MESSAGES && closes < 3 {
        let before = Stats::get(&stats.acked);
        if before > 0 {
            common::close_all_connections().await;
            closes += 1;
            eprintln!("close #{closes}: {before} acked before it");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        closes >= 1,
        "the chaos must land while messages are in flight"
    );

    // Our own test connection was closed too: read the results on a fresh one.
    let reader = TestBroker::reconnect(&broker).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = Vec::new();
    while Stats::get(&stats.acked) < MESSAGES || got.len() < MESSAGES as usize {
        assert!(
            Instant::now() < deadline,
            "stalled: {} acked, {} results",
            Stats::get(&stats.acked),
            got.len()
        );
        got.extend(
            reader
                .take(&results, 10_000, Duration::from_millis(500))
                .await,
        );
    }
    // Let late duplicates arrive.
    got.extend(reader.take(&results, 10_000, Duration::from_secs(2)).await);
    let elapsed = started.elapsed();

    let mut per_subject: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for g in &got {
        let v = g.json();
        per_subject
            .entry(v["subject"].as_str().unwrap().to_owned())
            .or_default()
            .push(v["possible_duplicate"].as_bool().unwrap());
    }
    assert_eq!(
        per_subject.len(),
        MESSAGES as usize,
        "every input yields a result"
    );
    let mut duplicates = 0;
    for (subject, flags) in &per_subject {
        let fresh = flags.iter().filter(|r| !**r).count();
        assert!(
            fresh <= 1,
            "{subject}: {fresh} results not marked as a possible duplicate"
        );
        duplicates += flags.len() - 1;
    }
    eprintln!(
        "{MESSAGES} inputs, {closes} forced closes, {} results ({duplicates} marked duplicates), \
         {} acks not sent, {:.1} s",
        got.len(),
        Stats::get(&stats.ack_not_sent),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        reader.ready(&spec.queue).await,
        0,
        "the input queue is drained"
    );
    running.stop().await;
    reader.cleanup_with(broker).await;
}
