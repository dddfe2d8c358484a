//! A JSON Lines sink: one result per line, to a file (appended) or to stdout.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::Mutex;

use crate::result::ResultMessage;

#[derive(Clone)]
pub struct JsonlSink {
    out: Arc<Mutex<BufWriter<Box<dyn AsyncWrite + Send + Unpin>>>>,
    /// Flush after every message (before its ack); off for an in-process replay, which
    /// acks nothing and flushes once at the end.
    each_message: bool,
}

impl JsonlSink {
    /// Appends to `path`; `-` means stdout.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = if path.as_os_str() == "-" {
            Box::new(tokio::io::stdout())
        } else {
            create_parent(path).await?;
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            )
        };
        Ok(Self::to(writer))
    }

    /// Appends to a file already open (for appending).
    pub fn from_file(file: std::fs::File) -> Self {
        Self::to(Box::new(tokio::fs::File::from_std(file)))
    }

    fn to(writer: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        JsonlSink {
            out: Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, writer))),
            each_message: true,
        }
    }

    /// Flushed only by [`JsonlSink::flush`], not after each message: every flush of a file
    /// is a hop to tokio's blocking pool, which an in-process replay does not need.
    pub fn batched(mut self) -> Self {
        self.each_message = false;
        self
    }

    /// What the dispatcher calls after a message's results: a flush, unless batched.
    pub async fn message_done(&self) -> std::io::Result<()> {
        if self.each_message {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Writes one line. The write is buffered; call [`JsonlSink::flush`] to make it durable
    /// (the runner flushes before it acks).
    pub async fn write(&self, result: &ResultMessage) -> std::io::Result<()> {
        self.write_line(result.to_json()).await
    }

    /// Writes `line` (one JSON value, no newline in it) and its newline, buffered.
    pub async fn write_line(&self, mut line: Vec<u8>) -> std::io::Result<()> {
        line.push(b'\n');
        self.out.lock().await.write_all(&line).await
    }

    pub async fn flush(&self) -> std::io::Result<()> {
        self.out.lock().await.flush().await
    }
}

/// Creates the folders `path` is to be written in.
pub(super) async fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => tokio::fs::create_dir_all(parent).await,
        _ => Ok(()),
    }
}
