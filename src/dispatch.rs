//! One message's way from the pipeline to its ack, and the ack decisions.
//!
//! [`dispatch`] runs, in this order and only here: the pipeline's plan (reads only) → the
//! effects it planned (store, Bugzilla writer) → the results to the sinks (confirmed by the
//! broker) → the settle decision the runner carries out. A result is never published before
//! its effects are done, and a message is never acked before its result is confirmed.
//!
//! | pipeline says              | then                                                   | settle       |
//! |----------------------------|--------------------------------------------------------|--------------|
//! | results                    | effects done, then each result confirmed by the broker | ack          |
//! |                            | (and written to JSONL); a publish that keeps failing   | (or requeue) |
//! |                            | → requeue once                                         |              |
//! | skip (private bug, newrepo)| logged and counted                                     | ack          |
//! | dead-letter (bad input)    | published to the dead-letter exchange with the reason  | ack          |
//! |                            | — if that fails                                         | reject       |
//! | retry (5xx, timeout)       | published to the consumer's retry queue with its try   | ack          |
//! |                            | count; it comes back after `retry_delay_seconds`       |              |
//! |                            | — if that publish fails                                | requeue      |
//! |                            | after `retry_attempts` tries                           | dead-letter  |
//! | halt (API key revoked)     | the consumer stops taking messages                     | requeue      |
//!
//! A consumer that keeps an archive (`[sinks.archive]`) fetches what its flow needs before
//! the plan, keeps it on the message, and writes the message to the archive once it is
//! settled for good (not a retry or a requeue), before the ack ([`crate::sinks::archive`]).
//!
//! The same decisions serve `bugflow run` (sinks on the broker, [`dispatch`]) and `bugflow
//! replay` (sinks in-process), so a replay exercises exactly those of the live service; a
//! replay calls the two halves of [`dispatch`] apart ([`process`] on every core, then
//! [`deliver`] in the archive's order).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use std::time::Instant;

use crate::error::{Action, Stage, StageError};
use crate::message::Message;
use crate::pipeline::Pipeline;
use crate::result::ResultMessage;
use crate::sinks::archive::{ArchiveSink, Kept};
use crate::sinks::dead_letter::DeadLetterSink;
use crate::sinks::jsonl::JsonlSink;
use crate::sinks::results::ResultsSink;
use crate::sinks::retry::RetrySink;
use crate::telemetry::Counted;
pub use crate::telemetry::Stats;

/// Where one consumer's output goes. Any of them may be absent (a replay to stdout has only
/// JSONL).
#[derive(Clone, Default)]
pub struct Sinks {
    pub results: Option<ResultsSink>,
    pub dead_letter: Option<DeadLetterSink>,
    /// Where a transient failure waits for its next try. Without it (a replay) a transient
    /// failure is requeued once.
    pub retry: Option<RetrySink>,
    pub jsonl: Option<JsonlSink>,
    /// Where each settled message is kept with what was fetched to score it (a consumer's
    /// `[sinks.archive]`).
    pub archive: Option<ArchiveSink>,
}

/// How to settle the input message.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Done: results delivered, or skipped, or dead-lettered.
    Ack(Done),
    /// Give it back to the queue (a transient failure that could not wait in the retry
    /// queue, or one on a first delivery of a replay).
    Requeue(String),
    /// Give it back to the queue and stop consuming: nothing can be processed until an
    /// operator acts.
    Halt(String),
    /// Could not even be dead-lettered by us: reject, the queue's DLX catches it.
    Reject(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    Published(usize),
    Skipped(String),
    DeadLettered(String),
    /// Parked in the retry queue for its next try.
    Retrying(String),
}

/// Runs the pipeline on `message`, delivers what it produced, and says how to settle it.
///
/// A message in flight is this future, in a task of its own (`runner`): its size is
/// copied when the task is made and held while the message waits for its confirm, by each
/// of up to `prefetch` messages. The paths few messages take (a consumer's archive, a
/// failure) are boxed, so that they are not part of every message's size: inline, they had
/// made the runner's task for one message 33 KB, copied several times over (3 % of a
/// bug-triage consumer's CPU in `perf`).
pub async fn dispatch(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
) -> Settle {
    match &sinks.archive {
        None => {
            let processed = process(pipeline, stats, message).await;
            deliver(pipeline, sinks, stats, message, processed).await
        }
        Some(archive) => Box::pin(dispatch_kept(pipeline, sinks, stats, message, archive)).await,
    }
}

/// [`dispatch`] for a consumer that keeps an archive of what it read.
async fn dispatch_kept(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
    archive: &ArchiveSink,
) -> Settle {
    let (enriched, processed) = process_enriched(pipeline, stats, message).await;
    let settle = deliver(pipeline, sinks, stats, &enriched, processed).await;
    keep(pipeline, archive, &enriched, settle).await
}

/// [`process`] for a consumer that keeps an archive: what the flow would fetch is fetched
/// first and kept on the message ([`Pipeline::enrichment`]), and the flow reads it from
/// there, as a replay of the archived line will. A failed fetch is the flow's own error (a
/// skip, a retry), and the flow does not run.
async fn process_enriched(
    pipeline: &Pipeline,
    stats: &Arc<Stats>,
    message: &Message,
) -> (Message, Processed) {
    let started = Instant::now();
    let mut enriched = message.clone();
    let fetched = if message.enrichment.is_some() {
        Ok(None)
    } else {
        guarded(pipeline.enrichment(message)).await.map(Some)
    };
    match fetched {
        Ok(enrichment) => {
            if let Some(enrichment) = enrichment.filter(|e| !e.is_empty()) {
                enriched.enrichment = Some(Arc::new(enrichment));
            }
            let mut processed = process(pipeline, stats, &enriched).await;
            processed.started = started;
            (enriched, processed)
        }
        Err(error) => {
            stats.count(pipeline.name(), Counted::Received);
            let results = Err(error);
            (enriched, Processed { results, started })
        }
    }
}

/// Writes a message settled for good to the consumer's archive before it is acked; one
/// that will come again is written then. A line not written keeps the message unacked.
async fn keep(
    pipeline: &Pipeline,
    archive: &ArchiveSink,
    message: &Message,
    settle: Settle,
) -> Settle {
    let settled_for_good = match &settle {
        Settle::Ack(Done::Retrying(_)) | Settle::Requeue(_) | Settle::Halt(_) => false,
        Settle::Ack(_) | Settle::Reject(_) => true,
    };
    if !settled_for_good {
        return settle;
    }
    let written = archive.keep(message).await;
    let outcome = match written {
        Ok(Kept::Written) => "written",
        Ok(Kept::AlreadyKept) => "already_kept",
        Err(_) => "failed",
    };
    metrics::counter!("bugflow_archive_lines_total", "consumer" => pipeline.name().to_owned(), "outcome" => outcome)
        .increment(1);
    match written {
        Ok(_) => settle,
        Err(e) => {
            tracing::error!(consumer = pipeline.name(), error = %e, "could not archive the message: requeueing it");
            Settle::Requeue(format!(
                "writing the message to the consumer's archive: {e}"
            ))
        }
    }
}

/// What the pipeline and its effects made of one message, not yet delivered: the first
/// half of [`dispatch`]. A replay runs this half of many messages on every core, then
/// delivers each in order ([`crate::cmd::replay`]).
pub struct Processed {
    results: Result<Vec<Ready>, StageError>,
    started: Instant,
}

/// A result as the sinks of its delivery will take it.
// Whole is the size a result always was in the vector of a message's results; boxing it
// would be one allocation more for each result of the live path, to shrink the others.
#[allow(clippy::large_enum_variant)]
enum Ready {
    /// Whole, for a sink that reads its fields (the results exchange).
    Whole(ResultMessage),
    /// Its JSONL line alone (what [`ResultMessage::to_json`] makes), for sinks that only
    /// write lines.
    Line { message_id: String, json: Vec<u8> },
    /// Nothing: no sink takes it, it is counted.
    Counted,
}

/// What the sinks of a delivery read of each result ([`Processed::ready_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The result whole: some sink publishes it.
    Whole,
    /// Its JSONL line: the only sink writes lines.
    Line,
    /// Nothing: no sink takes results (a replay that counts them).
    Count,
}

impl Needs {
    /// What `sinks` read of a result.
    pub fn of(sinks: &Sinks) -> Needs {
        match (&sinks.results, &sinks.jsonl) {
            (Some(_), _) => Needs::Whole,
            (None, Some(_)) => Needs::Line,
            (None, None) => Needs::Count,
        }
    }
}

impl Processed {
    /// Each result made what `needs` says the delivery's sinks read of it, here rather
    /// than where it is delivered: a replay processes on every core and delivers in order
    /// on one, and a result whole (its event data, its scores: a few dozen blocks) would be
    /// written out and freed there, each block crossing back to the heap of the thread
    /// that made it. Delivered with sinks that need more than `needs`, a result is not
    /// lost: its message is settled as a sink failure.
    pub fn ready_for(mut self, needs: Needs) -> Processed {
        if needs != Needs::Whole
            && let Ok(results) = &mut self.results
        {
            for ready in results.iter_mut() {
                if let Ready::Whole(result) = ready {
                    *ready = match needs {
                        Needs::Line => Ready::Line {
                            json: result.to_json(),
                            message_id: std::mem::take(&mut result.message_id),
                        },
                        _ => Ready::Counted,
                    };
                }
            }
        }
        self
    }
}

/// The pipeline's plan and effects on `message` (reads and effects only, no sink).
pub async fn process(pipeline: &Pipeline, stats: &Arc<Stats>, message: &Message) -> Processed {
    let consumer = pipeline.name();
    stats.count(consumer, Counted::Received);
    let started = Instant::now();
    // A panic while processing one message (a bug of ours, met by some input) dead-letters
    // that message with the reason; the consumer goes on with the next.
    let results = guarded(plan_and_apply(pipeline, consumer, message))
        .await
        .map(|results| results.into_iter().map(Ready::Whole).collect());
    Processed { results, started }
}

/// `work`, with a panic in it (a bug of ours, met by some input) made the error that
/// dead-letters the message with the reason.
///
/// A plain function, not an `async fn`: an `async fn` would keep `work` in its state both as
/// the argument and inside `catch_unwind`, twice its size (see [`dispatch`]).
fn guarded<T>(
    work: impl Future<Output = Result<T, StageError>>,
) -> impl Future<Output = Result<T, StageError>> {
    AssertUnwindSafe(work).catch_unwind().map(|caught| {
        caught.unwrap_or_else(|panic| {
            let what = panic_text(panic.as_ref());
            tracing::error!(panic = %what, "processing panicked: dead-lettering the message");
            Err(StageError::invalid(
                Stage::Pipeline,
                format!("processing panicked: {what}"),
            ))
        })
    })
}

/// The second half of [`dispatch`]: what [`process`] made of `message` to the sinks, and how
/// to settle the message.
pub async fn deliver(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
    processed: Processed,
) -> Settle {
    let consumer = pipeline.name().to_owned();
    let Processed { results, started } = processed;
    let settle = match results {
        Ok(results) => {
            let publish_started = Instant::now();
            let mut failure = None;
            let count = results.len();
            for ready in results {
                if let Some(error) = send(sinks, ready).await {
                    failure = Some(error);
                    break;
                }
            }
            if failure.is_none()
                && let Some(jsonl) = &sinks.jsonl
                && let Err(e) = jsonl.message_done().await
            {
                failure = Some(StageError::transient(
                    Stage::Sink,
                    format!("flushing JSONL: {e}"),
                ));
            }
            metrics::histogram!("bugflow_stage_seconds", "consumer" => consumer.clone(), "stage" => "sink")
                .record(publish_started.elapsed().as_secs_f64());
            match failure {
                None => {
                    stats.count(&consumer, Counted::Published(count as u64));
                    tracing::debug!(results = count, "delivered");
                    Settle::Ack(Done::Published(count))
                }
                Some(error) => Box::pin(on_error(pipeline, sinks, stats, message, error)).await,
            }
        }
        Err(error) => Box::pin(on_error(pipeline, sinks, stats, message, error)).await,
    };
    metrics::histogram!("bugflow_stage_seconds", "consumer" => consumer, "stage" => "total")
        .record(started.elapsed().as_secs_f64());
    settle
}

/// One result to each sink that takes it; the error, if one of them failed.
async fn send(sinks: &Sinks, ready: Ready) -> Option<StageError> {
    let failed = |what: String| Some(StageError::transient(Stage::Sink, what));
    match ready {
        Ready::Whole(result) => {
            if let Some(sink) = &sinks.results
                && let Err(e) = sink.send(&result).await
            {
                return failed(format!("publishing result {}: {e}", result.message_id));
            }
            if let Some(jsonl) = &sinks.jsonl
                && let Err(e) = jsonl.write(&result).await
            {
                return failed(format!(
                    "writing result {} to JSONL: {e}",
                    result.message_id
                ));
            }
            None
        }
        // A result made ready for fewer sinks than these (a caller's mistake, see
        // `Processed::ready_for`) fails its message rather than reaching some of them.
        _ if sinks.results.is_some() => failed(
            "a result made ready as its line or to be counted, and a sink publishes it".into(),
        ),
        Ready::Line { message_id, json } => match &sinks.jsonl {
            Some(jsonl) => match jsonl.write_line(json).await {
                Ok(()) => None,
                Err(e) => failed(format!("writing result {message_id} to JSONL: {e}")),
            },
            None => None,
        },
        Ready::Counted if sinks.jsonl.is_some() => {
            failed("a result made ready to be counted, and a sink writes it".into())
        }
        Ready::Counted => None,
    }
}

/// The pipeline's plan, then its effects, each timed.
async fn plan_and_apply(
    pipeline: &Pipeline,
    consumer: &str,
    message: &Message,
) -> Result<Vec<ResultMessage>, StageError> {
    let started = Instant::now();
    let planned = pipeline.plan(message).await;
    metrics::histogram!("bugflow_stage_seconds", "consumer" => consumer.to_owned(), "stage" => "process")
        .record(started.elapsed().as_secs_f64());
    let effects_started = Instant::now();
    let applied = match planned {
        Ok(planned) => pipeline.effects().apply(planned).await,
        Err(error) => Err(error),
    };
    metrics::histogram!("bugflow_stage_seconds", "consumer" => consumer.to_owned(), "stage" => "effects")
        .record(effects_started.elapsed().as_secs_f64());
    applied
}

/// What a panic said (its message, when it has one).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

async fn on_error(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
    error: StageError,
) -> Settle {
    let consumer = pipeline.name().to_owned();
    match error.action {
        Action::Skip => {
            tracing::info!(reason = %error.reason, stage = %error.stage, "skipped");
            stats.count(&consumer, Counted::Skipped);
            Settle::Ack(Done::Skipped(error.reason))
        }
        Action::Halt => {
            tracing::error!(reason = %error.reason, stage = %error.stage, "halting: the consumer stops taking messages");
            crate::telemetry::halt(&consumer, &error.reason);
            Settle::Halt(error.reason)
        }
        Action::Retry => retry(pipeline, sinks, stats, message, error).await,
        Action::DeadLetter => dead_letter(pipeline, sinks, stats, message, error).await,
    }
}

/// A transient failure: to the retry queue for a later try, or — its tries spent — to the
/// dead letters.
async fn retry(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
    error: StageError,
) -> Settle {
    let consumer = pipeline.name();
    let attempt = message.attempt();
    let spent = |tries: String| {
        StageError::new(
            error.stage,
            Action::DeadLetter,
            format!("still failing after {tries}: {}", error.reason),
        )
    };
    match &sinks.retry {
        Some(retry) if attempt < retry.attempts => {
            stats.count(consumer, Counted::Requeued);
            match retry.send(consumer, message, &error).await {
                Ok(()) => {
                    tracing::warn!(reason = %error.reason, stage = %error.stage, attempt, "transient failure: retrying later");
                    Settle::Ack(Done::Retrying(error.reason))
                }
                Err(e) => {
                    tracing::warn!(reason = %error.reason, error = %e, "transient failure, and the retry queue did not take it: requeueing");
                    Settle::Requeue(error.reason)
                }
            }
        }
        Some(_) => {
            let error = spent(format!("{attempt} tries"));
            dead_letter(pipeline, sinks, stats, message, error).await
        }
        None if !message.redelivered => {
            tracing::warn!(reason = %error.reason, stage = %error.stage, "transient failure: requeueing once");
            stats.count(consumer, Counted::Requeued);
            Settle::Requeue(error.reason)
        }
        None => {
            let error = spent("a redelivery".into());
            dead_letter(pipeline, sinks, stats, message, error).await
        }
    }
}

async fn dead_letter(
    pipeline: &Pipeline,
    sinks: &Sinks,
    stats: &Arc<Stats>,
    message: &Message,
    error: StageError,
) -> Settle {
    let consumer = pipeline.name();
    let store = pipeline.effects().store.as_deref();
    tracing::warn!(reason = %error.reason, stage = %error.stage, "dead-lettering");
    if let Some(sink) = &sinks.dead_letter
        && let Err(e) = sink.send(store, consumer, message, &error).await
    {
        tracing::error!(error = %e, "could not publish the dead letter: rejecting to the queue's DLX");
        stats.count(consumer, Counted::Rejected);
        return Settle::Reject(format!("{} (and dead-lettering failed: {e})", error.reason));
    }
    stats.count(consumer, Counted::DeadLettered(error.stage));
    Settle::Ack(Done::DeadLettered(error.reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::consumer::ConsumerSpec;
    use crate::models::registry::ModelSet;

    /// The bug-triage consumer as shipped, without models (a result is still made: the
    /// event's data), and one of BMO's webhook samples.
    async fn processed() -> (Pipeline, Message, Vec<ResultMessage>) {
        let spec = ConsumerSpec::builtin("bug-triage", &Config::default()).unwrap();
        let pipeline = Pipeline::new(spec, ModelSet::empty());
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pulse/bmo_webhook_public_bug_modify_example.json"
        ))
        .unwrap();
        let message = Message::new("exchange/bugzilla/webhooks", "bug.modify:priority", body);
        let Ok(results) = process(&pipeline, &Default::default(), &message)
            .await
            .results
        else {
            panic!("the sample makes a result");
        };
        let results: Vec<ResultMessage> = results
            .into_iter()
            .map(|ready| match ready {
                Ready::Whole(result) => result,
                _ => unreachable!("process makes results whole"),
            })
            .collect();
        assert!(!results.is_empty());
        (pipeline, message, results)
    }

    fn whole(results: &[ResultMessage]) -> Processed {
        Processed {
            results: Ok(results.iter().cloned().map(Ready::Whole).collect()),
            started: Instant::now(),
        }
    }

    async fn jsonl_sink(path: &std::path::Path) -> Sinks {
        Sinks {
            jsonl: Some(JsonlSink::open(path).await.unwrap().batched()),
            ..Sinks::default()
        }
    }

    async fn delivered(
        sinks: &Sinks,
        pipeline: &Pipeline,
        message: &Message,
        p: Processed,
    ) -> Settle {
        let settle = deliver(pipeline, sinks, &Default::default(), message, p).await;
        if let Some(jsonl) = &sinks.jsonl {
            jsonl.flush().await.unwrap();
        }
        settle
    }

    /// A result made ready as its line where it was made is written as the whole result
    /// would have been, byte for byte; one made ready to be counted is counted.
    #[tokio::test]
    async fn a_result_ready_as_its_line_is_written_as_the_whole_result_is() {
        let (pipeline, message, results) = processed().await;
        let n = results.len();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("whole.jsonl"),
            dir.path().join("line.jsonl"),
        );
        let sinks = jsonl_sink(&a).await;
        assert_eq!(Needs::of(&sinks), Needs::Line);
        let settle = delivered(&sinks, &pipeline, &message, whole(&results)).await;
        assert_eq!(settle, Settle::Ack(Done::Published(n)));
        let sinks = jsonl_sink(&b).await;
        let ready = whole(&results).ready_for(Needs::Line);
        assert!(matches!(
            ready.results.as_deref(),
            Ok([Ready::Line { .. }, ..])
        ));
        let settle = delivered(&sinks, &pipeline, &message, ready).await;
        assert_eq!(settle, Settle::Ack(Done::Published(n)));
        let written = std::fs::read(&a).unwrap();
        assert!(!written.is_empty());
        assert_eq!(written, std::fs::read(&b).unwrap());

        let none = Sinks::default();
        assert_eq!(Needs::of(&none), Needs::Count);
        let ready = whole(&results).ready_for(Needs::Count);
        assert!(matches!(ready.results.as_deref(), Ok([Ready::Counted, ..])));
        let settle = delivered(&none, &pipeline, &message, ready).await;
        assert_eq!(settle, Settle::Ack(Done::Published(n)));
    }

    /// Delivered to a sink that needs more of it than it was made ready for, a result is
    /// not dropped on the way: its message is not settled as published.
    #[tokio::test]
    async fn a_result_ready_for_less_than_its_sinks_read_is_not_settled_as_published() {
        let (pipeline, message, results) = processed().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let sinks = jsonl_sink(&path).await;
        let ready = whole(&results).ready_for(Needs::Count);
        let settle = delivered(&sinks, &pipeline, &message, ready).await;
        assert!(
            !matches!(settle, Settle::Ack(Done::Published(_))),
            "settled as {settle:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
}
