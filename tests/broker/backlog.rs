use std::collections::BTreeSet;
use std::time::Duration;

use bugflow::dispatch::Stats;

use crate::common::{TestBroker, push};

#[tokio::test]
async fn messages_published_while_the_consumer_is_stopped_are_all_processed_when_it_starts() {
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("landings");
    // The queue is durable and declared the way every start of the consumer declares it;
    // no consumer is attached while the backlog builds up.
    broker.declare(&spec).await;

    let results = broker.results_queue().await;
    let exchange = broker.hgpushes();
    for id in 1..=300 {
        broker
            .publish(
                &exchange,
                "mozilla-central",
                &push("mozilla-central", id, "dev@mozilla.com"),
            )
            .await;
    }
    assert_eq!(
        broker.ready(&spec.queue).await,
        300,
        "the backlog waits in the queue"
    );

    let running = broker.start(spec.clone());
    let got = broker.take(&results, 300, Duration::from_secs(60)).await;
    let subjects: BTreeSet<String> = got.iter().map(|g| g.routing_key.clone()).collect();
    assert_eq!(
        subjects.len(),
        300,
        "every push of the backlog has its result"
    );
    assert!(subjects.contains("landings.landing.mozilla-central/300"));
    let stats = running.stats.clone();
    broker
        .eventually(Duration::from_secs(10), "300 acks", || {
            Stats::get(&stats.acked) == 300
        })
        .await;
    assert_eq!(broker.ready(&spec.queue).await, 0);
    running.stop().await;
    broker.cleanup().await;
}
