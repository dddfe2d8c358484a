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

use crate::clients::bugzilla::Bugzilla;
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
            Err(e) if e.action() == Action::Skip => {
                bar.set_message(format!("skipped {id}: {}", e));
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

/// `bugflow data pushes`: a repository's pushes from `from_id`, as commit records.
///
/// Each changeset becomes one line (`node, author, date, desc, files, parents, repo, pushid`);
/// `backed_out_by` is filled from the backouts found in the same file ("Backed out
/// changeset <node>"). Resumable: it continues after the highest push id already written.
pub async fn pushes(
    hg: &crate::clients::hg::HttpHg,
    base: &str,
    repo: &str,
    from_id: u64,
    to_id: Option<u64>,
    out: &Path,
    batch: u64,
) -> anyhow::Result<usize> {
    let mut start = from_id;
    if let Ok(text) = std::fs::read_to_string(out) {
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line)
                && let Some(id) = v["pushid"].as_u64()
            {
                start = start.max(id);
            }
        }
    }
    let mut written = 0;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)?;
    loop {
        let end = match to_id {
            Some(to) if start >= to => break,
            Some(to) => (start + batch).min(to),
            None => start + batch,
        };
        let (page, last) = hg
            .pushes(base, repo, start, end)
            .await
            .map_err(|e| anyhow::anyhow!("{e}; run the same command again to resume"))?;
        for (pushid, date, changesets) in &page {
            for mut c in changesets.iter().filter(|c| c.is_object()).cloned() {
                c["repo"] = Value::from(repo);
                c["pushid"] = Value::from(*pushid);
                if c["date"].is_array() || c["date"].is_null() {
                    c["date"] = Value::from(*date);
                }
                writeln!(file, "{}", serde_json::to_string(&c)?)?;
                written += 1;
            }
        }
        file.flush()?;
        start = end;
        if start >= last {
            break;
        }
    }
    drop(file);
    label_backouts(out)?;
    Ok(written)
}

static BACKOUT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(?i)back(?:ed)? ?out (?:changeset |revision )?([0-9a-f]{12,40})")
        .expect("a valid regex literal")
});

/// Sets `backed_out_by` on every commit a later commit of the file backs out.
fn label_backouts(out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(out)?;
    let mut commits: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut backed: Vec<(String, String)> = Vec::new();
    for c in &commits {
        let node = c["node"].as_str().unwrap_or_default();
        for cap in BACKOUT.captures_iter(c["desc"].as_str().unwrap_or_default()) {
            backed.push((cap[1].to_lowercase(), node.to_owned()));
        }
    }
    for c in &mut commits {
        let node = c["node"].as_str().unwrap_or_default().to_owned();
        if let Some((_, by)) = backed
            .iter()
            .find(|(prefix, _)| node.starts_with(prefix.as_str()))
        {
            c["backed_out_by"] = Value::from(by.clone());
        } else if c.get("backed_out_by").is_none() {
            c["backed_out_by"] = Value::Null;
        }
    }
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    for c in &commits {
        writeln!(f, "{}", serde_json::to_string(c)?)?;
    }
    f.flush()?;
    std::fs::rename(tmp, out)?;
    Ok(())
}

/// `bugflow data bugs --since DATE --out FILE`: with the configured key, or anonymously
/// paced under BMO's limit of 75 reads a minute.
pub async fn bugs_command(
    config: &crate::config::Config,
    since: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let client = crate::app::reader_client(config)?;
    let pace = if config.bugzilla.api_key.is_empty() {
        Duration::from_millis(850)
    } else {
        Duration::ZERO
    };
    let s = bugs(&client, since, out, pace, true).await?;
    eprintln!(
        "{} bugs found, {} already in {}, {} written, {} skipped (private or gone)",
        s.found,
        s.already_had,
        out.display(),
        s.written,
        s.skipped
    );
    Ok(())
}

/// What `bugflow data pushes` is asked (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct PushesOptions {
    /// `mozilla-central`, `integration/autoland`, …
    #[arg(long)]
    pub repo: String,
    /// Start after this push id.
    #[arg(long)]
    pub from_id: u64,
    #[arg(long)]
    pub to_id: Option<u64>,
    #[arg(long)]
    pub out: std::path::PathBuf,
    #[arg(long, default_value = "https://hg.mozilla.org")]
    pub hg_url: String,
    /// Pushes per request.
    #[arg(long, default_value_t = 50)]
    pub batch: u64,
}

/// `bugflow data pushes`: only the host of `--hg-url` is fetched.
pub async fn pushes_command(
    config: &crate::config::Config,
    o: &PushesOptions,
) -> anyhow::Result<()> {
    let host = url::Url::parse(&o.hg_url)?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    let hg = crate::clients::hg::HttpHg::new(
        vec![host],
        Duration::from_secs(config.hg.timeout_seconds),
        config.hg.attempts,
    )?;
    let n = pushes(
        &hg,
        &o.hg_url,
        &o.repo,
        o.from_id,
        o.to_id,
        &o.out,
        o.batch.max(1),
    )
    .await?;
    eprintln!("{n} changesets written to {}", o.out.display());
    Ok(())
}

/// `bugflow data labels --out FILE`: the harvested labels of the store, as JSON Lines.
pub async fn labels_command(config: &crate::config::Config, out: &Path) -> anyhow::Result<()> {
    let store = crate::store::Store::open(config.store.expose()).await?;
    let labels = store.labels().await?;
    let mut text = String::new();
    for label in &labels {
        text.push_str(&serde_json::to_string(label)?);
        text.push('\n');
    }
    std::fs::write(out, text)?;
    eprintln!("{} labels written to {}", labels.len(), out.display());
    Ok(())
}
