//! 10,000 bug events while every connection is force-closed again and again.

use std::time::{Duration, Instant};

use bugflow::dispatch::Stats;

use crate::common::TestBroker;
use crate::fake_bugzilla::{FakeBugzilla, event};

const EVENTS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_under_forced_closes_write_each_bug_once() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    let spec = crate::writing_triage(&mut broker);
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let (store, _dir) = crate::common::temp_store().await;
    let config = crate::config_for(&broker, &bugzilla, 10);
    let exchange = broker.config.bugzilla_exchange();
    for id in 1..=EVENTS {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }

    let running = broker.start_pipeline(crate::pipeline(&config, spec.clone(), store).await);
    let stats = running.stats.clone();
    let started = Instant::now();
    let mut closes: u64 = 0;
    let mut acked_at_last_close = 0;
    // Close every connection each time another 1,500 events were acked: the consumer must
    // recover (reconnect, re-declare, resume) again and again.
    while Stats::get(&stats.acked) < EVENTS {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "stalled at {} acked after {closes} closes",
            Stats::get(&stats.acked)
        );
        let acked = Stats::get(&stats.acked);
        if acked > 0 && acked - acked_at_last_close >= 1_500 && acked < EVENTS - 500
            || acked > 0 && closes == 0
        {
            crate::common::close_all_connections().await;
            closes += 1;
            acked_at_last_close = Stats::get(&stats.acked);
            eprintln!("close #{closes}: {acked} acked before it");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closes >= 3, "only {closes} closes landed mid-stream");

    let reader = TestBroker::reconnect(&broker).await;
    let (subjects, mut results_seen) =
        crate::result_subjects(&reader, &results, EVENTS, Duration::from_secs(120), || {}).await;
    let elapsed = started.elapsed();
    // Late redeliveries settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    results_seen += reader
        .take(&results, 20_000, Duration::from_secs(1))
        .await
        .len();

    let (twice, written) = bugzilla.writes();
    let dead = reader.ready(&broker.config.dead_letter_queue()).await;
    eprintln!(
        "writes_under_closes: {EVENTS} events, {closes} forced closes, {} s; \
         {results_seen} results for {} bugs, {written} bugs written, {} written twice, \
         {dead} dead letters, {} acks not sent",
        elapsed.as_secs(),
        subjects.len(),
        twice.len(),
        Stats::get(&stats.ack_not_sent),
    );
    assert_eq!(
        subjects.len() as u64,
        EVENTS,
        "an event has no result: lost"
    );
    assert!(twice.is_empty(), "bugs written twice: {twice:?}");
    // Each forced close strands at most a prefetch of unsettled deliveries: their acks are
    // the ones not sent, and each extra result is one of them delivered again.
    let stranded = closes * u64::from(spec.prefetch);
    let not_sent = Stats::get(&stats.ack_not_sent);
    assert!(
        not_sent <= stranded,
        "{not_sent} acks not sent after {closes} closes"
    );
    assert!(results_seen as u64 >= EVENTS);
    assert!(
        results_seen as u64 - EVENTS <= not_sent + stranded,
        "{} extra results",
        results_seen as u64 - EVENTS
    );
    assert_eq!(written as u64, EVENTS, "every bug is written once");
    assert_eq!(dead, 0, "nothing dead-lettered");
    assert_eq!(reader.ready(&spec.queue).await, 0, "the queue is drained");
    running.stop().await;
    reader.cleanup_with(broker).await;
}
