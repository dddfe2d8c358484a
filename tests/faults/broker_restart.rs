//! `rabbitmqctl stop_app` / `start_app` in the middle of a stream: every message is still
//! processed, and the time the consumer takes to come back is measured.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::{TestBroker, push};

const MESSAGES: u64 = 15_000;

/// Starts the broker again even if the test fails half-way.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_loses_nothing_and_the_consumer_comes_back() {
    let _serial = crate::SERIAL.lock().await;
    if std::env::var_os("RUST_LOG").is_some() {
        bugflow::telemetry::init_logging(); // RUST_LOG=bugflow=info shows the recovery
    }
    let mut broker = TestBroker::new().await;
    let mut spec = broker.spec("pushes");
    spec.prefetch = 20;
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    for id in 1..=MESSAGES {
        broker
            .publish(
                &broker.hgpushes(),
                "integration/autoland",
                &push("integration/autoland", id, "dev@mozilla.com"),
            )
            .await;
    }
    let running = broker.start(spec.clone());
    let stats = running.stats.clone();
    broker
        .eventually(Duration::from_secs(30), "the stream started", || {
            bugflow::dispatch::Stats::get(&stats.acked) > 100
        })
        .await;

    let guard = Restart;
    let stopped = Instant::now();
    tokio::task::spawn_blocking(|| crate::rabbitmqctl(&["stop_app"]))
        .await
        .unwrap();
    let acked_at_stop = bugflow::dispatch::Stats::get(&stats.acked);
    assert!(acked_at_stop < MESSAGES, "the broker must stop mid-stream");
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(|| crate::rabbitmqctl(&["start_app"]))
        .await
        .unwrap();
    let down = stopped.elapsed();
    drop(guard);
    let back = Instant::now();
    // Recovery: the first message acked after start_app returned.
    let acked_at_start = bugflow::dispatch::Stats::get(&stats.acked);
    while bugflow::dispatch::Stats::get(&stats.acked) <= acked_at_start {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the consumer did not come back within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered = back.elapsed();

    // A fresh message after the restart: its result says the consumer is back.
    let reader = loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            bugflow::pulse::connect::connect(&broker.config, "probe"),
        )
        .await
        {
            Ok(Ok(c)) => {
                let _ = c.close(200, "probe".into()).await;
                break TestBroker::reconnect(&broker).await;
            }
            _ => {
                assert!(
                    back.elapsed() < Duration::from_secs(60),
                    "the broker did not come back"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Right after start_app the broker may still be loading its queues and nack a publish.
    let body = push("integration/autoland", MESSAGES + 1, "probe@mozilla.com");
    loop {
        let confirm = reader
            .channel
            .basic_publish(
                broker.hgpushes().as_str().into(),
                "integration/autoland".into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        if confirm.is_ack() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "the broker keeps refusing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut subjects = BTreeSet::new();
    let mut results_read = 0u64;
    let probe = format!("integration/autoland/{}", MESSAGES + 1);
    let mut resumed = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (subjects.len() as u64) < MESSAGES + 1 {
        assert!(
            Instant::now() < deadline,
            "{} of {} results",
            subjects.len(),
            MESSAGES + 1
        );
        for got in reader
            .take(&results, 10_000, Duration::from_millis(200))
            .await
        {
            results_read += 1;
            let subject = got.json()["subject"].as_str().unwrap().to_owned();
            if subject == probe && resumed.is_none() {
                resumed = Some(back.elapsed());
            }
            subjects.insert(subject);
        }
    }
    let resumed = resumed.unwrap();
    // Late duplicates (redeliveries of what was in flight) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    results_read += reader
        .take(&results, 10_000, Duration::from_millis(500))
        .await
        .len() as u64;
    let duplicates = results_read - subjects.len() as u64;
    let dead = reader.ready(&broker.config.dead_letter_queue()).await;
    eprintln!(
        "broker_restart: {acked_at_stop} of {MESSAGES} acked when stop_app ran; broker down {:.1} s \
         (stop_app + 3 s + start_app); consuming again (first ack) {:.2} s after; a message published then was processed {:.2} s \
         after (behind the backlog); {results_read} results for {} inputs ({duplicates} \
         duplicates), {dead} dead letters",
        down.as_secs_f64(),
        recovered.as_secs_f64(),
        resumed.as_secs_f64(),
        MESSAGES + 1,
    );
    assert_eq!(dead, 0, "a broker restart dead-letters nothing");
    // Only what was in flight when the broker stopped can come twice (its ack was lost),
    // and a result whose confirm was lost may be sent once more: at most 2 × prefetch.
    assert!(
        duplicates <= 2 * u64::from(spec.prefetch),
        "{duplicates} duplicate results for a prefetch of {}",
        spec.prefetch
    );
    assert_eq!(reader.ready(&spec.queue).await, 0);
    running.stop().await;
    reader.cleanup_with(broker).await;
}
