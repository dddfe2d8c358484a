//! `bugflow data bugs`: the first stage of the training pipeline.
//!
//! Searches Bugzilla for bugs changed since a date, then fetches each with its comments,
//! history and attachments and appends it as one JSON line — the record shape `bugflow train`
//! reads. It is resumable: bugs already in the output are not fetched again, and a line cut
//! short by an interruption is dropped. Without an API key it paces itself under BMO's
//! anonymous limit (75 requests a minute); a 429 stops it with a message to resume later.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::enrich::bugzilla::Bugzilla;
use crate::error::Action;

#[derive(Debug, Default, PartialEq)]
pub struct DataSummary {
    pub found: usize,
    pub already_had: usize,
    pub written: usize,
    pub skipped: usize,
}

/// Ids already in `out`; truncates a last line that an interruption left incomplete.
fn existing_ids(out: &Path) -> anyhow::Result<BTreeSet<u64>> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Ok(BTreeSet::new());
    };
    let mut ids = BTreeSet::new();
    let mut good_len = 0;
    for line in text.split_inclusive('\n') {
        let complete = line.ends_with('\n');
        match serde_json::from_str::<Value>(line.trim_end()) {
            Ok(v) if complete => {
                if let Some(id) = v["id"].as_u64() {
                    ids.insert(id);
                }
                good_len += line.len();
            }
            _ => break,
        }
    }
    if good_len < text.len() {
        tracing::warn!(file = %out.display(), "dropping an incomplete last record");
        std::fs::OpenOptions::new()
            .write(true)
            .open(out)?
            .set_len(good_len as u64)?;
    }
    Ok(ids)
}

pub async fn bugs(
    client: &Bugzilla,
    since: &str,
    out: &Path,
    pace: Duration,
    progress: bool,
) -> anyhow::Result<DataSummary> {
    let have = existing_ids(out)?;
    let found = client
        .changed_since(since, 500)
        .await
        .map_err(|e| anyhow::anyhow!("searching Bugzilla: {e}"))?;
    let ids: Vec<u64> = found.iter().filter_map(|b| b["id"].as_u64()).collect();
    let todo: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| !have.contains(id))
        .collect();
    let mut summary = DataSummary {
        found: ids.len(),
        already_had: ids.len() - todo.len(),
        ..DataSummary::default()
    };
    let bar = if progress {
        let bar = ProgressBar::new(todo.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} bugs [{bar:30}] {pos}/{len} {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    for id in todo {
        match client.bug(id).await {
            Ok(bug) => {
                writeln!(file, "{}", serde_json::to_string(&bug)?)?;
                file.flush()?;
                summary.written += 1;
            }
            Err(e) if e.action == Action::Skip => {
                bar.set_message(format!("skipped {id}: {}", e.reason));
                summary.skipped += 1;
            }
            Err(e) => {
                bar.abandon();
                anyhow::bail!(
                    "stopped at bug {id} ({} written so far): {e}; run the same command again to resume",
                    summary.written
                );
            }
        }
        bar.inc(1);
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}
