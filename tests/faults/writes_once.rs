//! Bugzilla writes that must happen exactly once (issue 12, finding 2), against the stateful
//! fake BMO: a PUT applied but answered after the client's timeout or with a 500 is not sent
//! again; a PUT that failed is made later, not lost; two events about one bug in flight at
//! once write it once; the hourly cap holds when many writers check it at the same moment.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bugflow::consumer::ConsumerSpec;
use serde_json::Value;

use crate::common::TestBroker;
use crate::fake_bugzilla::{FakeBugzilla, PutFault, change_event, event};

/// Reads `n` results (or fails after `within`): each result's subject and its writer
/// outcome.
async fn outcomes(
    broker: &TestBroker,
    queue: &str,
    n: usize,
    within: Duration,
) -> Vec<(u64, String)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} results: {got:?}",
            got.len()
        );
        for m in broker
            .take(queue, n - got.len(), Duration::from_millis(500))
            .await
        {
            let v: Value = m.json();
            let id = v["subject"].as_str().unwrap().parse().unwrap();
            let outcome = v["actions"][0]["outcome"]
                .as_str()
                .unwrap_or("none")
                .to_owned();
            got.push((id, outcome));
        }
    }
    got
}

async fn start(
    broker: &mut TestBroker,
    bugzilla: &FakeBugzilla,
    timeout_seconds: u64,
    tune: impl FnOnce(&mut ConsumerSpec, &mut bugflow::config::Config),
) -> (crate::common::Running, String, tempfile::TempDir) {
    let mut spec = crate::writing_triage(broker);
    let mut config = crate::config_for(broker, bugzilla, timeout_seconds);
    tune(&mut spec, &mut config);
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let (store, dir) = crate::common::temp_store().await;
    let pipeline = crate::pipeline(&config, spec, store).await;
    let running = broker.start_with(std::sync::Arc::new(config), pipeline);
    (running, results, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_answer_was_lost_is_not_sent_again_and_a_failed_one_is_made_later() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    // 1: applied, answered after 3 s (the client gives up at 1 s). 2: applied, answered
    // 500. 3: the first two PUTs fail (500, nothing applied). 4: healthy. 5: the bot may
    // not edit it (401): the write is a recorded skip and the result is still published.
    bugzilla.put_fault(1, PutFault::AppliedThenSlow(Duration::from_secs(3)));
    bugzilla.put_fault(2, PutFault::AppliedThen500);
    bugzilla.put_fault(3, PutFault::Fail500(2));
    bugzilla.put_fault(5, PutFault::NoAccess);
    let started = Instant::now();
    let (running, results, _dir) = start(&mut broker, &bugzilla, 1, |_, config| {
        config.amqp.retry_attempts = 3;
    })
    .await;
    let exchange = broker.config.bugzilla_exchange();
    for id in 1..=5 {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }
    let got = outcomes(&broker, &results, 5, Duration::from_secs(60)).await;
    let took = started.elapsed();
    running.stop().await;
    let dead = broker.ready(&broker.config.dead_letter_queue()).await;
    let by_bug: BTreeMap<u64, String> = got.into_iter().collect();
    eprintln!(
        "writes_once (lost answers): 5 events in {:.1} s; PUTs sent per bug {:?}, applied {:?}; \
         outcomes {by_bug:?}; {dead} dead letters",
        took.as_secs_f64(),
        (1..=4).map(|id| bugzilla.puts_for(id)).collect::<Vec<_>>(),
        (1..=4)
            .map(|id| bugzilla.applied_to(id))
            .collect::<Vec<_>>(),
    );
    for id in 1..=4 {
        assert_eq!(bugzilla.applied_to(id), 1, "bug {id}: one write applied");
        assert_eq!(bugzilla.bot_comments(id), 1, "bug {id}: one comment");
        assert_eq!(by_bug[&id], "written", "bug {id}");
    }
    assert_eq!(
        bugzilla.puts_for(1),
        1,
        "a timed-out PUT that landed is not sent again"
    );
    assert_eq!(
        bugzilla.puts_for(2),
        1,
        "a PUT answered 500 that landed is not sent again"
    );
    assert_eq!(
        bugzilla.puts_for(3),
        3,
        "two failed PUTs, then the one that landed"
    );
    assert_eq!(dead, 0);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_events_about_one_bug_in_flight_at_once_write_it_once() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    let bugs = 10..=14;
    // A slow BMO keeps the first event's write in flight while the second one decides.
    for id in bugs.clone() {
        bugzilla.put_fault(id, PutFault::Slow(Duration::from_millis(1500)));
    }
    let (running, results, _dir) = start(&mut broker, &bugzilla, 5, |_, _| {}).await;
    let exchange = broker.config.bugzilla_exchange();
    for id in bugs.clone() {
        broker
            .publish(
                &exchange,
                "bug.modify:priority",
                &change_event(id, "priority"),
            )
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in bugs.clone() {
        broker
            .publish(&exchange, "bug.modify:status", &change_event(id, "status"))
            .await;
    }
    let got = outcomes(&broker, &results, 10, Duration::from_secs(60)).await;
    running.stop().await;
    let dead = broker.ready(&broker.config.dead_letter_queue()).await;
    let written = got.iter().filter(|(_, o)| o == "written").count();
    eprintln!(
        "writes_once (two events per bug, 0.3 s apart): 10 events, {} results, {written} \
         written; PUTs applied per bug {:?}; {dead} dead letters",
        got.len(),
        bugs.clone()
            .map(|id| bugzilla.applied_to(id))
            .collect::<Vec<_>>(),
    );
    for id in bugs {
        assert_eq!(bugzilla.applied_to(id), 1, "bug {id} written once");
        assert_eq!(bugzilla.puts_for(id), 1, "bug {id}: one PUT");
    }
    assert_eq!(written, 5);
    assert_eq!(dead, 0);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hourly_cap_holds_when_writers_check_it_at_the_same_moment() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    let bugs = 20..=29;
    for id in bugs.clone() {
        bugzilla.put_fault(id, PutFault::Slow(Duration::from_millis(1000)));
    }
    let (running, results, _dir) = start(&mut broker, &bugzilla, 5, |spec, _| {
        spec.outputs.bugzilla.max_writes_per_hour = 3;
    })
    .await;
    let exchange = broker.config.bugzilla_exchange();
    for id in bugs.clone() {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }
    let got = outcomes(&broker, &results, 10, Duration::from_secs(60)).await;
    running.stop().await;
    let applied: usize = bugs.clone().map(|id| bugzilla.applied_to(id)).sum();
    let written = got.iter().filter(|(_, o)| o == "written").count();
    eprintln!(
        "writes_once (cap 3, 10 writers at once): {applied} PUTs applied, {written} results say written"
    );
    assert_eq!(applied, 3, "the cap of 3 writes an hour holds");
    assert_eq!(written, 3);
    broker.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_the_consumer_and_its_messages_stay_queued() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    for id in 40..=45 {
        bugzilla.fault(id, crate::fake_bugzilla::Fault::Revoked);
    }
    let (running, results, _dir) = start(&mut broker, &bugzilla, 5, |_, _| {}).await;
    let exchange = broker.config.bugzilla_exchange();
    broker
        .publish(&exchange, "bug.modify:priority", &event(40))
        .await;
    let queue = crate::writing_triage(&mut broker).queue;
    let consumer = "bug-triage".to_owned();
    broker
        .eventually(Duration::from_secs(30), "the consumer halts", || {
            bugflow::telemetry::halted().contains_key(&consumer)
        })
        .await;
    for id in 41..=45 {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Stopped consuming: every message is back in the queue, none acked or dead-lettered.
    let mut ready = 0;
    for _ in 0..100 {
        ready = broker.ready(&queue).await;
        if ready == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = bugzilla.faulted("306");
    let dead = broker.ready(&broker.config.dead_letter_queue()).await;
    let published = broker
        .take(&results, 10, Duration::from_millis(500))
        .await
        .len();
    eprintln!(
        "revoked key: {ready} of 6 messages still queued, {published} results, {dead} dead \
         letters, Bugzilla called {calls} times; halted: {:?}",
        bugflow::telemetry::halted()
    );
    assert!(
        !running.task.is_finished(),
        "the process stays up (and /readyz says why)"
    );
    running.stop().await;
    assert_eq!(ready, 6);
    assert_eq!((published, dead), (0, 0));
    assert_eq!(calls, 1, "after a 306 Bugzilla is not called again");
    broker.cleanup().await;
}
