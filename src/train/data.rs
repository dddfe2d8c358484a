//! Training data: records in, labelled feature sets out.
//!
//! * bugs — JSON Lines of Bugzilla REST bugs (with comments, history, attachments), as in
//!   bugbug's `bugs.json` and the output of `bugflow data bugs`;
//! * commits — JSON Lines of changesets with `backed_out_by` (and `file_stats`);
//! * issues — CSV with columns `repo, created_at, label, title, body`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::features::commit::{self, Commit, Experience};
use crate::features::{Features, bug, issue};
use crate::models::bundle::DataFile;
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

/// The label of a bug for a bug model (`None`: the bug does not take part).
pub fn bug_label(model: ModelKind, bug: &Value) -> Option<String> {
    let keywords: Vec<&str> = bug
        .get("keywords")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match model {
        ModelKind::Bugtype => match bug.get("type").and_then(Value::as_str)? {
            t @ ("defect" | "enhancement" | "task") => Some(t.to_owned()),
            _ => None,
        },
        ModelKind::Component => {
            let c = conflated_component(bug)?;
            let general = c.ends_with("::General") || c.ends_with("::Untriaged");
            (!general && !c.starts_with("Invalid Bugs")).then_some(c)
        }
        ModelKind::Spam => Some(
            if bug.get("product").and_then(Value::as_str) == Some("Invalid Bugs") {
                "spam"
            } else {
                "ham"
            }
            .to_owned(),
        ),
        ModelKind::Regression => {
            let regressed_by = bug
                .get("regressed_by")
                .and_then(Value::as_array)
                .is_some_and(|r| !r.is_empty());
            let range = bug.get("cf_has_regression_range").and_then(Value::as_str) == Some("yes");
            let keyword =
                keywords.contains(&"regression") || keywords.contains(&"talos-regression");
            Some(
                if regressed_by || range || keyword {
                    "regression"
                } else {
                    "not-regression"
                }
                .to_owned(),
            )
        }
        _ => None,
    }
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

fn describe(path: &Path, records: usize) -> anyhow::Result<DataFile> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let digest = Sha256::digest(&bytes);
    Ok(DataFile {
        path: path.display().to_string(),
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        records,
    })
}

/// Loads the data of `model` from `files`.
pub fn load(model: ModelKind, files: &[impl AsRef<Path>]) -> anyhow::Result<Dataset> {
    let mut data = Dataset {
        samples: Vec::new(),
        files: Vec::new(),
        experience: None,
        rejected: Vec::new(),
        rejected_count: 0,
    };
    let mut commits = Vec::new();
    for file in files {
        let path = file.as_ref();
        let records = match model.input() {
            Input::Bug => load_bugs(model, path, &mut data)?,
            Input::Commit => load_commits(path, &mut commits, &mut data)?,
            Input::Issue => load_issues(path, &mut data)?,
        };
        data.files.push(describe(path, records)?);
    }
    if model.input() == Input::Commit {
        commits.sort_by_key(|c: &Commit| c.date);
        let mut experience = Experience::default();
        for c in &commits {
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
                });
            }
            experience.record(c);
        }
        data.experience = Some(experience);
    }
    if data.samples.is_empty() {
        anyhow::bail!(
            "no usable {model} records in {} file(s){}",
            files.len(),
            data.rejected
                .first()
                .map(|r| format!("; first problem: {r}"))
                .unwrap_or_default()
        );
    }
    Ok(data)
}

fn reject(data: &mut Dataset, why: String) {
    data.rejected_count += 1;
    if data.rejected.len() < 5 {
        data.rejected.push(why);
    }
}

/// Parses each non-empty line of a JSON Lines file as a `T`; lines that do not parse are
/// rejected with their line number. Returns the records and how many lines there were.
fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    data: &mut Dataset,
) -> anyhow::Result<(Vec<T>, usize)> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (mut parsed, mut records) = (Vec::new(), 0);
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
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

fn load_bugs(model: ModelKind, path: &Path, data: &mut Dataset) -> anyhow::Result<usize> {
    let exclude = model.exclude();
    let (bugs, records) = read_jsonl::<Value>(path, data)?;
    for bug in bugs {
        data.samples.push(Sample {
            key: String::new(),
            id: bug.get("id").map(|v| v.to_string()).unwrap_or_default(),
            date: parse_time(
                bug.get("creation_time")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            label: bug_label(model, &bug),
            features: bug::extract(&bug, &exclude),
        });
    }
    Ok(records)
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

fn load_issues(path: &Path, data: &mut Dataset) -> anyhow::Result<usize> {
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
        column("label")?,
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
