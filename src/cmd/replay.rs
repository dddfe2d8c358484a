//! `bugflow replay --from FILE…`: run an archive through the consumers' pipelines.
//!
//! In-process (the default) nothing touches a broker: each line goes to the consumer whose
//! bindings match its exchange and routing key (or to `--consumer`), through the very
//! [`dispatch`] the live service uses, and results go to JSONL or stdout. With `--publish`
//! the archived messages are instead published back to their exchanges on the broker (with
//! confirms), where the running consumers pick them up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::archive::ArchiveLine;
use crate::config::Config;
use crate::dispatch::{Done, Needs, Processed, Settle, Sinks, Stats, deliver, process};
use crate::message::Message;
use crate::pipeline::Pipeline;
use crate::pulse::publish::{Outgoing, Publisher};
use crate::pulse::source::json_to_headers;
use crate::sinks::jsonl::JsonlSink;

#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub files: Vec<PathBuf>,
    /// Force every line through this consumer instead of matching bindings.
    pub consumer: Option<String>,
    /// Results to this JSONL file (`-` for stdout); none: count only.
    pub out: Option<PathBuf>,
    /// Publish the archived messages back into the broker instead.
    pub publish: bool,
    /// Never touch the network: enrichment only from the archive lines (`enrichment`); a
    /// message that lacks what its flow needs is a counted skip, never a fetch.
    pub offline: bool,
    /// Draw a progress bar on stderr (over the archives' bytes).
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub read: u64,
    pub results: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    /// Lines that no consumer's bindings match.
    pub unrouted: u64,
    /// Messages published back to the broker (`--publish`).
    pub published: u64,
    /// `--publish`: lines whose exchange does not exist on the broker (not published;
    /// `amqp.declare_exchanges = true` declares them instead).
    pub missing_exchange: u64,
    /// Dead-letter and skip reasons, with how often each occurred: `<kind>: <reason>` with
    /// each word that holds a digit written `#` ([`pattern_of`]), so that 5,000 private
    /// bugs, or 10,000 unreadable lines, make one row each.
    pub reasons: BTreeMap<String, u64>,
    /// The first reason as it was written of each row of `reasons`.
    pub examples: BTreeMap<String, String>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn per_second(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Counts what one message became.
    fn settled(&mut self, settle: Settle) {
        match settle {
            Settle::Ack(Done::Published(n)) => self.results += n as u64,
            Settle::Ack(Done::Skipped(reason)) => {
                self.skipped += 1;
                self.note("skipped", &reason);
            }
            // In-process there is no queue to requeue to: a sink failure is final.
            Settle::Ack(Done::DeadLettered(reason) | Done::Retrying(reason))
            | Settle::Requeue(reason)
            | Settle::Halt(reason)
            | Settle::Reject(reason) => {
                self.dead_lettered += 1;
                self.note("dead-lettered", &reason);
            }
        }
    }

    fn note(&mut self, kind: &str, reason: &str) {
        let short: String = pattern_of(reason).chars().take(80).collect();
        let key = format!("{kind}: {short}");
        self.examples
            .entry(key.clone())
            .or_insert_with(|| reason.to_owned());
        *self.reasons.entry(key).or_default() += 1;
    }

    pub fn print(&self) {
        eprintln!("replay summary");
        eprintln!("  messages read   {:>10}", self.read);
        eprintln!("  results         {:>10}", self.results);
        eprintln!("  skipped         {:>10}", self.skipped);
        eprintln!("  dead-lettered   {:>10}", self.dead_lettered);
        eprintln!("  unrouted        {:>10}", self.unrouted);
        if self.published > 0 || self.missing_exchange > 0 {
            eprintln!("  published       {:>10}", self.published);
            eprintln!("  no such exchange{:>10}", self.missing_exchange);
        }
        eprintln!(
            "  elapsed         {:>10.3} s   ({:.0} msg/s)",
            self.elapsed.as_secs_f64(),
            self.per_second()
        );
        if !self.reasons.is_empty() {
            eprintln!("  reasons:");
            for (reason, n) in &self.reasons {
                eprintln!("    {n:>8}  {reason}");
                match self.examples.get(reason) {
                    Some(first) if !reason.ends_with(first.as_str()) => {
                        eprintln!("              first: {first}");
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A reason as a summary groups it: each word (a run of letters and digits) that holds a
/// digit is `#`. Reasons name what they are about (`bug 1019971 is private: …`, `line 12: …`,
/// `… for push 4711`): grouped as written, every message would be a row of its own.
fn pattern_of(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(start) = rest.find(|c: char| c.is_alphanumeric()) {
        out.push_str(&rest[..start]);
        let word = &rest[start..];
        let end = word
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(word.len());
        let (word, after) = word.split_at(end);
        if word.contains(|c: char| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The pipelines a replay runs: every one, or the one named by `--consumer`; each made
/// offline for `--offline`.
fn chosen(all: &[Pipeline], options: &ReplayOptions) -> anyhow::Result<Vec<Pipeline>> {
    let picked: Vec<&Pipeline> = match &options.consumer {
        Some(name) => vec![
            all.iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| anyhow::anyhow!("no consumer {name:?}"))?,
        ],
        None => all.iter().collect(),
    };
    Ok(picked
        .into_iter()
        .map(|p| {
            let p = p.clone();
            if options.offline { p.offline() } else { p }
        })
        .collect())
}

/// How many lines a replay reads before it processes them: enough that every core gets a
/// long slice, few enough that a replay's memory stays small.
pub const BATCH: usize = 4096;

/// How many bytes of lines a batch holds at most, whatever their number: a line that
/// stores a full bug is 14 KB or more, and three batches of 4,096 of them (one read, one
/// processed, one delivered) held 190 MB.
pub const BATCH_BYTES: usize = 4 << 20;

/// One entry of a batch: an archive line not yet parsed (its number, for reasons), or a
/// message already routed to a pipeline (by index).
pub enum Item {
    Line(u64, String),
    Routed(usize, Message),
}

/// What the workers made of one [`Item`], to be counted and delivered in order.
enum Outcome {
    /// The line is not an archived message: why.
    Unreadable(String),
    /// No consumer binds it: why.
    Unrouted(String),
    /// Each pipeline it went through, with what that pipeline made of it.
    Processed(Message, Vec<(usize, Processed)>),
}

/// Replays in-process through `pipelines` (or the one named by `--consumer`).
pub async fn replay(all: &[Pipeline], options: &ReplayOptions) -> anyhow::Result<Summary> {
    let pipelines = Arc::new(chosen(all, options)?);
    let forced = options.consumer.is_some();
    let sinks = Sinks {
        jsonl: match &options.out {
            Some(path) => Some(JsonlSink::open(path).await?.batched()),
            None => None,
        },
        ..Sinks::default()
    };
    let stats = Arc::new(Stats::default());
    let mut summary = Summary::default();
    let bar = progress_bar(&options.files, options.progress);
    let started = Instant::now();
    let mut batches = Batches::new(pipelines, forced, stats);
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    let mut bytes = 0;
    let mut files_read = 0;
    for file in &options.files {
        let mut lines = crate::archive::lines(file).await?;
        let mut number = 0u64;
        while let Some(line) = lines.next_line().await? {
            number += 1;
            if number.is_multiple_of(64) {
                bar.set_position(files_read + lines.bytes_read());
            }
            if number.is_multiple_of(1024) {
                bar.set_message(format!("{} messages", summary.read));
            }
            if line.trim().is_empty() {
                continue;
            }
            summary.read += 1;
            bytes += line.len();
            batch.push(Item::Line(number, line));
            if batch.len() >= BATCH || bytes >= BATCH_BYTES {
                bytes = 0;
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                batches.push(full, &sinks, &mut summary).await?;
            }
        }
        files_read += lines.bytes_read();
        bar.set_position(files_read);
    }
    batches.push(batch, &sinks, &mut summary).await?;
    batches.finish(&sinks, &mut summary).await?;
    if let Some(jsonl) = &sinks.jsonl {
        jsonl.flush().await?;
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// A replay's batches: each is parsed, routed and processed on every core while the one
/// before it is delivered, and delivered in the order the batches came.
///
/// Each core takes one contiguous slice of a batch as one task: a message is never handed
/// from thread to thread on its own, and results leave in the order they were read. Nothing
/// a pipeline does depends on the messages before it (a replay has no store), so the
/// results are those of one message after the other. Delivering (the results written,
/// counted) is the part that runs on one core; while it runs, the next batch keeps the
/// other cores busy instead of waiting for it (two batches in memory at most).
pub struct Batches {
    pipelines: Arc<Vec<Pipeline>>,
    forced: bool,
    stats: Arc<Stats>,
    /// The batch being processed, not yet delivered.
    pending: Option<tokio::task::JoinHandle<anyhow::Result<Vec<Outcome>>>>,
}

impl Batches {
    pub fn new(pipelines: Arc<Vec<Pipeline>>, forced: bool, stats: Arc<Stats>) -> Batches {
        Batches {
            pipelines,
            forced,
            stats,
            pending: None,
        }
    }

    /// Starts processing `batch`, then delivers the batch before it (if any).
    pub async fn push(
        &mut self,
        batch: Vec<Item>,
        sinks: &Sinks,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let next = tokio::spawn(process_batch(
            self.pipelines.clone(),
            self.forced,
            Needs::of(sinks),
            self.stats.clone(),
            batch,
        ));
        match self.pending.replace(next) {
            Some(before) => self.settle(before, sinks, summary).await,
            None => Ok(()),
        }
    }

    /// Delivers the last batch (taking the batches: none can be pushed after it).
    pub async fn finish(mut self, sinks: &Sinks, summary: &mut Summary) -> anyhow::Result<()> {
        match self.pending.take() {
            Some(last) => self.settle(last, sinks, summary).await,
            None => Ok(()),
        }
    }

    /// Delivers each message's results, in the batch's order, and counts how each settled.
    async fn settle(
        &self,
        processed: tokio::task::JoinHandle<anyhow::Result<Vec<Outcome>>>,
        sinks: &Sinks,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let outcomes = processed
            .await
            .map_err(|e| anyhow::anyhow!("a replay worker failed: {e}"))??;
        for outcome in outcomes {
            match outcome {
                Outcome::Unreadable(why) => {
                    summary.dead_lettered += 1;
                    summary.note("dead-lettered", &why);
                }
                Outcome::Unrouted(why) => {
                    summary.unrouted += 1;
                    summary.note("unrouted", &why);
                }
                Outcome::Processed(message, each) => {
                    for (i, processed) in each {
                        let settle =
                            deliver(&self.pipelines[i], sinks, &self.stats, &message, processed)
                                .await;
                        summary.settled(settle);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A batch processed: four tasks a core, each over a contiguous slice (so that a core busy
/// delivering the batch before does not hold this one up; a small batch stays on this
/// task).
async fn process_batch(
    pipelines: Arc<Vec<Pipeline>>,
    forced: bool,
    needs: Needs,
    stats: Arc<Stats>,
    mut batch: Vec<Item>,
) -> anyhow::Result<Vec<Outcome>> {
    /// Below this many messages a slice is not worth a task.
    const MIN_SLICE: usize = 64;
    let workers = (4 * crate::models::linear::cores())
        .min(batch.len() / MIN_SLICE)
        .max(1);
    let per = batch.len().div_ceil(workers);
    let mut slices = Vec::with_capacity(workers);
    while batch.len() > per {
        let rest = batch.split_off(per);
        slices.push(std::mem::replace(&mut batch, rest));
    }
    slices.push(batch);
    let slice_of = |slice: Vec<Item>, pipelines: Arc<Vec<Pipeline>>, stats: Arc<Stats>| async move {
        let mut out = Vec::with_capacity(slice.len());
        for item in slice {
            out.push(outcome(&pipelines, forced, needs, &stats, item).await);
        }
        out
    };
    let mut slices = slices.into_iter();
    let first = slices.next().unwrap_or_default();
    let tasks: Vec<_> = slices
        .map(|slice| tokio::spawn(slice_of(slice, pipelines.clone(), stats.clone())))
        .collect();
    let mut all = slice_of(first, pipelines.clone(), stats.clone()).await;
    for task in tasks {
        all.extend(
            task.await
                .map_err(|e| anyhow::anyhow!("a replay worker failed: {e}"))?,
        );
    }
    Ok(all)
}

/// One item through [`ArchiveLine::parse`] (a line), then through each pipeline whose
/// bindings match it (every one of them when the consumer was forced), its results made
/// what the sinks will read of them (`needs`).
async fn outcome(
    pipelines: &[Pipeline],
    forced: bool,
    needs: Needs,
    stats: &Arc<Stats>,
    item: Item,
) -> Outcome {
    let (mut message, targets) = match item {
        Item::Routed(i, message) => (message, vec![i]),
        Item::Line(number, line) => {
            let message = match ArchiveLine::parse(&line) {
                Ok(m) => m,
                Err(e) => return Outcome::Unreadable(format!("line {number}: {e}")),
            };
            let targets: Vec<usize> = (0..pipelines.len())
                .filter(|&i| {
                    forced
                        || pipelines[i]
                            .spec()
                            .accepts(&message.exchange, &message.routing_key)
                })
                .collect();
            if targets.is_empty() {
                return Outcome::Unrouted(format!(
                    "no consumer binds {} {}",
                    message.exchange, message.routing_key
                ));
            }
            (message, targets)
        }
    };
    let mut each = Vec::with_capacity(targets.len());
    for i in targets {
        each.push((
            i,
            process(&pipelines[i], stats, &message)
                .await
                .ready_for(needs),
        ));
    }
    // Delivery reads the message, never its stored enrichment (a full bug with its comments,
    // a json-pushes answer: most of a line's memory). Freed here, on the thread that parsed
    // it, it goes back to this thread's heap at once; freed by the delivering thread, every
    // block of it would take mimalloc's slower way back across threads.
    message.enrichment = None;
    Outcome::Processed(message, each)
}

/// A bar over the archives' bytes on stderr; hidden when not asked for.
fn progress_bar(files: &[PathBuf], shown: bool) -> ProgressBar {
    if !shown {
        return ProgressBar::hidden();
    }
    let bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Publishes archived messages back to their exchanges (`--publish`).
pub async fn publish_back(config: Arc<Config>, files: &[PathBuf]) -> anyhow::Result<Summary> {
    let publisher = Publisher::connect(config.clone()).await?;
    let mut exchanges = Exchanges::open(&config).await?;
    let mut summary = Summary::default();
    let started = Instant::now();
    for file in files {
        let mut lines = crate::archive::lines(file).await?;
        let mut i = 0usize;
        while let Some(line) = lines.next_line().await? {
            i += 1;
            if line.trim().is_empty() {
                continue;
            }
            summary.read += 1;
            let message = match ArchiveLine::parse(&line) {
                Ok(m) => m,
                Err(e) => {
                    summary.dead_lettered += 1;
                    summary.note("dead-lettered", &format!("line {i}: {e}"));
                    continue;
                }
            };
            if !exchanges.usable(&message.exchange).await? {
                summary.missing_exchange += 1;
                summary.note(
                    "not published",
                    &format!("exchange {} does not exist", message.exchange),
                );
                continue;
            }
            let mut out = Outgoing::json(&message.exchange, &message.routing_key, &message.body);
            let published = match json_to_headers(&message.headers) {
                Ok(headers) => {
                    out.headers = headers;
                    publisher.publish(&out).await
                }
                Err(e) => Err(e.into()),
            };
            match published {
                Ok(()) => summary.published += 1,
                // This line can never be published as it is: count it and go on.
                Err(e) if !e.is_transient() => {
                    summary.dead_lettered += 1;
                    summary.note("dead-lettered", &format!("line {i}: {e}"));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    publisher.close().await;
    exchanges.close().await;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Which archived exchanges can be published to, asked of the broker once per name: a
/// passive declare, or a declare when `amqp.declare_exchanges` is on (a local broker). A
/// publish to a missing exchange would close the channel and stop the replay.
struct Exchanges {
    connection: lapin::Connection,
    declare: bool,
    known: BTreeMap<String, bool>,
}

impl Exchanges {
    async fn open(config: &Config) -> anyhow::Result<Exchanges> {
        Ok(Exchanges {
            connection: crate::pulse::connect::connect(config, "replay-exchanges").await?,
            declare: config.amqp.declare_exchanges,
            known: BTreeMap::new(),
        })
    }

    async fn usable(&mut self, name: &str) -> anyhow::Result<bool> {
        if let Some(known) = self.known.get(name) {
            return Ok(*known);
        }
        let usable = if name.is_empty() {
            true // the default exchange always exists
        } else if self.declare {
            let channel = self.connection.create_channel().await?;
            crate::pulse::topology::declare_own_exchange(&channel, name).await?;
            let _ = channel.close(200, "declared".into()).await;
            true
        } else {
            crate::pulse::topology::exchange_exists(&self.connection, name).await?
        };
        if !usable {
            tracing::warn!(
                exchange = name,
                "archived exchange does not exist: its lines are counted, not published"
            );
        }
        self.known.insert(name.to_owned(), usable);
        Ok(usable)
    }

    async fn close(self) {
        let _ = self.connection.close(200, "replay done".into()).await;
    }
}

/// Every configured consumer's pipeline, with its hg and Bugzilla clients and no store (a
/// replay writes nothing; `record --enrich` only fetches).
pub fn configured_pipelines(config: Arc<Config>) -> anyhow::Result<Vec<Pipeline>> {
    let app = crate::app::App::new(config)?;
    let specs = crate::consumer::load_all(&app.config)?;
    app.check(&specs, crate::app::Mode::Replay)?;
    Ok(specs
        .into_iter()
        .map(|spec| app.pipeline(spec, None))
        .collect())
}

/// `bugflow replay`: in-process through every consumer of the configuration (no store, so
/// nothing is written), or `--publish`ed back to the broker; prints the summary.
pub async fn command(config: Config, options: ReplayOptions) -> anyhow::Result<()> {
    let summary = if options.publish {
        publish_back(Arc::new(config), &options.files).await?
    } else {
        let pipelines = configured_pipelines(Arc::new(config))?;
        if options.offline {
            eprintln!("offline: enrichment from the archive only; nothing is fetched");
        }
        replay(&pipelines, &options).await?
    };
    summary.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5,000 private bugs and 300 unreadable lines make one row each, with the first
    /// reason as it was written; reasons without numbers stay apart as before.
    #[test]
    fn reasons_that_differ_only_in_their_numbers_make_one_row() {
        let mut summary = Summary::default();
        for id in 1_000_000..1_005_000u64 {
            summary.settled(Settle::Ack(Done::Skipped(format!(
                "bug {id} is private: bugflow never reads or writes it"
            ))));
        }
        for line in 1..=300 {
            summary.note(
                "dead-lettered",
                &format!("line {line}: expected value at line 1 column 1"),
            );
        }
        summary.note("skipped", "pusher ffxbld is in skip_users");
        summary.note("skipped", "pusher sheriff is in skip_users");
        let rows: Vec<(&str, u64)> = summary
            .reasons
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "dead-lettered: line #: expected value at line # column #",
                    300
                ),
                (
                    "skipped: bug # is private: bugflow never reads or writes it",
                    5_000
                ),
                ("skipped: pusher ffxbld is in skip_users", 1),
                ("skipped: pusher sheriff is in skip_users", 1),
            ]
        );
        assert_eq!(
            summary.examples["skipped: bug # is private: bugflow never reads or writes it"],
            "bug 1000000 is private: bugflow never reads or writes it"
        );
        assert_eq!(summary.skipped, 5_000);
        assert_eq!(
            pattern_of("offline: no stored json-pushes answer for push 4711 (é9)"),
            "offline: no stored json-pushes answer for push # (#)"
        );
    }
}
