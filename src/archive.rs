//! Archives: one JSON object per line, one message per object.
//!
//! ```json
//! {"exchange": "exchange/hgpushes/v2", "routing_key": "integration/autoland",
//!  "headers": {}, "content_type": "application/json",
//!  "body": {"payload": {"type": "changegroup.1", "data": {}}, "_meta": {}},
//!  "received_at": "2026-11-28T10:00:00Z"}
//! ```
//!
//! `body` holds the message when it is JSON; otherwise `body_base64` holds its bytes.
//! `enrichment`, when present, holds what the message's flow fetched to score it (the
//! json-pushes answer or hg's refusal by URL, the full bug, a request's bugs): see
//! [`Enrichment`].
//! `bugflow record` writes archives and `bugflow replay` reads them; any tool can write one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::message::{Enrichment, Message};

/// A line as `bugflow record` writes it: its body a tree of JSON values.
pub type ArchiveLine = Line<Value>;

/// One line of an archive, its body as `B`: a tree of values ([`ArchiveLine`]), or, as
/// [`ArchiveLine::parse`] reads it, the JSON text the line holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A missing body is `None` whatever `B` is: no `B: Default` asked for.
#[serde(bound(deserialize = "B: Deserialize<'de>"))]
pub struct Line<B> {
    pub exchange: String,
    pub routing_key: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<B>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// What the message's flow fetched to score it (`bugflow record --enrich`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Enrichment>,
}

impl<B> Line<B> {
    /// The message this line records, its JSON body made bytes by `json`.
    fn message_with(
        self,
        json: impl FnOnce(B) -> Result<Vec<u8>, String>,
    ) -> Result<Message, String> {
        let body = match (self.body, self.body_base64) {
            (Some(value), None) => json(value)?,
            (None, Some(b64)) => STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("body_base64 is not base64: {e}"))?,
            (Some(_), Some(_)) => return Err("both body and body_base64 are set".into()),
            (None, None) => return Err("neither body nor body_base64 is set".into()),
        };
        Ok(Message {
            exchange: self.exchange,
            routing_key: self.routing_key,
            headers: self.headers,
            content_type: self.content_type,
            body,
            redelivered: false,
            received_at: self.received_at.unwrap_or_else(Utc::now),
            enrichment: self.enrichment.filter(|e| !e.is_empty()).map(Arc::new),
        })
    }
}

/// The lines of the archive at `path`, read as they come (an archive can be larger than
/// the memory); a file whose name ends in `.zst` is decompressed as it is read (an archive
/// of full bugs is about 20 KB a message, and `zstd` makes it five to eight times smaller:
/// `zstd --rm` a past day's file and replay it as it is).
pub async fn lines(path: &std::path::Path) -> anyhow::Result<Lines> {
    use tokio::io::AsyncBufReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    if !is_compressed(path) {
        let lines = tokio::io::BufReader::with_capacity(1 << 20, file).lines();
        return Ok(Lines {
            from: Source::Plain(lines),
            read,
        });
    }
    let file = Counted(file.into_std().await, read.clone());
    let decoder = ruzstd::decoding::StreamingDecoder::new(file)
        .map_err(|e| anyhow::anyhow!("{}: not zstd: {e}", path.display()))?;
    // The decoder reads a blocking file and works the CPU: a thread of its own, lines
    // handed over in batches.
    let (send, receive) = tokio::sync::mpsc::channel(4);
    let name = path.display().to_string();
    std::thread::Builder::new()
        .name("archive-zstd".into())
        .spawn(move || decompress(decoder, &name, send))
        .map_err(|e| anyhow::anyhow!("cannot start the decompressing thread: {e}"))?;
    Ok(Lines {
        from: Source::Zstd {
            batches: receive,
            batch: Vec::new().into_iter(),
        },
        read,
    })
}

/// Whether `path` names a zstd file: read decompressed, never appended to.
pub fn is_compressed(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|x| x == "zst")
}

/// An archive's lines ([`lines`]).
pub struct Lines {
    from: Source,
    /// Bytes of the file read so far (compressed bytes for a `.zst`).
    read: Arc<AtomicU64>,
}

enum Source {
    Plain(tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>),
    Zstd {
        batches: tokio::sync::mpsc::Receiver<std::io::Result<Vec<String>>>,
        batch: std::vec::IntoIter<String>,
    },
}

impl Lines {
    /// The next line (without its newline); `None` at the end of the file.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        match &mut self.from {
            Source::Plain(lines) => {
                let line = lines.next_line().await?;
                if let Some(line) = &line {
                    self.read
                        .fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                }
                Ok(line)
            }
            Source::Zstd { batches, batch } => loop {
                if let Some(line) = batch.next() {
                    return Ok(Some(line));
                }
                match batches.recv().await {
                    Some(next) => *batch = next?.into_iter(),
                    None => return Ok(None),
                }
            },
        }
    }

    /// How many bytes of the file have been read: what a progress bar over the files'
    /// sizes counts.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// A file that counts the bytes read from it.
struct Counted(std::fs::File, Arc<AtomicU64>);

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Sends the decompressed lines of an archive in batches (of 256 lines or 1 MiB, four
/// batches ahead of the reader at most), then an error if the file ends badly (not zstd
/// past its start, cut short, a line not UTF-8); stops when the reader is gone.
fn decompress(
    decoder: impl std::io::Read,
    name: &str,
    send: tokio::sync::mpsc::Sender<std::io::Result<Vec<String>>>,
) {
    use std::io::BufRead;
    const BATCH: usize = 256;
    const BATCH_BYTES: usize = 1 << 20;
    let mut batch = Vec::with_capacity(BATCH);
    let mut bytes = 0;
    for line in std::io::BufReader::with_capacity(1 << 20, decoder).lines() {
        match line {
            Ok(line) => {
                bytes += line.len();
                batch.push(line);
            }
            Err(e) => {
                let e = std::io::Error::new(e.kind(), format!("{name}: {e}"));
                let _ = send.blocking_send(Ok(std::mem::take(&mut batch)));
                let _ = send.blocking_send(Err(e));
                return;
            }
        }
        if batch.len() == BATCH || bytes >= BATCH_BYTES {
            bytes = 0;
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if send.blocking_send(Ok(full)).is_err() {
                return;
            }
        }
    }
    let _ = send.blocking_send(Ok(batch));
}

impl ArchiveLine {
    /// The line for a message: its body as JSON when it is JSON, as base64 otherwise.
    pub fn from_message(message: &Message) -> Self {
        let (body, body_base64) = match serde_json::from_slice::<Value>(&message.body) {
            Ok(value) => (Some(value), None),
            Err(_) => (None, Some(STANDARD.encode(&message.body))),
        };
        ArchiveLine {
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            headers: message.headers.clone(),
            content_type: message.content_type.clone(),
            body,
            body_base64,
            received_at: Some(message.received_at),
            enrichment: message.enrichment.as_deref().cloned(),
        }
    }

    /// The message this line records.
    pub fn into_message(self) -> Result<Message, String> {
        self.message_with(|value| serde_json::to_vec(&value).map_err(|e| e.to_string()))
    }

    /// Parses one line of an archive.
    ///
    /// The body is taken as the JSON text the line holds, not read into a tree of values
    /// and written out again: a BMO event's body is most of its line, and its tree cost
    /// about what decoding the event does (see BENCHMARKS.md, `bugflow replay` of 20,000
    /// webhook events). The message's body is the archived text as it is: the same JSON,
    /// where a tree written out again had its keys sorted and its spaces dropped.
    pub fn parse(line: &str) -> Result<Message, String> {
        let parsed: Line<&RawValue> =
            serde_json::from_str(line).map_err(|e| format!("not an archive line: {e}"))?;
        parsed.message_with(|raw| Ok(raw.get().as_bytes().to_vec()))
    }

    pub fn to_line(&self) -> String {
        // A struct of strings and JSON values always serializes.
        serde_json::to_string(self).expect("an archive line serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_bodies_travel_as_base64() {
        let message = Message::new("e", "k", vec![0xff, 0x00, 0x10]);
        let line = ArchiveLine::from_message(&message).to_line();
        assert!(line.contains("body_base64"));
        assert_eq!(
            ArchiveLine::parse(&line).unwrap().body,
            vec![0xff, 0x00, 0x10]
        );
    }

    #[test]
    fn json_bodies_stay_readable() {
        let message = Message::new("e", "k", br#"{"a": 1}"#.to_vec());
        let line = ArchiveLine::from_message(&message).to_line();
        assert!(line.contains(r#""body":{"a":1}"#), "{line}");
    }

    /// A JSON body is replayed as the text the line holds, spaces, key order and the
    /// digits of its numbers as they are (it was read into a tree and written out again).
    #[test]
    fn a_json_body_is_replayed_as_the_line_holds_it() {
        let body = r#"{"z": [1.50, 2e3], "a": {"k": "\u00e9\n"}}"#;
        let line = format!(r#"{{"exchange": "e", "routing_key": "k", "body": {body}}}"#);
        let message = ArchiveLine::parse(&line).expect("an archive line");
        assert_eq!(String::from_utf8(message.body).unwrap(), body);
        // A body of `null` is no body, as before.
        let null = r#"{"exchange": "e", "routing_key": "k", "body": null}"#;
        assert_eq!(
            ArchiveLine::parse(null).unwrap_err(),
            "neither body nor body_base64 is set"
        );
    }

    /// A `.zst` archive reads as the lines of the file it compresses, counting the
    /// compressed bytes it read; a file that is not zstd, or one cut short, is an error,
    /// not an archive that ends early.
    #[tokio::test]
    async fn a_compressed_archive_reads_as_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..1_000 {
            text.push_str(&format!(
                r#"{{"exchange":"e","routing_key":"k","body":{{"i":{i}}}}}"#
            ));
            text.push('\n');
            if i % 100 == 0 {
                text.push_str(&"x".repeat(70_000));
                text.push_str("\n\n");
            }
        }
        let plain = dir.path().join("a.jsonl");
        let zst = dir.path().join("a.jsonl.zst");
        std::fs::write(&plain, &text).unwrap();
        let compressed = ruzstd::encoding::compress_to_vec(
            text.as_bytes(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        std::fs::write(&zst, &compressed).unwrap();

        async fn all(path: &std::path::Path) -> std::io::Result<(Vec<String>, u64)> {
            let mut lines = lines(path).await.unwrap();
            let mut all = Vec::new();
            while let Some(line) = lines.next_line().await? {
                all.push(line);
            }
            Ok((all, lines.bytes_read()))
        }
        let (from_plain, plain_read) = all(&plain).await.unwrap();
        let (from_zst, zst_read) = all(&zst).await.unwrap();
        assert_eq!(from_plain.len(), 1_000 + 2 * 10);
        assert_eq!(from_zst, from_plain);
        assert_eq!(plain_read, text.len() as u64);
        assert_eq!(zst_read, compressed.len() as u64);

        let not_zstd = dir.path().join("b.jsonl.zst");
        std::fs::write(&not_zstd, &text).unwrap();
        let e = lines(&not_zstd).await.err().unwrap();
        assert!(e.to_string().contains("not zstd"), "{e}");
        let cut = dir.path().join("c.jsonl.zst");
        std::fs::write(&cut, &compressed[..compressed.len() / 2]).unwrap();
        assert!(all(&cut).await.is_err(), "a file cut short is an error");
    }

    #[test]
    fn a_line_without_a_body_is_an_error() {
        assert!(ArchiveLine::parse(r#"{"exchange": "e", "routing_key": "k"}"#).is_err());
        assert!(ArchiveLine::parse("not json").is_err());
    }
}
