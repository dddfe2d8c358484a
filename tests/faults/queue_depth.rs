//! The queue under a sustained input rate stays far below Pulse's 8,000-message deletion,
//! and bugflow warns once a queue passes `queue_warn_messages`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bugflow::dispatch::Stats;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;

use crate::common::{TestBroker, push};

/// Messages a second: over ten times the peak of hg.mozilla.org's and BMO's feeds together.
const RATE: u64 = 1_000;
const SECONDS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_rate_keeps_the_queue_small_and_a_backlog_is_warned_about() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let spec = broker.spec("pushes");
    broker.declare(&spec).await;
    // bug-triage runs too, with its shipped models, on a BMO event every tenth message.
    let triage = broker.spec("bug-triage");
    broker.declare(&triage).await;
    let _results = broker.results_queue().await;
    let running = broker.start(spec.clone());
    let scoring = broker.start_pipeline(bugflow::pipeline::Pipeline::new(
        triage.clone(),
        crate::common::shipped_models(),
    ));
    let stats = running.stats.clone();
    let scored = scoring.stats.clone();
    let bug_event = crate::common::sample("bmo_webhook_public_bug_modify_example.json");

    // Publish RATE messages a second, in 20 ms ticks, and sample the depth every tick.
    let total = RATE * SECONDS;
    let per_tick = RATE / 50;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let started = Instant::now();
    let mut sent = 0;
    let mut max_depth = 0;
    let mut samples = 0;
    while sent < total {
        tick.tick().await;
        let mut confirms = Vec::new();
        for _ in 0..per_tick {
            sent += 1;
            confirms.push(
                broker
                    .channel
                    .basic_publish(
                        broker.hgpushes().as_str().into(),
                        "integration/autoland".into(),
                        BasicPublishOptions::default(),
                        &push("integration/autoland", sent, "dev@mozilla.com"),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap(),
            );
        }
        let event = broker
            .channel
            .basic_publish(
                broker.config.bugzilla_exchange().as_str().into(),
                "bug.modify:priority".into(),
                BasicPublishOptions::default(),
                &bug_event,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        confirms.push(event);
        for c in confirms {
            c.await.unwrap();
        }
        // Unacked is at most the prefetch; count it in as Pulse does (ready + unacked).
        let in_flight = sent - Stats::get(&stats.acked).min(sent);
        let d =
            u64::from(broker.ready(&spec.queue).await) + in_flight.min(u64::from(spec.prefetch));
        max_depth = max_depth.max(d);
        samples += 1;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    broker
        .eventually(Duration::from_secs(60), "the stream is consumed", || {
            Stats::get(&stats.acked) >= total
        })
        .await;
    let events = samples as u64;
    broker
        .eventually(Duration::from_secs(60), "the bug events are scored", || {
            Stats::get(&scored.results) >= events
        })
        .await;
    let drained_secs = started.elapsed().as_secs_f64();
    let offered = total as f64 / publish_secs;
    eprintln!(
        "queue_depth: {total} pushes at {offered:.0} msg/s offered ({RATE} target) over {publish_secs:.1} s \
         and {events} BMO events scored by bug-triage's models; consumed at {:.0} msg/s; max depth \
         (ready + unacked) {max_depth} over {samples} samples (Pulse deletes at 8,000; warned at {})",
        total as f64 / drained_secs,
        broker.config.queue_warn_messages,
    );
    assert!(
        offered >= 0.9 * RATE as f64,
        "the test offered {offered:.0} msg/s, not the {RATE} it claims"
    );
    assert!(
        total as f64 / drained_secs >= 0.8 * RATE as f64,
        "consumed at {:.0} msg/s",
        total as f64 / drained_secs
    );
    assert_eq!(Stats::get(&scored.dead_lettered), 0);
    assert!(max_depth < 8_000, "the queue reached {max_depth}");
    assert_eq!(
        Stats::get(&stats.queue_warnings),
        0,
        "no warning at this depth"
    );
    running.stop().await;
    scoring.stop().await;

    // A backlog (the consumer was down): 3,000 waiting, the warning threshold at 1,000.
    for id in 0..3_000 {
        broker
            .publish(
                &broker.hgpushes(),
                "integration/autoland",
                &push("integration/autoland", total + id, "dev@mozilla.com"),
            )
            .await;
    }
    let mut config = (*broker.config).clone();
    config.queue_warn_messages = 1_000;
    let config = Arc::new(config);
    let pipeline = bugflow::pipeline::Pipeline::new(
        spec.clone(),
        bugflow::models::registry::ModelSet::empty(),
    );
    let publisher = bugflow::pulse::publish::Publisher::new(config.clone());
    let sinks = bugflow::app::sinks_for(&config, &spec, &publisher, None);
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = bugflow::runner::Runner::new(config, Arc::new(pipeline), sinks, stop.clone());
    let warned = runner.stats();
    let task = tokio::spawn(async move { runner.run().await });
    broker
        .eventually(
            Duration::from_secs(30),
            "a warning about the backlog",
            || Stats::get(&warned.queue_warnings) >= 1,
        )
        .await;
    broker
        .eventually(Duration::from_secs(60), "the backlog is consumed", || {
            Stats::get(&warned.acked) >= 3_000
        })
        .await;
    eprintln!(
        "queue_depth: a 3,000-message backlog with queue_warn_messages = 1,000 → {} warning(s), drained",
        Stats::get(&warned.queue_warnings)
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    publisher.close().await;
    broker.cleanup().await;
}
