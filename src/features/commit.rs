//! Commit features: what a changeset touches, how much, and who wrote it.
//!
//! The input is a changeset as `json-pushes?version=2&full=1` returns it (`node`, `author`,
//! `date`, `desc`, `files`), optionally with `file_stats` (added and deleted lines per file)
//! as in the project's commit histories. Author experience comes from an [`Experience`]
//! table: built in date order while training, shipped inside the model bundle for inference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::text::cleanup;
use super::{Features, Fnv, Group};

/// A changeset, as far as features need it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub author: String,
    /// UNIX time; json-pushes gives `[time, tz offset]`, the histories a number.
    #[serde(default, deserialize_with = "de_date")]
    pub date: i64,
    #[serde(default)]
    pub desc: String,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub file_stats: Vec<FileStat>,
    pub backed_out_by: Option<String>,
    #[serde(default)]
    pub parents: Vec<String>,
    /// The git commit of this changeset (Firefox is developed in git; hg mirrors it), if any.
    pub git_node: Option<String>,
    #[serde(default)]
    pub git_parents: Vec<Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileStat {
    pub path: String,
    /// Binary files have no line counts (`null`).
    #[serde(default, deserialize_with = "de_count")]
    pub added: u64,
    #[serde(default, deserialize_with = "de_count")]
    pub deleted: u64,
}

fn de_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

fn de_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match &v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0) as i64,
        Value::Array(a) => a.first().and_then(Value::as_f64).unwrap_or(0.0) as i64,
        _ => 0,
    })
}

/// How many commits (and backouts) each author had before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    pub commits: BTreeMap<String, u32>,
    pub backouts: BTreeMap<String, u32>,
}

impl Experience {
    /// Counts `commit` for its author (after its features were taken).
    pub fn record(&mut self, commit: &Commit) {
        let author = author_key(&commit.author);
        *self.commits.entry(author.clone()).or_default() += 1;
        if commit.backed_out_by.is_some() {
            *self.backouts.entry(author).or_default() += 1;
        }
    }
}

/// `Jane Doe <jane@example.com>` → `jane@example.com`.
pub fn author_key(author: &str) -> String {
    match (author.find('<'), author.rfind('>')) {
        (Some(a), Some(b)) if a < b => author[a + 1..b].trim().to_lowercase(),
        _ => author.trim().to_lowercase(),
    }
}

/// A backout commit itself (bugbug does not score those).
pub fn is_backout(commit: &Commit) -> bool {
    let d = commit.desc.to_lowercase();
    d.starts_with("backed out") || d.starts_with("back out") || d.starts_with("revert")
}

const SOURCE_EXTENSIONS: &[&str] = &[
    "c", "cc", "cpp", "cxx", "h", "hh", "hpp", "m", "mm", "rs", "js", "jsm", "mjs", "jsx", "ts",
    "tsx", "py", "java", "kt", "swift", "go", "idl", "webidl", "ipdl", "css", "html", "xhtml",
    "sh",
];

/// A test file: under a test directory or named like one (bugbug's `is_test`).
pub fn is_test(path: &str) -> bool {
    let lower = path.to_lowercase();
    lower.contains("/test/")
        || lower.contains("/tests/")
        || lower.starts_with("test/")
        || lower.starts_with("tests/")
        || lower.contains("mochitest")
        || lower.contains("reftest")
        || lower.contains("crashtest")
        || lower.contains("web-platform")
        || lower.contains("xpcshell")
        || file_name(&lower).starts_with("test_")
        || file_name(&lower).contains("_test.")
        || file_name(&lower).contains(".test.")
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn extension(path: &str) -> Option<&str> {
    let name = file_name(path);
    name.rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty())
}

pub fn is_source(path: &str) -> bool {
    !is_test(path) && extension(path).is_some_and(|e| SOURCE_EXTENSIONS.contains(&e))
}

/// The commit's components: its files' top directories.
pub fn components(commit: &Commit) -> Vec<String> {
    let mut c: Vec<String> = commit
        .files
        .iter()
        .map(|f| match f.split_once('/') {
            Some((top, _)) => top.to_owned(),
            None => "(root)".to_owned(),
        })
        .collect();
    c.sort();
    c.dedup();
    c
}

/// Every feature of a commit.
pub fn extract(commit: &Commit, experience: &Experience) -> Features {
    let mut f = Features::new();
    files(&mut f, commit);
    line_counts(&mut f, commit);
    let comps = components(commit);
    f.count("components_modified_num", comps.len() as f64);
    f.list("components", comps.iter().map(String::as_str));

    let author = author_key(&commit.author);
    let commits = experience.commits.get(&author).copied().unwrap_or(0);
    let backouts = experience.backouts.get(&author).copied().unwrap_or(0);
    f.count("author_experience", f64::from(commits));
    f.count("author_backouts", f64::from(backouts));
    f.flag("author_first_commit", commits == 0);
    f.flag("is_merge", commit.parents.len() > 1);

    let desc = cleanup(&commit.desc);
    let mut lines = desc.lines();
    if let Some(first) = lines.next() {
        f.words(Group::Title, first);
    }
    f.words(Group::Body, &lines.collect::<Vec<_>>().join(" "));
    f
}

/// The files touched: each file, its directories and its extension as tokens; how many
/// source, test and other files, and how many directories.
fn files(f: &mut Features, commit: &Commit) {
    let (mut source, mut test, mut other) = (0usize, 0usize, 0usize);
    // The hashes of the directories met (distinct paths, distinct hashes).
    let mut directories: Vec<u64> = Vec::new();
    // The tokens `file:<path>`, `dir:<each leading directory>` and `ext:<extension>` are
    // hashed from their parts as they are read: no string is built for any of them.
    let named = |prefix: &str| Fnv::new(Group::Files).str(prefix);
    for path in &commit.files {
        if is_test(path) {
            test += 1;
        } else if is_source(path) {
            source += 1;
        } else {
            other += 1;
        }
        f.tokens
            .push((named("file:").str(path).finish(), Group::Files));
        if let Some((leading, _)) = path.rsplit_once('/') {
            // Each leading directory's hash goes on from its parent's, with the `/` between
            // (none after an empty first part: `/a/b` has the directories `` and `a`).
            let (mut dir, mut empty) = (named("dir:"), true);
            for part in leading.split('/') {
                if !empty {
                    dir = dir.byte(b'/');
                }
                dir = dir.str(part);
                empty &= part.is_empty();
                let hash = dir.finish();
                f.tokens.push((hash, Group::Files));
                directories.push(hash);
            }
        }
        if let Some(ext) = extension(path) {
            let hash = if ext.is_ascii() {
                ext.bytes()
                    .fold(named("ext:"), |h, b| h.byte(b.to_ascii_lowercase()))
            } else {
                named("ext:").str(&ext.to_lowercase())
            };
            f.tokens.push((hash.finish(), Group::Files));
        }
    }
    directories.sort();
    directories.dedup();
    f.count("files_modified_num", commit.files.len() as f64);
    f.count("source_files_modified_num", source as f64);
    f.count("test_files_modified_num", test as f64);
    f.count("other_files_modified_num", other as f64);
    f.count("directories_modified_num", directories.len() as f64);
}

/// Lines added and deleted in source, test and other files (from the file stats).
fn line_counts(f: &mut Features, commit: &Commit) {
    let (mut sa, mut sd, mut ta, mut td, mut oa, mut od) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for stat in &commit.file_stats {
        // Saturating: a hand-made or hostile file_stats must not overflow.
        let (added, deleted) = if is_test(&stat.path) {
            (&mut ta, &mut td)
        } else if is_source(&stat.path) {
            (&mut sa, &mut sd)
        } else {
            (&mut oa, &mut od)
        };
        *added = added.saturating_add(stat.added);
        *deleted = deleted.saturating_add(stat.deleted);
    }
    f.count("source_added", sa as f64);
    f.count("source_deleted", sd as f64);
    f.count("test_added", ta as f64);
    f.count("test_deleted", td as f64);
    f.count("other_added", oa as f64);
    f.count("other_deleted", od as f64);
    f.flag("has_file_stats", !commit.file_stats.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file tokens, hashed from their parts, are the hashes of the names they stand for
    /// (as they were made before: a string for each, then hashed), and the directories are
    /// counted as those names were.
    #[test]
    fn file_tokens_are_the_hashes_of_their_names() {
        let paths = [
            "a.cpp",
            "dom/base/Element.CPP",
            "/abs/x.Rs",
            "a//b/c.h",
            "dir/",
            "noext",
            ".hidden",
            "ü/ß/Ä.ÄX",
            "x.tar.GZ",
            "",
            "/",
            "//",
            "a/b.",
            "dom/base/test/test_foo.html",
        ];
        for path in paths {
            let mut names = vec![format!("file:{path}")];
            let parts: Vec<&str> = path.split('/').collect();
            let mut prefix = String::new();
            let mut directories = Vec::new();
            for part in &parts[..parts.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                names.push(format!("dir:{prefix}"));
                directories.push(prefix.clone());
            }
            if let Some(ext) = extension(path) {
                names.push(format!("ext:{}", ext.to_lowercase()));
            }
            directories.sort();
            directories.dedup();
            let commit = Commit {
                files: vec![path.to_string(), path.to_string()],
                ..Commit::default()
            };
            let mut f = Features::new();
            files(&mut f, &commit);
            let once: Vec<(u64, Group)> = names
                .iter()
                .map(|n| (super::super::feature_hash(Group::Files, n), Group::Files))
                .collect();
            assert_eq!(f.tokens, [once.clone(), once].concat(), "{path:?}");
            // (A count is stored as ln(1 + n), and a count of 0 is no feature.)
            let counted = f
                .items
                .iter()
                .find(|i| i.name == "directories_modified_num");
            assert_eq!(
                counted.map_or(0.0, |i| i.value),
                (directories.len() as f64).ln_1p(),
                "{path:?}"
            );
        }
    }

    #[test]
    fn files_are_sorted_into_source_test_and_other() {
        assert!(is_test("dom/base/test/test_foo.html"));
        assert!(is_test("tests/unit/test_models.py"));
        assert!(is_source("dom/base/Element.cpp"));
        assert!(!is_source("README.md"));
        assert_eq!(
            author_key("Jane Doe <Jane@Example.com>"),
            "jane@example.com"
        );
    }

    #[test]
    fn git_fields_are_read_null_or_not() {
        let c: Commit = serde_json::from_str(
            r#"{"node": "a", "git_node": "0123456789abcdef0123456789abcdef01234567", "git_parents": [null, "b"]}"#,
        )
        .unwrap();
        assert_eq!(
            c.git_node.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(c.git_parents, vec![None, Some("b".to_string())]);
    }

    #[test]
    fn json_pushes_dates_are_pairs() {
        let c: Commit =
            serde_json::from_str(r#"{"date": [1469830246.0, 0], "desc": "x"}"#).unwrap();
        assert_eq!(c.date, 1_469_830_246);
    }
}
