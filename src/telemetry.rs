//! Logs (tracing) and metrics (the `metrics` facade, exported in Prometheus format).
//!
//! What happens to a consumer's messages is counted once, as a typed [`Counted`] event
//! (Vector's "internal events"): [`Stats::count`] adds it to the consumer's [`Stats`] (read
//! by summaries, the bench and the tests) and to the metrics registry (read by `/metrics`)
//! in one call, so the two never disagree. Every metric has a HELP line ([`METRICS`]), and
//! [`register_consumer`] exports each per-consumer counter at zero from start-up, so that
//! an alert on a rate has a series to read before the first message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::Stage;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(ProbeCloses)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// Drops lapin's ERROR for a channel the broker closed with 404 NOT_FOUND. lapin logs every
/// channel the broker closes as an error, also the one closed by design: bugflow asks
/// whether an exchange exists with a passive declare on a channel of its own
/// ([`crate::pulse::topology::exchange_exists`]), and a missing one closes it. Each caller
/// says what it makes of the answer (an optional binding not bound, an archived exchange's
/// lines counted: a warning), and any other operation that meets a 404 gets lapin's error
/// back and reports it. Every other close is logged as lapin logs it.
struct ProbeCloses;

impl<S: tracing::Subscriber> Layer<S> for ProbeCloses {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::ERROR || !meta.target().starts_with("lapin::") {
            return true;
        }
        let mut close = ChannelClose::default();
        event.record(&mut close);
        !(close.closed && close.not_found)
    }
}

/// What a lapin event says: whether it is "Channel closed", and with NOT_FOUND.
#[derive(Default)]
struct ChannelClose {
    closed: bool,
    not_found: bool,
}

impl Visit for ChannelClose {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.closed = format!("{value:?}") == "Channel closed",
            "error" => self.not_found = format!("{value:?}").contains("NOTFOUND"),
            _ => {}
        }
    }
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle (for `/metrics`).
/// `None` if another recorder was installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// How a metric is read: a counter only grows, a gauge goes up and down, a histogram
/// counts observations in buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric bugflow exports: name, kind, help.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "bugflow_messages_received_total",
        Kind::Counter,
        "Messages delivered to a consumer.",
    ),
    (
        "bugflow_results_published_total",
        Kind::Counter,
        "Results confirmed by the broker (and written to JSONL).",
    ),
    (
        "bugflow_messages_skipped_total",
        Kind::Counter,
        "Messages acked with nothing to do (private bug, newrepo, bot push); the reason is logged.",
    ),
    (
        "bugflow_messages_retried_total",
        Kind::Counter,
        "Messages given back to their queue after a transient failure.",
    ),
    (
        "bugflow_messages_dead_lettered_total",
        Kind::Counter,
        "Messages published to the dead-letter exchange with their reason, by the stage that failed.",
    ),
    (
        "bugflow_messages_rejected_total",
        Kind::Counter,
        "Messages rejected to the queue's own dead-letter exchange because even dead-lettering failed.",
    ),
    (
        "bugflow_messages_acked_total",
        Kind::Counter,
        "Acks the broker received.",
    ),
    (
        "bugflow_ack_not_sent_total",
        Kind::Counter,
        "Acks, nacks or rejects not sent (channel broken): the broker redelivers those messages.",
    ),
    (
        "bugflow_queue_warnings_total",
        Kind::Counter,
        "Depth checks that found a consumer's queue past queue_warn_messages (Pulse deletes queues over 8,000).",
    ),
    (
        "bugflow_queue_messages",
        Kind::Gauge,
        "Messages in a consumer's queue (ready + in flight).",
    ),
    (
        "bugflow_stage_seconds",
        Kind::Histogram,
        "Time per message in a stage: process (plan), effects, sink, total.",
    ),
    (
        "bugflow_reconnects_total",
        Kind::Counter,
        "Consumer sessions that ended and were opened again.",
    ),
    (
        "bugflow_recoveries_total",
        Kind::Counter,
        "Broken delivery streams that lapin's recovery restored, by queue.",
    ),
    (
        "bugflow_publish_retries_total",
        Kind::Counter,
        "Publishes retried after an unconfirmed or failed attempt.",
    ),
    (
        "bugflow_bugzilla_writes_total",
        Kind::Counter,
        "Changes written to Bugzilla by a consumer's writer.",
    ),
    (
        "bugflow_bugzilla_blocked_total",
        Kind::Counter,
        "Times Bugzilla answered 429 (every call stops for bugzilla.block_seconds).",
    ),
    (
        "bugflow_model_reloads_total",
        Kind::Counter,
        "Serving bundles reloaded after a promote or rollback.",
    ),
    (
        "bugflow_dead_letter_queue_messages",
        Kind::Gauge,
        "Messages ready in this env's dead-letter queue (Pulse deletes it past 8,000).",
    ),
    (
        "bugflow_model_load_failures_total",
        Kind::Counter,
        "Model bundles refused on load (unreadable, malformed, or another model's); the loaded one keeps serving.",
    ),
    (
        "bugflow_live_labels",
        Kind::Gauge,
        "Labels people set after a prediction, per model and ISO week (the live report).",
    ),
    (
        "bugflow_live_macro_f1",
        Kind::Gauge,
        "Macro F1 of the serving predictions on the labels people set, per model and week.",
    ),
    (
        "bugflow_live_accuracy",
        Kind::Gauge,
        "Accuracy of the serving predictions on the labels people set, per model and week.",
    ),
    (
        "bugflow_live_ece",
        Kind::Gauge,
        "Expected calibration error of the labelled predictions, per model and week.",
    ),
    (
        "bugflow_live_precision_at_threshold",
        Kind::Gauge,
        "Precision of the labelled predictions at or above the writer's threshold, per model and week.",
    ),
    (
        "bugflow_drift_class_shift",
        Kind::Gauge,
        "Total variation distance between a week's predicted class shares and the test set's.",
    ),
    (
        "bugflow_drift_confidence_shift",
        Kind::Gauge,
        "How far a week's mean top-class probability moved from the test set's.",
    ),
    (
        "bugflow_drift_warning",
        Kind::Gauge,
        "1 when the newest judged week of a model moved past its [live] drift bounds.",
    ),
    (
        "bugflow_poller_published_total",
        Kind::Counter,
        "Bug changes the REST poller relayed to the bug-events exchange.",
    ),
    (
        "bugflow_webhook_requests_total",
        Kind::Counter,
        "BMO webhook requests, by HTTP status answered.",
    ),
    (
        "bugflow_api_requests_total",
        Kind::Counter,
        "Prediction API requests, by HTTP status answered.",
    ),
    (
        "bugflow_archive_lines_total",
        Kind::Counter,
        "Messages a consumer's archive ([sinks.archive]) was given, by outcome: written, already_kept (a redelivered message whose line was among the last written), failed (the message requeued).",
    ),
];

fn describe() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help)
            }
        }
    }
}

/// One thing that happened to a consumer's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Received,
    /// This many results were delivered.
    Published(u64),
    Skipped,
    Requeued,
    DeadLettered(Stage),
    Rejected,
    Acked,
    AckNotSent,
    QueueWarning,
}

impl Counted {
    /// The metric it counts in.
    fn metric(self) -> &'static str {
        match self {
            Counted::Received => "bugflow_messages_received_total",
            Counted::Published(_) => "bugflow_results_published_total",
            Counted::Skipped => "bugflow_messages_skipped_total",
            Counted::Requeued => "bugflow_messages_retried_total",
            Counted::DeadLettered(_) => "bugflow_messages_dead_lettered_total",
            Counted::Rejected => "bugflow_messages_rejected_total",
            Counted::Acked => "bugflow_messages_acked_total",
            Counted::AckNotSent => "bugflow_ack_not_sent_total",
            Counted::QueueWarning => "bugflow_queue_warnings_total",
        }
    }

    /// Every event with a per-consumer series (dead letters once per stage).
    fn all() -> impl Iterator<Item = Counted> {
        let stages = [
            Stage::Decode,
            Stage::Enrich,
            Stage::Features,
            Stage::Models,
            Stage::Sink,
            Stage::Pipeline,
        ];
        [
            Counted::Received,
            Counted::Published(0),
            Counted::Skipped,
            Counted::Requeued,
            Counted::Rejected,
            Counted::Acked,
            Counted::AckNotSent,
            Counted::QueueWarning,
        ]
        .into_iter()
        .chain(stages.into_iter().map(Counted::DeadLettered))
    }
}

/// Counters of one consumer, for summaries and tests (the same counts as its metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub results: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub requeued: AtomicU64,
    pub rejected: AtomicU64,
    pub acked: AtomicU64,
    pub ack_not_sent: AtomicU64,
    /// Depth checks that found the queue past `queue_warn_messages`.
    pub queue_warnings: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts `event` of `consumer`, here and in the metrics registry.
    pub fn count(&self, consumer: &str, event: Counted) {
        let n = match event {
            Counted::Published(n) => n,
            _ => 1,
        };
        self.counter(event).fetch_add(n, Ordering::Relaxed);
        series(consumer, event).increment(n);
    }

    fn counter(&self, event: Counted) -> &AtomicU64 {
        match event {
            Counted::Received => &self.received,
            Counted::Published(_) => &self.results,
            Counted::Skipped => &self.skipped,
            Counted::Requeued => &self.requeued,
            Counted::DeadLettered(_) => &self.dead_lettered,
            Counted::Rejected => &self.rejected,
            Counted::Acked => &self.acked,
            Counted::AckNotSent => &self.ack_not_sent,
            Counted::QueueWarning => &self.queue_warnings,
        }
    }
}

fn series(consumer: &str, event: Counted) -> metrics::Counter {
    let consumer = consumer.to_owned();
    match event {
        Counted::DeadLettered(stage) => metrics::counter!(
            event.metric(),
            "consumer" => consumer,
            "stage" => stage.as_str()
        ),
        _ => metrics::counter!(event.metric(), "consumer" => consumer),
    }
}

/// Exports every per-consumer counter of `consumer` at zero (a fresh process shows them
/// all, before its first message).
pub fn register_consumer(consumer: &str) {
    for event in Counted::all() {
        series(consumer, event).increment(0);
    }
    metrics::gauge!("bugflow_queue_messages", "consumer" => consumer.to_owned()).increment(0.0);
}

/// Consumers that stopped taking messages until an operator acts, with why (`/readyz`).
static HALTED: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Records that `consumer` halted for `reason`.
pub fn halt(consumer: &str, reason: &str) {
    HALTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(consumer.to_owned(), reason.to_owned());
}

/// The halted consumers and why.
pub fn halted() -> BTreeMap<String, String> {
    HALTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric bugflow records by name is in [`METRICS`] (so it has a HELP line).
    #[test]
    fn every_metric_recorded_is_described() {
        let recorded =
            regex::Regex::new(r#"metrics::(?:counter|gauge|histogram)!\(\s*"([a-z_]+)""#).unwrap();
        let mut files = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut seen = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for name in recorded.captures_iter(&text) {
                seen += 1;
                assert!(
                    METRICS.iter().any(|(listed, _, _)| *listed == &name[1]),
                    "{} records {} without a HELP line in METRICS",
                    path.display(),
                    &name[1]
                );
            }
        }
        assert!(seen > 5, "found {seen} metrics recorded by name");
    }

    /// lapin's ERROR for a probe's channel closed with NOT_FOUND is dropped; its other
    /// errors (another close, another message) and everyone else's are not.
    #[test]
    fn only_a_probes_closed_channel_is_kept_out_of_the_logs() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        struct Count(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> Layer<S> for Count {
            fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let logged = Arc::new(AtomicUsize::new(0));
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry()
                .with(ProbeCloses)
                .with(Count(logged.clone())),
        );
        let not_found =
            "AMQPError { kind: Soft(NOTFOUND), message: \"NOT_FOUND - no exchange 'e'\" }";
        let refused = "AMQPError { kind: Soft(ACCESSREFUSED), message: \"ACCESS_REFUSED\" }";
        let logged_of = |emit: &dyn Fn()| {
            let before = logged.load(Ordering::Relaxed);
            tracing::dispatcher::with_default(&dispatch, emit);
            logged.load(Ordering::Relaxed) - before
        };
        assert_eq!(
            logged_of(
                &|| tracing::error!(target: "lapin::channel", channel = 2, error = ?not_found, "Channel closed")
            ),
            0
        );
        for emit in [
            &(|| tracing::error!(target: "lapin::channel", channel = 2, error = ?refused, "Channel closed"))
                as &dyn Fn(),
            &|| tracing::error!(target: "lapin::channel", error = ?not_found, "Got a bad acknowledgement"),
            &|| tracing::warn!(target: "lapin::channel", error = ?not_found, "Channel closed"),
            &|| tracing::error!(target: "bugflow::runner", error = ?not_found, "Channel closed"),
        ] {
            assert_eq!(logged_of(emit), 1);
        }
    }

    #[test]
    fn every_metric_has_help_and_a_consumer_shows_every_counter_from_the_start() {
        // Only `prometheus()` installs a recorder, once per process.
        let handle = prometheus().expect("the Prometheus recorder installs");
        register_consumer("telemetry-test");
        let stats = Stats::default();
        stats.count("telemetry-test", Counted::Published(3));
        let text = handle.render();
        for &(name, kind, _) in METRICS {
            if kind == Kind::Counter && name.starts_with("bugflow_messages_") {
                assert!(
                    text.contains(&format!("{name}{{consumer=\"telemetry-test\"")),
                    "{name} is exported at start: {text}"
                );
            }
            if text.contains(name) {
                assert!(text.contains(&format!("# HELP {name} ")), "HELP of {name}");
            }
        }
        assert!(text.contains("bugflow_results_published_total{consumer=\"telemetry-test\"} 3"));
        assert_eq!(Stats::get(&stats.results), 3);
    }
}
