//! An archive being written: one message a line, with what its flow fetched to score it.
//! `bugflow record` writes one, and so does a consumer whose file asks (`[sinks.archive]`):
//! each message it settled, as `bugflow record --enrich` writes them.
//!
//! A live consumer fetches the full bug of a bug event from Bugzilla, a push's changesets
//! from hg.mozilla.org; both change over time, so a replay that fetches them again scores
//! other inputs. With an archive, the consumer fetches first, keeps the answer on the
//! message, and its flow reads the message as a replay of the line will: `bugflow replay
//! --offline --from <archive>` gives the same results, with no network.
//!
//! A line is written once its message is settled for good (results confirmed, skipped,
//! dead-lettered), and flushed before the message is acked; a message that will come
//! again (a retry, a requeue) is written when it does. A line that cannot be written keeps
//! the message from being acked: it is requeued, as when a result cannot be published.
//! A message redelivered (marked so by the broker: its ack was lost, or the process died
//! between the line and the ack) whose line is among the last written is not written
//! again, so that a replay gives its results once. "The last written" are the last
//! [`RECENT`] lines of this process and, after a restart, those in the last [`TAIL_BYTES`]
//! of the file it appends to: more than a consumer's unacked messages (its `prefetch`, 200
//! for the shipped ones; 16 MiB holds about 700 lines of full bugs). A dated archive whose
//! file of the day is shorter than that reads the end of the day before's too, compressed
//! or not.
//!
//! A consumer runs for months; its archive should not grow for as long. A path with
//! `{date}` in its file name (`archive/bug-triage-{date}.jsonl`) is a new file each UTC
//! day, named by the day its lines were written (`2026-12-07`, so that a shell glob lists
//! the files in order: `bugflow replay --offline --from archive/bug-triage-*`), with
//! `keep_days` the files of older days are deleted as a new day begins, and with `compress`
//! each past day's file is compressed (zstd, its fastest level: about a quarter of the
//! size for full bugs) on a thread of its own, the plain file deleted only once the
//! compressed one reads back to the same bytes; `replay` reads either.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hasher};
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use tokio::sync::Mutex;

use super::jsonl::JsonlSink;
use crate::archive::{ArchiveLine, is_compressed};
use crate::message::Message;

/// Where a dated path takes its day.
pub const DATE: &str = "{date}";

/// How many of the lines last written are remembered, so that a redelivered message among
/// them is not written again.
pub const RECENT: usize = 4096;

/// How much of the end of a file appended to is read for the lines it last holds (at most
/// [`RECENT`] of them are remembered).
pub const TAIL_BYTES: u64 = 16 << 20;

/// What a dated archive does with its past days (`[sinks.archive]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PastDays {
    /// Files of days more than this many days before the current one are deleted.
    pub keep_days: Option<u32>,
    /// Files of past days are compressed (`.jsonl` → `.jsonl.zst`).
    pub compress: bool,
}

/// Whether [`ArchiveSink::keep`] wrote the message's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    Written,
    /// A redelivered message whose line was among the last written: not written again.
    AlreadyKept,
}

/// The archive file of one or more consumers (those of one process naming the same path
/// share it, so their lines never interleave; another process naming it is refused).
#[derive(Clone)]
pub struct ArchiveSink {
    /// The path as written, `{date}` unresolved.
    template: PathBuf,
    /// What becomes of past days' files (dated paths only).
    past: PastDays,
    /// Compressing past days' files, when it is: told when it is done.
    compressing: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
    /// The file being written, the day it is for (`None` for a path without `{date}`), and
    /// the lines last written.
    current: Arc<Mutex<Current>>,
}

struct Current {
    day: Option<NaiveDate>,
    file: JsonlSink,
    recent: Recent,
}

impl ArchiveSink {
    /// Appends to `path` as it is (no `{date}` resolved), creating it and its folders. A
    /// file whose last line was cut short (a process killed while writing it) gets its
    /// newline first: the next line starts a line of its own, and only the cut one is
    /// unreadable (a replay counts it).
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let (file, recent, _) = append(path).await?;
        Ok(Self::writing(path, PastDays::default(), None, file, recent))
    }

    fn writing(
        template: &Path,
        past: PastDays,
        day: Option<NaiveDate>,
        file: JsonlSink,
        recent: Recent,
    ) -> Self {
        ArchiveSink {
            template: template.to_path_buf(),
            past,
            compressing: Arc::default(),
            current: Arc::new(Mutex::new(Current { day, file, recent })),
        }
    }

    /// A consumer's archive: `path` with a `{date}` in its file name is today's file (UTC)
    /// and the next day's from the first line written on it; older days' files are deleted
    /// past `keep_days`, and compressed before that when `past` says so. Without `{date}`,
    /// the one file of [`ArchiveSink::open`].
    pub async fn open_dated(path: &Path, past: PastDays) -> std::io::Result<Self> {
        Self::open_on(path, past, Utc::now().date_naive()).await
    }

    async fn open_on(path: &Path, past: PastDays, today: NaiveDate) -> std::io::Result<Self> {
        if !is_dated(path) {
            return Self::open(path).await;
        }
        let (file, mut recent, written_today) = append(&dated(path, today)).await?;
        if let Some(yesterday) = today.pred_opt()
            && written_today < TAIL_BYTES
        {
            // The last lines reach back into the day before (started soon after midnight,
            // or after a stop across it): the lines the last process wrote but did not ack
            // may be in the day before's file, plain or already compressed.
            recent.add(read_last_lines(dated(path, yesterday)).await);
        }
        let sink = Self::writing(path, past, Some(today), file, recent);
        sink.forget_before(today).await;
        sink.compress_before(today).await;
        Ok(sink)
    }

    /// Writes `message` (with its enrichment) as one archive line, and flushes it; unless
    /// it is redelivered and its line is among the last written.
    pub async fn keep(&self, message: &Message) -> std::io::Result<Kept> {
        self.keep_on(message, Utc::now().date_naive()).await
    }

    /// [`ArchiveSink::keep`] as on `today`: a dated archive moves to `today`'s file first
    /// (remembering the lines of the day before).
    async fn keep_on(&self, message: &Message, today: NaiveDate) -> std::io::Result<Kept> {
        let line = ArchiveLine::from_message(message);
        let id = identity(
            &line.exchange,
            &line.routing_key,
            line.body.as_ref(),
            line.body_base64.as_deref(),
        );
        let mut current = self.current.lock().await;
        if message.redelivered && current.recent.holds(id) {
            return Ok(Kept::AlreadyKept);
        }
        if current.day.is_some_and(|day| day != today) {
            let (next, _, _) = append(&dated(&self.template, today)).await?;
            let before = std::mem::replace(&mut current.file, next);
            current.day = Some(today);
            before.flush().await?;
            // Closed (and unlocked) before it is compressed.
            drop(before);
            self.forget_before(today).await;
            self.compress_before(today).await;
        }
        current.file.write_line(line.to_line().into_bytes()).await?;
        current.file.flush().await?;
        current.recent.remember(id);
        Ok(Kept::Written)
    }

    /// Deletes the files of this archive dated more than `keep_days` before `today`. A
    /// file that cannot be deleted is a warning, not a message kept from its ack: the next
    /// day tries again.
    async fn forget_before(&self, today: NaiveDate) {
        if let Err(e) = self.delete_before(today).await {
            tracing::warn!(archive = %self.template.display(), error = %e, "could not delete the archive's days past keep_days");
        }
    }

    async fn delete_before(&self, today: NaiveDate) -> std::io::Result<()> {
        let Some(keep) = self.past.keep_days else {
            return Ok(());
        };
        let Some(oldest) = today.checked_sub_days(chrono::Days::new(u64::from(keep))) else {
            return Ok(());
        };
        let template = self.template.clone();
        let days = tokio::task::spawn_blocking(move || days_of(&template))
            .await
            .map_err(std::io::Error::other)??;
        for (path, day) in days {
            if day < oldest {
                tracing::info!(archive = %path.display(), keep_days = keep, "deleting an archive day past keep_days");
                tokio::fs::remove_file(path).await?;
            }
        }
        Ok(())
    }

    /// Compresses, on a thread of its own, this archive's plain files of days before
    /// `today` (when `compress` is on and no compression is running: else the next day, or
    /// the next start, does). The thread is not waited for at a stop: a file it was
    /// compressing is left whole, and compressed at the next start.
    async fn compress_before(&self, today: NaiveDate) {
        if !self.past.compress {
            return;
        }
        let mut compressing = self.compressing.lock().await;
        if let Some(running) = compressing.as_mut()
            && matches!(
                running.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            )
        {
            return;
        }
        let template = self.template.clone();
        let (done, running) = tokio::sync::oneshot::channel();
        let started = std::thread::Builder::new()
            .name("archive-compress".into())
            .spawn(move || {
                compress_days_before(&template, today);
                let _ = done.send(());
            });
        match started {
            Ok(_) => *compressing = Some(running),
            Err(e) => {
                tracing::warn!(archive = %self.template.display(), error = %e, "cannot start the thread compressing past archive days")
            }
        }
    }

    /// Waits for the past days being compressed, if they are.
    pub async fn compressed(&self) {
        let running = self.compressing.lock().await.take();
        if let Some(running) = running {
            let _ = running.await;
        }
    }
}

/// [`compress_day`] on each plain file of the dated archive `template` before `today`.
fn compress_days_before(template: &Path, today: NaiveDate) {
    let days = match days_of(template) {
        Ok(days) => days,
        Err(e) => {
            tracing::warn!(archive = %template.display(), error = %e, "cannot list the archive's days to compress them");
            return;
        }
    };
    for (path, day) in days {
        if day < today
            && !is_compressed(&path)
            && let Err(e) = compress_day(&path)
        {
            tracing::warn!(archive = %path.display(), error = %e, "could not compress a past archive day: kept as it is");
        }
    }
}

/// The files of the dated archive `template` and their days: plain (`…-2026-12-07.jsonl`)
/// and compressed (`….jsonl.zst`), in the order of their days.
fn days_of(template: &Path) -> std::io::Result<Vec<(PathBuf, NaiveDate)>> {
    let folder = match template.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file_name(template);
    let (before, after) = name.split_once(DATE).unwrap_or((&name, ""));
    let compressed = format!("{after}.zst");
    let mut days = Vec::new();
    for entry in std::fs::read_dir(&folder)? {
        let entry = entry?;
        let Some(other) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let day = other
            .strip_prefix(before)
            .and_then(|rest| {
                rest.strip_suffix(compressed.as_str())
                    .or_else(|| rest.strip_suffix(after))
            })
            .and_then(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok());
        if let Some(day) = day {
            days.push((entry.path(), day));
        }
    }
    days.sort();
    Ok(days)
}

/// Compresses a past day's file to `<file>.zst` and deletes it, once the compressed bytes
/// read back to the file's; a file another process holds (locked) is left alone. Written
/// to a hidden `.<file>.zst.part` first (which a replay's glob of the days does not match),
/// checked, then renamed: a stop midway leaves the plain file whole, and the next try
/// starts again; a replay sees the plain day or the compressed one, not both (but for the
/// moment between the rename and the delete).
fn compress_day(plain: &Path) -> std::io::Result<()> {
    let zst = compressed_of(plain);
    let part = plain.with_file_name(format!(".{}.zst.part", file_name(plain)));
    let source = std::fs::File::open(plain)?;
    match source.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::debug!(archive = %plain.display(), error = %e, "cannot lock a past archive day; compressing it unlocked");
        }
    }
    // A compressed file already there: a stop between the rename and the delete.
    if !zst.exists() {
        let started = std::time::Instant::now();
        let mut reading = Recorded::new(std::io::BufReader::with_capacity(1 << 20, &source));
        let mut writing = Recorded::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&part)?,
        ));
        ruzstd::encoding::compress(
            &mut reading,
            &mut writing,
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        reading.result()?;
        let file = writing.result()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        if let Err(e) = reads_back(&source, &part) {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        std::fs::rename(&part, &zst)?;
        tracing::info!(
            archive = %plain.display(),
            plain = source.metadata()?.len(),
            compressed = std::fs::metadata(&zst)?.len(),
            seconds = started.elapsed().as_secs_f64(),
            "compressed a past archive day"
        );
    } else {
        reads_back(&source, &zst)?;
    }
    std::fs::remove_file(plain)
}

/// Whether the zstd file at `compressed` decompresses to `plain`'s bytes; an error when not.
fn reads_back(plain: &std::fs::File, compressed: &Path) -> std::io::Result<()> {
    let mut plain_bytes = std::io::BufReader::with_capacity(1 << 20, plain);
    plain_bytes.seek(SeekFrom::Start(0))?;
    if same_bytes(plain_bytes, decompressed(compressed)?)? {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not decompress to the bytes of the day's file: the plain file is kept",
                compressed.display()
            ),
        ))
    }
}

/// The name a past day's file `plain` has once compressed: `<plain>.zst`.
fn compressed_of(plain: &Path) -> PathBuf {
    PathBuf::from(format!("{}.zst", plain.display()))
}

/// What the zstd file at `path` decompresses to, read through a 1 MiB buffer.
fn decompressed(path: &Path) -> std::io::Result<impl BufRead> {
    let decoder = ruzstd::decoding::StreamingDecoder::new(std::fs::File::open(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(std::io::BufReader::with_capacity(1 << 20, decoder))
}

/// Whether two readers give the same bytes.
fn same_bytes(mut a: impl BufRead, mut b: impl BufRead) -> std::io::Result<bool> {
    loop {
        let (taken, done) = {
            let x = a.fill_buf()?;
            let y = b.fill_buf()?;
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return Ok(false);
            }
            (n, n == 0 && x.len() == y.len())
        };
        if done {
            return Ok(true);
        }
        if taken == 0 {
            // One ended before the other.
            return Ok(false);
        }
        a.consume(taken);
        b.consume(taken);
    }
}

/// A reader or writer whose first error is kept, not returned: ruzstd's encoder panics on
/// an I/O error, so it is told the input ended (or the output took every byte) and the
/// error is read afterwards ([`Recorded::result`]).
struct Recorded<T> {
    inner: T,
    error: Option<std::io::Error>,
}

impl<T> Recorded<T> {
    fn new(inner: T) -> Self {
        Recorded { inner, error: None }
    }

    fn result(self) -> std::io::Result<T> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.inner),
        }
    }
}

impl<T: Read> Read for Recorded<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        self.inner.read(buf).or_else(|e| {
            self.error = Some(e);
            Ok(0)
        })
    }
}

impl<T: std::io::Write> std::io::Write for Recorded<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

/// Whether `path`'s file name holds `{date}` (a dated archive).
pub fn is_dated(path: &Path) -> bool {
    file_name(path).contains(DATE)
}

/// Refuses a `.zst` name to a writer (`bugflow record --out`, a consumer's path, checked
/// when its file loads): appended to, it could not be read back.
pub fn not_compressed(path: &Path) -> Result<(), String> {
    if is_compressed(path) {
        return Err(format!(
            "{}: an archive is written as plain JSON Lines; name it without .zst, and compress a finished file (a past day's) with `zstd --rm` or `compress = true`: replays read it as it is",
            path.display()
        ));
    }
    Ok(())
}

/// The file name of `path`, as text.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `template` with its `{date}` set to `day`.
fn dated(template: &Path, day: NaiveDate) -> PathBuf {
    let name = file_name(template).replace(DATE, &day.format("%Y-%m-%d").to_string());
    template.with_file_name(name)
}

/// The file at `path`, appended to, with the newline of a line cut short first, the lines
/// it last holds, and its length as they were read. It is locked (`flock`) while this process writes it: a second
/// process naming the same file (another `bugflow run`, a `bugflow record --out`) is
/// refused instead of mixing its lines into this one's.
async fn append(path: &Path) -> std::io::Result<(JsonlSink, Recent, u64)> {
    not_compressed(path)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    super::jsonl::create_parent(path).await?;
    let mut opened = std::fs::OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .open(path)?;
    match opened.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is being written by another process (one process per archive file): stop it or name another file",
                    path.display()
                ),
            ));
        }
        // A file system without locks (or a device such as /dev/full): written unlocked.
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(archive = %path.display(), error = %e, "cannot lock the archive file; writing it unlocked");
        }
    }
    // Read under the lock, on the file about to be written (appends go to its end
    // whatever was read).
    let (opened, recent, length, cut) = tokio::task::spawn_blocking(move || {
        let length = opened.metadata()?.len();
        let recent = last_lines(&mut opened)?;
        let cut = last_byte(&mut opened)?.is_some_and(|b| b != b'\n');
        Ok::<_, std::io::Error>((opened, recent, length, cut))
    })
    .await
    .map_err(std::io::Error::other)??;
    let file = JsonlSink::from_file(opened);
    if cut {
        file.write_line(Vec::new()).await?;
        file.flush().await?;
    }
    Ok((file, recent, length))
}

/// The identities of the lines last written ([`identity`]): the last [`RECENT`].
#[derive(Default)]
struct Recent {
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl Recent {
    fn holds(&self, id: u64) -> bool {
        self.seen.contains(&id)
    }

    /// Remembers `older`'s lines too, as written before this one's.
    fn add(&mut self, older: Recent) {
        let newer = std::mem::replace(self, older);
        for id in newer.order {
            self.remember(id);
        }
    }

    fn remember(&mut self, id: u64) {
        if !self.seen.insert(id) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > RECENT
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
    }
}

/// What makes a message the same message when the broker delivers it again: its exchange,
/// routing key and body (as its line holds it), not when it came or what was fetched for
/// it. The same number in every process (SipHash with fixed keys).
fn identity(
    exchange: &str,
    routing_key: &str,
    body: Option<&serde_json::Value>,
    body_base64: Option<&str>,
) -> u64 {
    /// Feeds what is written to the hasher.
    struct Feed<'a>(&'a mut DefaultHasher);
    impl std::io::Write for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.write(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hasher = DefaultHasher::new();
    for part in [exchange, routing_key] {
        hasher.write(part.as_bytes());
        hasher.write_u8(0);
    }
    match body {
        // A JSON value always serializes; the text is the line's, keys in its order.
        Some(body) => {
            hasher.write_u8(b'j');
            let _ = serde_json::to_writer(Feed(&mut hasher), body);
        }
        None => {
            hasher.write_u8(b'b');
            hasher.write(body_base64.unwrap_or_default().as_bytes());
        }
    }
    hasher.finish()
}

/// The lines last written to the file at `path`, if there is one (it is only read: another
/// process may hold it); when it was compressed (a past day), those of `<path>.zst`.
async fn read_last_lines(path: PathBuf) -> Recent {
    let read = tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
        Ok(mut file) => last_lines(&mut file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            last_compressed_lines(&compressed_of(&path))
        }
        Err(e) => Err(e),
    })
    .await;
    match read {
        Ok(Ok(recent)) => recent,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Recent::default(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the archive's day before: a message it holds, delivered again, is kept again");
            Recent::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the archive's day before");
            Recent::default()
        }
    }
}

/// The lines in the last [`TAIL_BYTES`] of `file` (a line cut by where the reading starts,
/// or cut short at the end, is not a line); the file is left where it was read to.
fn last_lines(file: &mut std::fs::File) -> std::io::Result<Recent> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(Recent::default());
    }
    let start = meta.len().saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut lines = std::io::BufReader::new(file).split(b'\n');
    if start > 0 {
        lines.next().transpose()?;
    }
    recent_of(lines)
}

/// The lines in the last [`TAIL_BYTES`] of what the zstd file at `path` decompresses to, as
/// [`last_lines`] reads a plain file. A zstd stream is read from its start: the day is
/// decompressed twice (its length, then its end), with no more than a buffer in memory —
/// once, at start, and only when today's file is shorter than that end.
fn last_compressed_lines(path: &Path) -> std::io::Result<Recent> {
    let length = std::io::copy(&mut decompressed(path)?, &mut std::io::sink())?;
    let start = length.saturating_sub(TAIL_BYTES);
    let mut reader = decompressed(path)?;
    std::io::copy(&mut (&mut reader).take(start), &mut std::io::sink())?;
    let mut lines = reader.split(b'\n');
    if start > 0 {
        lines.next().transpose()?;
    }
    recent_of(lines)
}

/// The identities of `lines` (archive lines; what does not parse as one is no line).
fn recent_of(lines: impl Iterator<Item = std::io::Result<Vec<u8>>>) -> std::io::Result<Recent> {
    /// As much of a line as its identity needs.
    #[derive(serde::Deserialize)]
    struct Said {
        exchange: String,
        routing_key: String,
        #[serde(default)]
        body: Option<serde_json::Value>,
        #[serde(default)]
        body_base64: Option<String>,
    }
    let mut recent = Recent::default();
    for line in lines {
        if let Ok(said) = serde_json::from_slice::<Said>(&line?) {
            recent.remember(identity(
                &said.exchange,
                &said.routing_key,
                said.body.as_ref(),
                said.body_base64.as_deref(),
            ));
        }
    }
    Ok(recent)
}

/// The last byte of `file`; `None` when it is empty or not a regular file (such as
/// `/dev/full`).
fn last_byte(file: &mut std::fs::File) -> std::io::Result<Option<u8>> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(Some(last[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line cut short by a killed process stays alone: the lines kept after a restart
    /// are whole and read back.
    #[tokio::test]
    async fn a_line_cut_short_does_not_swallow_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/archive.jsonl");
        let first = ArchiveSink::open(&path).await.unwrap();
        let message = Message::new(
            "exchange/e",
            "bug.create",
            br#"{"bug": {"id": 1}}"#.to_vec(),
        );
        first.keep(&message).await.unwrap();
        drop(first);
        let mut cut = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut cut, br#"{"exchange": "exchange/e", "rou"#).unwrap();

        ArchiveSink::open(&path)
            .await
            .unwrap()
            .keep(&message)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(ArchiveLine::parse(lines[1]).is_err());
        for line in [lines[0], lines[2]] {
            let body = ArchiveLine::parse(line).unwrap().body;
            let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
            assert_eq!(json(&body), json(&message.body));
        }
    }

    /// A message the broker delivers again (its ack lost, or the process killed between its
    /// line and its ack) is not written again when its line is among the last written, by
    /// this process or, after a restart, in the file's last lines; its body is matched as
    /// its line holds it (spaces and key order aside, a binary body as its bytes), whatever
    /// was fetched for it this time. A message delivered anew is written, as is a
    /// redelivered one never written (its line cut short by the kill).
    #[tokio::test]
    async fn a_redelivered_message_already_kept_is_not_kept_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.jsonl");
        let message = |body: &[u8], redelivered: bool| Message {
            redelivered,
            ..Message::new("exchange/e", "bug.modify", body.to_vec())
        };
        let json = br#"{"bug": {"id": 1, "product": "Core"}}"#;
        let same_json = br#"{"bug":{"product":"Core","id":1}}"#;
        let binary = [0xff, 0x00, 0x10];

        let first = ArchiveSink::open(&path).await.unwrap();
        for (body, redelivered, kept) in [
            (&json[..], false, Kept::Written),
            (&binary[..], false, Kept::Written),
            (&json[..], true, Kept::AlreadyKept),
            (&same_json[..], true, Kept::AlreadyKept),
            (&br#"{"bug": {"id": 2}}"#[..], true, Kept::Written),
            (&json[..], false, Kept::Written),
        ] {
            assert_eq!(first.keep(&message(body, redelivered)).await.unwrap(), kept);
        }
        drop(first);
        // The kill cut a line short: its message was not acked and comes again.
        let cut = ArchiveLine::from_message(&message(br#"{"bug": {"id": 3}}"#, false)).to_line();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &cut.as_bytes()[..cut.len() / 2]).unwrap();

        let again = ArchiveSink::open(&path).await.unwrap();
        let mut fetched = message(same_json, true);
        fetched.enrichment = Some(Arc::new(crate::message::Enrichment {
            bug: Some(Arc::new(serde_json::json!({"id": 1, "comments": []}))),
            ..Default::default()
        }));
        assert_eq!(again.keep(&fetched).await.unwrap(), Kept::AlreadyKept);
        assert_eq!(
            again.keep(&message(&binary, true)).await.unwrap(),
            Kept::AlreadyKept
        );
        assert_eq!(
            again
                .keep(&message(br#"{"bug": {"id": 3}}"#, true))
                .await
                .unwrap(),
            Kept::Written
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let bodies: Vec<Vec<u8>> = text
            .lines()
            .filter_map(|l| ArchiveLine::parse(l).ok().map(|m| m.body))
            .collect();
        assert_eq!(
            bodies,
            [
                br#"{"bug":{"id":1,"product":"Core"}}"#.to_vec(),
                binary.to_vec(),
                br#"{"bug":{"id":2}}"#.to_vec(),
                br#"{"bug":{"id":1,"product":"Core"}}"#.to_vec(),
                br#"{"bug":{"id":3}}"#.to_vec(),
            ],
            "{text}"
        );
    }

    /// A process stopped just after midnight, after the day before's file was compressed:
    /// a message it wrote that day and did not ack comes again, redelivered, to the next
    /// process, which finds its line in the compressed file and does not keep it twice.
    #[tokio::test]
    async fn a_redelivered_message_kept_the_day_before_compressed_is_not_kept_again() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let template = dir.path().join("c-{date}.jsonl");
        let message = |id: u32, redelivered: bool| Message {
            redelivered,
            ..Message::new(
                "exchange/e",
                "bug.modify",
                format!(r#"{{"bug":{{"id":{id}}}}}"#).into_bytes(),
            )
        };
        let past = PastDays {
            keep_days: None,
            compress: true,
        };
        let earlier = ArchiveSink::open_on(&template, past, day(1)).await.unwrap();
        for id in 0..10 {
            let kept = earlier.keep_on(&message(id, false), day(1)).await.unwrap();
            assert_eq!(kept, Kept::Written);
        }
        drop(earlier);
        compress_day(&dated(&template, day(1))).unwrap();
        assert!(!dated(&template, day(1)).exists());

        let next = ArchiveSink::open_on(&template, past, day(2)).await.unwrap();
        let again = next.keep_on(&message(9, true), day(2)).await.unwrap();
        assert_eq!(again, Kept::AlreadyKept);
        let never_kept = next.keep_on(&message(10, true), day(2)).await.unwrap();
        assert_eq!(never_kept, Kept::Written);
        let today = std::fs::read_to_string(dated(&template, day(2))).unwrap();
        assert_eq!(today.lines().count(), 1, "{today}");
    }

    /// With `compress`, each past day's file becomes `.jsonl.zst` (at start, and as a new
    /// day begins), which reads back as the lines written; `keep_days` deletes compressed
    /// days as it does plain ones; a past day's file another process holds is left alone.
    #[tokio::test]
    async fn past_days_are_compressed_and_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let file = |d: u32, zst: &str| dir.path().join(format!("b-2026-12-{d:02}.jsonl{zst}"));
        let template = dir.path().join("b-{date}.jsonl");
        let line = |id: u32| {
            ArchiveLine::from_message(&Message::new(
                "exchange/e",
                "bug.modify",
                format!(
                    r#"{{"bug":{{"id":{id},"summary":"{}"}}}}"#,
                    "crash ".repeat(50)
                )
                .into_bytes(),
            ))
            .to_line()
        };
        let lines_of = async |path: PathBuf| {
            let mut read = crate::archive::lines(&path).await.unwrap();
            let mut lines = Vec::new();
            while let Some(line) = read.next_line().await.unwrap() {
                lines.push(line);
            }
            lines
        };
        // Day 1 was written by an earlier process; day 2's file is held by another.
        let day_1: Vec<String> = (0..500).map(line).collect();
        std::fs::write(file(1, ""), day_1.join("\n") + "\n").unwrap();
        // An earlier compression of it was stopped midway.
        let part = dir.path().join(".b-2026-12-01.jsonl.zst.part");
        std::fs::write(&part, b"\x28\xb5\x2f").unwrap();
        let other = ArchiveSink::open(&file(2, "")).await.unwrap();
        let past = PastDays {
            keep_days: Some(2),
            compress: true,
        };

        let sink = ArchiveSink::open_on(&template, past, day(3)).await.unwrap();
        sink.compressed().await;
        assert!(!file(1, "").exists());
        assert!(!part.exists());
        assert!(
            std::fs::metadata(file(1, ".zst")).unwrap().len() * 3 < (day_1.join("\n").len() as u64),
            "compressed"
        );
        assert_eq!(lines_of(file(1, ".zst")).await, day_1);
        assert!(
            file(2, "").exists() && !file(2, ".zst").exists(),
            "held by another"
        );
        drop(other);

        let message = |id: u32| {
            Message::new(
                "exchange/e",
                "bug.modify",
                format!(r#"{{"bug":{{"id":{id}}}}}"#).into_bytes(),
            )
        };
        sink.keep_on(&message(1), day(3)).await.unwrap();
        sink.keep_on(&message(2), day(3)).await.unwrap();
        sink.keep_on(&message(3), day(4)).await.unwrap();
        sink.compressed().await;
        assert!(!file(2, "").exists() && !file(3, "").exists());
        let bodies: Vec<String> = lines_of(file(3, ".zst"))
            .await
            .iter()
            .map(|l| String::from_utf8(ArchiveLine::parse(l).unwrap().body).unwrap())
            .collect();
        assert_eq!(bodies, [r#"{"bug":{"id":1}}"#, r#"{"bug":{"id":2}}"#]);
        assert!(file(2, ".zst").exists());
        assert!(
            !file(1, ".zst").exists(),
            "three days before the 4th, past keep_days"
        );

        sink.keep_on(&message(4), day(5)).await.unwrap();
        sink.compressed().await;
        assert!(!file(2, ".zst").exists(), "past keep_days");
        assert!(file(3, ".zst").exists() && file(4, ".zst").exists() && file(5, "").exists());
    }

    /// A day found both plain and compressed (a stop between the rename and the delete) loses
    /// its plain file only when the compressed one decompresses to it.
    #[test]
    fn a_day_both_plain_and_compressed_keeps_the_plain_unless_they_agree() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("b-2026-12-01.jsonl");
        let zst = dir.path().join("b-2026-12-01.jsonl.zst");
        let text = b"{\"exchange\":\"e\",\"routing_key\":\"k\",\"body\":{}}\n".repeat(100);
        let compressed = |bytes: &[u8]| {
            ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
        };

        std::fs::write(&plain, &text).unwrap();
        std::fs::write(&zst, compressed(&text[..text.len() - 1])).unwrap();
        let e = compress_day(&plain).unwrap_err();
        assert!(e.to_string().contains("plain file is kept"), "{e}");
        assert!(plain.exists() && zst.exists());

        std::fs::write(&zst, compressed(&text)).unwrap();
        compress_day(&plain).unwrap();
        assert!(!plain.exists() && zst.exists());
    }

    /// The check before a plain day is deleted: the same bytes, not a prefix of them.
    #[test]
    fn same_bytes_means_every_byte() {
        let same = |a: &[u8], b: &[u8]| {
            same_bytes(
                std::io::BufReader::with_capacity(3, a),
                std::io::BufReader::with_capacity(5, b),
            )
            .unwrap()
        };
        assert!(same(b"", b""));
        assert!(same(b"abcdefghijk", b"abcdefghijk"));
        assert!(!same(b"abcdefghijk", b"abcdefghij"));
        assert!(!same(b"abcdefghij", b"abcdefghijk"));
        assert!(!same(b"abcdefghijk", b"abcdefghijK"));
        assert!(!same(b"", b"a"));
    }

    /// A file one process writes is refused to another (here, a second open of it: `flock`
    /// locks are per open file), and free again once the first is done with it; a `.zst`
    /// file is refused to every writer.
    #[tokio::test]
    async fn a_file_being_written_or_compressed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.jsonl");
        let first = ArchiveSink::open(&path).await.unwrap();
        let refused = ArchiveSink::open(&path).await.err().unwrap();
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
        assert!(refused.to_string().contains("another process"), "{refused}");
        drop(first);
        ArchiveSink::open(&path).await.unwrap();

        // A compressed name is refused too: appending to it would make it unreadable.
        let zst = dir.path().join("archive.jsonl.zst");
        let refused = ArchiveSink::open(&zst).await.err().unwrap();
        assert!(refused.to_string().contains("zstd --rm"), "{refused}");
        assert!(!zst.exists());
    }

    /// A dated archive is a file a day, named by the day its lines were written; past
    /// `keep_days` a day's file is deleted as a new day begins (and at start), and files
    /// that are not this archive's days are left alone.
    #[tokio::test]
    async fn a_dated_archive_starts_a_file_each_day_and_forgets_old_days() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        let name = |d: u32| format!("bug-triage-2026-12-{d:02}.jsonl");
        for other in [
            name(1),
            "bug-triage-x-2026-12-01.jsonl".into(),
            "notes.txt".into(),
        ] {
            std::fs::write(dir.path().join(other), "{}\n").unwrap();
        }
        let template = dir.path().join("bug-triage-{date}.jsonl");
        let message = |id: u32| {
            Message::new(
                "exchange/e",
                "bug.modify",
                format!(r#"{{"bug":{{"id":{id}}}}}"#).into_bytes(),
            )
        };

        let sink = ArchiveSink::open_on(
            &template,
            PastDays {
                keep_days: Some(1),
                compress: false,
            },
            day(2),
        )
        .await
        .unwrap();
        assert!(dir.path().join(name(1)).exists(), "one day before is kept");
        sink.keep_on(&message(1), day(2)).await.unwrap();
        sink.keep_on(&message(2), day(2)).await.unwrap();
        let bodies = |d: u32| -> Vec<String> {
            let text = std::fs::read_to_string(dir.path().join(name(d))).unwrap();
            text.lines()
                .map(|l| String::from_utf8(ArchiveLine::parse(l).unwrap().body).unwrap())
                .collect()
        };
        sink.keep_on(&message(3), day(3)).await.unwrap();
        assert!(
            !dir.path().join(name(1)).exists(),
            "two days before the 3rd"
        );
        assert_eq!(bodies(2), [r#"{"bug":{"id":1}}"#, r#"{"bug":{"id":2}}"#]);
        sink.keep_on(&message(4), day(4)).await.unwrap();
        assert_eq!(bodies(3), [r#"{"bug":{"id":3}}"#]);
        assert_eq!(bodies(4), [r#"{"bug":{"id":4}}"#]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "bug-triage-2026-12-03.jsonl",
                "bug-triage-2026-12-04.jsonl",
                "bug-triage-x-2026-12-01.jsonl",
                "notes.txt"
            ]
        );

        // Without keep_days, nothing is deleted.
        let kept = ArchiveSink::open_on(&template, PastDays::default(), day(30))
            .await
            .unwrap();
        kept.keep_on(&message(5), day(31)).await.unwrap();
        assert!(dir.path().join(name(3)).exists());
        assert_eq!(bodies(31), [r#"{"bug":{"id":5}}"#]);

        // A process started just after midnight remembers the last lines of the day
        // before: a message written then, delivered again, is not kept again.
        let next = ArchiveSink::open_on(&template, PastDays::default(), day(5))
            .await
            .unwrap();
        let again = Message {
            redelivered: true,
            ..message(4)
        };
        assert_eq!(
            next.keep_on(&again, day(5)).await.unwrap(),
            Kept::AlreadyKept
        );
        assert_eq!(bodies(5), Vec::<String>::new());
    }
}
