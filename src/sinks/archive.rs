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
//! A message redelivered after a crash between the line and the ack is written twice (a
//! replay gives its results twice, with the same message ids).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::jsonl::JsonlSink;
use crate::archive::ArchiveLine;
use crate::message::Message;

/// The archive file of one or more consumers (those naming the same path share it, so
/// their lines never interleave).
#[derive(Clone)]
pub struct ArchiveSink {
    file: JsonlSink,
}

impl ArchiveSink {
    /// Appends to `path`, creating it and its folders. A file whose last line was cut short
    /// (a process killed while writing it) gets its newline first: the next line starts a
    /// line of its own, and only the cut one is unreadable (a replay counts it).
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let cut = last_byte(path)?.is_some_and(|b| b != b'\n');
        let file = JsonlSink::open(path).await?;
        if cut {
            file.write_line(Vec::new()).await?;
            file.flush().await?;
        }
        Ok(ArchiveSink { file })
    }

    /// Writes `message` (with its enrichment) as one archive line, and flushes it.
    pub async fn keep(&self, message: &Message) -> std::io::Result<()> {
        let line = ArchiveLine::from_message(message).to_line();
        self.file.write_line(line.into_bytes()).await?;
        self.file.flush().await
    }
}

/// The last byte of the file at `path`; `None` when there is no file or it is empty (and
/// for what is not a regular file, such as `/dev/full`).
fn last_byte(path: &Path) -> std::io::Result<Option<u8>> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
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
}
