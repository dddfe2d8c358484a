//! Training data: records in, labelled feature sets out.
//!
//! * bugs — JSON Lines (or zstd-compressed JSON Lines, `.jsonl.zst`) of Bugzilla REST bugs,
//!   full (with comments, history, attachments, as bugbug's `bugs.json` and `bugflow data
//!   bugs`) or partial (a BMO search export's fields); bugbug's label files (`*.csv` with a
//!   `bug_id` column) beside them;
//! * commits — JSON Lines of changesets with `backed_out_by` (and `file_stats`);
//! * issues — CSV with columns `repo, created_at, title, body` and the label column its
//!   catalogue rule names (`label`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::labels::{self, LabelFiles};
use crate::features::commit::{self, Commit, Experience};
use crate::features::{Features, bug, issue};
use crate::models::bundle::DataFile;
use crate::models::catalogue::{Rule, Spec};
use crate::models::{Input, ModelKind};

/// One labelled record.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sub-model it belongs to: the repository for issue-type, `""` otherwise.
    pub key: String,
    pub id: String,
    pub date: i64,
    pub label: Option<String>,
    pub features: Features,
    /// The record's text as it came (title, then body or first comment): what
    /// `--export` writes for a side-by-side learner.
    pub text: (String, String),
}

/// A model's training data.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    pub files: Vec<DataFile>,
    /// commit-risk: author experience at the end of the data (shipped in the bundle).
    pub experience: Option<Experience>,
    /// Records that could not be read, with why (first few).
    pub rejected: Vec<String>,
    pub rejected_count: usize,
}

/// `Product::Component`, conflated the way bugbug does.
pub fn conflated_component(bug: &Value) -> Option<String> {
    let product = bug.get("product")?.as_str()?;
    let component = bug.get("component")?.as_str()?;
    Some(crate::effects::conflation::class_of(&format!(
        "{product}::{component}"
    )))
}

fn parse_time(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp())
        .or_else(|_| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").map(|d| d.and_utc().timestamp())
        })
        .or_else(|_| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").map(|d| d.and_utc().timestamp())
        })
        .unwrap_or(0)
}

pub(crate) fn describe(path: &Path, records: usize) -> anyhow::Result<DataFile> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let digest = Sha256::digest(&bytes);
    Ok(DataFile {
        path: path.display().to_string(),
        sha256: hex::encode(digest),
        records,
    })
}

/// Loads the data of `model` from `files`, labelled by its catalogue rule.
pub fn load(model: ModelKind, files: &[impl AsRef<Path>]) -> anyhow::Result<Dataset> {
    let spec = model
        .spec()
        .ok_or_else(|| anyhow::anyhow!("{model}: no catalogue file"))?;
    let mut data = Dataset {
        samples: Vec::new(),
        files: Vec::new(),
        experience: None,
        rejected: Vec::new(),
        rejected_count: 0,
    };
    let paths: Vec<&Path> = files.iter().map(AsRef::as_ref).collect();
    let is_label_file =
        |p: &&Path| spec.reads == Input::Bug && p.extension().is_some_and(|e| e == "csv");
    let label_paths: Vec<&Path> = paths.iter().copied().filter(is_label_file).collect();
    let label_files = LabelFiles::read(&spec.label, &label_paths)?;
    for (path, ids) in &label_files.read {
        data.files.push(describe(Path::new(path), *ids)?);
    }
    let mut commits = Vec::new();
    for path in paths.iter().copied().filter(|p| !is_label_file(p)) {
        let records = match spec.reads {
            Input::Bug => load_bugs(model, spec, &label_files, path, &mut data)?,
            Input::Commit => load_commits(path, &mut commits, &mut data)?,
            Input::Issue => load_issues(spec, path, &mut data)?,
        };
        data.files.push(describe(path, records)?);
    }
    if spec.reads == Input::Commit {
        label_commits(&mut commits, &mut data);
    }
    if !spec.classes.is_empty() {
        for s in &mut data.samples {
            if s.label.as_ref().is_some_and(|l| !spec.classes.contains(l)) {
                s.label = None;
            }
        }
    }
    if data.samples.iter().all(|s| s.label.is_none()) {
        anyhow::bail!(
            "no labelled {model} records in {} file(s){}",
            files.len(),
            data.rejected
                .first()
                .map(|r| format!("; first problem: {r}"))
                .unwrap_or_default()
        );
    }
    Ok(data)
}

/// Commits in time order, each labelled and given its author's experience before it.
fn label_commits(commits: &mut [Commit], data: &mut Dataset) {
    commits.sort_by_key(|c: &Commit| c.date);
    let mut experience = Experience::default();
    for c in commits.iter() {
        if !commit::is_backout(c) && c.parents.len() < 2 {
            data.samples.push(Sample {
                key: String::new(),
                id: c.node.clone(),
                date: c.date,
                label: Some(
                    if c.backed_out_by.is_some() {
                        "backed-out"
                    } else {
                        "clean"
                    }
                    .to_owned(),
                ),
                features: commit::extract(c, &experience),
                text: (c.desc.clone(), String::new()),
            });
        }
        experience.record(c);
    }
    data.experience = Some(experience);
}

fn reject(data: &mut Dataset, why: String) {
    data.rejected_count += 1;
    if data.rejected.len() < 5 {
        data.rejected.push(why);
    }
}

/// A data file for reading, decompressed when its name ends in `.zst`.
pub fn open(path: &Path) -> anyhow::Result<BufReader<Box<dyn std::io::Read>>> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(file)
                .map_err(|e| anyhow::anyhow!("{}: not zstd: {e}", path.display()))?,
        )
    } else {
        Box::new(file)
    };
    Ok(BufReader::new(reader))
}

/// Parses each non-empty line of a JSON Lines file as a `T`; lines that do not parse are
/// rejected with their line number. Returns the records and how many lines there were.
fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    data: &mut Dataset,
) -> anyhow::Result<(Vec<T>, usize)> {
    let (mut parsed, mut records) = (Vec::new(), 0);
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        records += 1;
        match serde_json::from_str(&line) {
            Ok(v) => parsed.push(v),
            Err(e) => reject(data, format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok((parsed, records))
}

fn load_bugs(
    model: ModelKind,
    spec: &Spec,
    label_files: &LabelFiles,
    path: &Path,
    data: &mut Dataset,
) -> anyhow::Result<usize> {
    let exclude = model.exclude();
    let (bugs, records) = read_jsonl::<Value>(path, data)?;
    for bug in bugs {
        let Some(id) = bug.get("id").and_then(Value::as_u64) else {
            reject(data, format!("{}: a bug without an id", path.display()));
            continue;
        };
        let created = bug.get("creation_time").and_then(Value::as_str);
        data.samples.push(Sample {
            key: String::new(),
            id: id.to_string(),
            // Bug ids grow with time: partial records (no creation_time) split by id.
            date: match (spec.split.by.as_str(), created) {
                ("created", Some(t)) => parse_time(t),
                _ => id as i64,
            },
            label: labels::bug_class(&spec.label, label_files, &bug),
            features: bug::extract(&bug, exclude),
            text: (
                bug.get("summary")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                first_comment(&bug),
            ),
        });
    }
    Ok(records)
}

/// The text of a bug's first comment (its description), at most 20,000 bytes.
fn first_comment(bug: &Value) -> String {
    let text = bug
        .get("comments")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut end = text.len().min(bug::MAX_COMMENT_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn load_commits(
    path: &Path,
    commits: &mut Vec<Commit>,
    data: &mut Dataset,
) -> anyhow::Result<usize> {
    let (parsed, records) = read_jsonl::<Commit>(path, data)?;
    commits.extend(parsed);
    Ok(records)
}

fn load_issues(spec: &Spec, path: &Path, data: &mut Dataset) -> anyhow::Result<usize> {
    let label_column = match &spec.label.rule {
        Rule::Column { column } => column.as_str(),
        _ => "label",
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow::anyhow!("{}: no column {name:?}", path.display()))
    };
    let (repo, created, label, title, body) = (
        column("repo")?,
        column("created_at")?,
        column(label_column)?,
        column("title")?,
        column("body")?,
    );
    let mut records = 0;
    for (i, row) in reader.records().enumerate() {
        records += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                reject(data, format!("{}: row {}: {e}", path.display(), i + 1));
                continue;
            }
        };
        let get = |c: usize| row.get(c).unwrap_or_default();
        data.samples.push(Sample {
            key: get(repo).to_owned(),
            id: format!("{}#{}", get(repo), i + 1),
            date: parse_time(get(created)),
            label: Some(get(label).to_owned()).filter(|l| !l.is_empty()),
            features: issue::extract(get(title), get(body)),
            text: (get(title).to_owned(), get(body).to_owned()),
        });
    }
    Ok(records)
}

/// Labelled samples grouped by sub-model key, keeping classes with at least `min_records`.
pub fn by_key(samples: &[Sample], min_records: usize) -> BTreeMap<String, Vec<&Sample>> {
    let mut groups: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.label.is_some()) {
        groups.entry(s.key.clone()).or_default().push(s);
    }
    for members in groups.values_mut() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in members.iter() {
            *counts
                .entry(s.label.as_deref().unwrap_or_default())
                .or_default() += 1;
        }
        members.retain(|s| counts[s.label.as_deref().unwrap_or_default()] >= min_records);
    }
    groups.retain(|_, m| !m.is_empty());
    groups
}
