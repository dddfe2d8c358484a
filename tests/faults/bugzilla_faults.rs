//! Bugzilla answering 500, 429 and too slowly: a message is acked only once it is done
//! (result published) or dead-lettered with its reason; nothing disappears.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bugflow::dispatch::Stats;
use bugflow::sinks::dead_letter::REASON_HEADER;
use serde_json::Value;

use crate::common::TestBroker;
use crate::fake_bugzilla::{FakeBugzilla, Fault, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bugzilla_errors_and_timeouts_never_ack_unfinished_work() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    // Bugs 1–20 are healthy. 21–25 answer 500 once (backon absorbs it). 26–28 always 500.
    // 29 answers 429 (BMO blocks the IP: no call for block_seconds). 30 answers after 3 s,
    // past the client's 1 s timeout, every time.
    for id in 21..=25 {
        bugzilla.fault(id, Fault::First500(1));
    }
    for id in 26..=28 {
        bugzilla.fault(id, Fault::Always500);
    }
    bugzilla.fault(29, Fault::TooMany);
    bugzilla.fault(30, Fault::Slow(Duration::from_secs(3)));

    let spec = crate::writing_triage(&mut broker);
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let dead_letters = broker.config.dead_letter_queue();
    let (store, _dir) = crate::common::temp_store().await;
    let config = crate::config_for(&broker, &bugzilla, 1);
    let exchange = broker.config.bugzilla_exchange();
    // 29 goes first, alone, so that the block it causes is seen on its own.
    broker
        .publish(&exchange, "bug.modify:priority", &event(29))
        .await;
    let running = broker.start_pipeline(crate::pipeline(&config, spec.clone(), store).await);
    let stats = running.stats.clone();
    broker
        .eventually(Duration::from_secs(30), "bug 29 settled", || {
            Stats::get(&stats.acked) >= 1
        })
        .await;
    // The block is over (block_seconds = 2) before the others arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in (1..=28).chain([30]) {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }
    let started = Instant::now();
    broker
        .eventually(Duration::from_secs(60), "all 30 settled", || {
            // A retried message is acked when it is parked in the retry queue too: count
            // what each event became instead.
            Stats::get(&stats.results) + Stats::get(&stats.dead_lettered) >= 30
        })
        .await;

    let mut outcome: BTreeMap<u64, String> = BTreeMap::new();
    for got in broker.take(&results, 100, Duration::from_secs(2)).await {
        let v = got.json();
        let id: u64 = v["subject"].as_str().unwrap().parse().unwrap();
        outcome.insert(id, "result".into());
    }
    for got in broker
        .take(&dead_letters, 100, Duration::from_secs(1))
        .await
    {
        let v: Value = serde_json::from_slice(&got.body).unwrap();
        let id = v["bug"]["id"].as_u64().unwrap();
        let reason = got.headers[REASON_HEADER].as_str().unwrap().to_owned();
        assert!(
            outcome.insert(id, reason).is_none(),
            "bug {id} both done and dead-lettered"
        );
    }
    eprintln!(
        "bugzilla_faults: 30 events in {:.1} s; {} retried once, {} dead-lettered; \
         fake answered 500 ×{}, 429 ×{}, too slowly ×{}",
        started.elapsed().as_secs_f64(),
        Stats::get(&stats.requeued),
        Stats::get(&stats.dead_lettered),
        bugzilla.faulted("500"),
        bugzilla.faulted("429"),
        bugzilla.faulted("slow"),
    );
    for (id, how) in &outcome {
        eprintln!("  bug {id}: {how}");
    }
    assert_eq!(
        outcome.len(),
        30,
        "every event is done or dead-lettered: {outcome:?}"
    );
    for id in 1..=25 {
        assert_eq!(outcome[&id], "result", "bug {id}");
        assert_eq!(bugzilla.puts_for(id), 1, "bug {id} written once");
    }
    for id in 26..=28 {
        assert!(outcome[&id].contains("500"), "bug {id}: {}", outcome[&id]);
        assert_eq!(bugzilla.puts_for(id), 0, "bug {id} never written");
    }
    assert!(outcome[&29].contains("429"), "bug 29: {}", outcome[&29]);
    assert!(
        outcome[&30].to_lowercase().contains("timed out") || outcome[&30].contains("timeout"),
        "bug 30: {}",
        outcome[&30]
    );
    // Each failing event was tried again once (through the retry queue) before its dead
    // letter: never acked unfinished.
    assert_eq!(Stats::get(&stats.requeued), 5);
    assert_eq!(Stats::get(&stats.dead_lettered), 5);
    assert_eq!(broker.ready(&spec.queue).await, 0);
    running.stop().await;
    broker.cleanup().await;
}
