//! Consumers are data: one TOML file each in `consumers/`, named after the file.
//!
//! A file says what a consumer reads (its bindings and `input` kind), where its durable queue
//! is, how many unacked messages it may hold (`prefetch`), and where its results go. Adding a
//! consumer means adding a file, not a module. See `consumers/pushes.toml` for a commented
//! example.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::events::InputKind;
use crate::models::{Input, ModelKind};
use crate::sinks::archive::PastDays;

/// The consumer files shipped with bugflow, used when the consumers folder is missing (a
/// binary run outside its checkout, `bugflow demo`).
pub const BUILTIN: &[(&str, &str)] = &[
    ("pushes", include_str!("../consumers/pushes.toml")),
    ("landings", include_str!("../consumers/landings.toml")),
    ("bug-triage", include_str!("../consumers/bug-triage.toml")),
    (
        "api-requests",
        include_str!("../consumers/api-requests.toml"),
    ),
];

/// One consumer, as written in its TOML file (names still hold `{user}` and `{env}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerFile {
    /// One line for `bugflow run --help` and logs.
    #[serde(default)]
    pub description: String,
    /// What the messages are: `hg-push` or `bug-event`.
    pub input: InputKind,
    /// The durable queue, `queue/{user}/…` (Pulse's rule).
    pub queue: String,
    /// The most unacked messages this consumer holds at once (RabbitMQ advises 100–300).
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// The word in result routing keys (`<consumer>.<kind>.<subject>`), e.g. `push`.
    pub kind: String,
    pub bindings: Vec<Binding>,
    /// Pushes by these users are skipped (bots whose pushes need no score).
    #[serde(default)]
    pub skip_users: Vec<String>,
    /// Only these repositories (routing keys) are processed; empty means all bound ones.
    #[serde(default)]
    pub repos: Vec<String>,
    /// The models this consumer runs (their serving bundles come from the registry).
    #[serde(default)]
    pub models: Vec<ModelKind>,
    #[serde(default, rename = "sinks")]
    pub outputs: Outputs,
}

fn default_prefetch() -> u16 {
    200
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub exchange: String,
    /// Topic patterns: `*` is one word, `#` any number of words.
    pub keys: Vec<String>,
    /// Bind only if the exchange exists (a legacy feed that may be gone).
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// Where a consumer's work goes: `[sinks]` of its file (the results exchange),
/// `[sinks.bugzilla]` (the writer, an effect) and `[sinks.archive]` (each message kept with
/// what was fetched to score it).
pub struct Outputs {
    /// Publish results to the results exchange (with publisher confirms).
    #[serde(default = "yes")]
    pub results: bool,
    /// Write predictions back to Bugzilla (off by default; see `effects::bugzilla`).
    #[serde(default)]
    pub bugzilla: crate::effects::bugzilla::WriterConfig,
    /// Keep each message this consumer settles in an archive, with its enrichment (off
    /// unless set; see `sinks::archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveOutput>,
}

/// `[sinks.archive]`: the archive a consumer keeps of its messages, as `bugflow record
/// --enrich` writes one, so that `bugflow replay --offline` gives its results again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveOutput {
    /// The file, appended to (created with its folders); `{user}` and `{env}` are resolved.
    /// A `{date}` in the file name makes it a file a UTC day (`sinks::archive`).
    pub path: PathBuf,
    /// With a dated path: delete the files of days more than this many days before today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
    /// With a dated path: compress each past day's file (`.jsonl.zst`, which replays as
    /// it is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compress: bool,
}

impl ArchiveOutput {
    /// What becomes of its past days' files.
    pub fn past_days(&self) -> PastDays {
        PastDays {
            keep_days: self.keep_days,
            compress: self.compress,
        }
    }
}

fn yes() -> bool {
    true
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            results: true,
            bugzilla: Default::default(),
            archive: None,
        }
    }
}

/// A consumer ready to run: its file, with names resolved for this deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    pub name: String,
    pub input: InputKind,
    pub queue: String,
    pub prefetch: u16,
    pub kind: String,
    pub bindings: Vec<Binding>,
    pub skip_users: Vec<String>,
    pub repos: Vec<String>,
    pub models: Vec<ModelKind>,
    pub outputs: Outputs,
    pub description: String,
}

impl ConsumerSpec {
    /// The shipped consumer `name` (`consumers/<name>.toml`, built into the binary), read
    /// with `config`.
    pub fn builtin(name: &str, config: &Config) -> anyhow::Result<ConsumerSpec> {
        let text = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| *text)
            .ok_or_else(|| {
                let shipped: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                anyhow::anyhow!("no shipped consumer {name:?} ({})", shipped.join(", "))
            })?;
        let origin = format!("(built-in) consumers/{name}.toml");
        Ok(ConsumerSpec::parse(name, &origin, text, config)?)
    }

    /// Parses and checks one consumer file. `origin` names the file in errors.
    pub fn parse(
        name: &str,
        origin: &str,
        text: &str,
        config: &Config,
    ) -> Result<ConsumerSpec, ConfigError> {
        let file: ConsumerFile = toml::from_str(text).map_err(|e| ConfigError {
            file: origin.into(),
            field: field_of(&e),
            problem: e.message().to_owned(),
        })?;
        Self::from_file(name, origin, file, config)
    }

    pub fn from_file(
        name: &str,
        origin: &str,
        file: ConsumerFile,
        config: &Config,
    ) -> Result<ConsumerSpec, ConfigError> {
        let err = |field: &str, problem: String| ConfigError {
            file: origin.into(),
            field: field.into(),
            problem,
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(err(
                "(file name)",
                format!("consumer name {name:?}: use letters, digits and dashes"),
            ));
        }
        let queue = resolve_queue(&file.queue, config).map_err(|problem| err("queue", problem))?;
        check_settings(&file, config).map_err(|(field, problem)| err(field, problem))?;
        check_models(&file).map_err(|problem| err("models", problem))?;
        let bindings = resolve_bindings(file.bindings, config).map_err(|(f, p)| err(&f, p))?;
        let mut outputs = file.outputs;
        if let Some(archive) = &mut outputs.archive {
            resolve_archive(archive, config).map_err(|(field, problem)| err(field, problem))?;
        }
        Ok(ConsumerSpec {
            name: name.into(),
            input: file.input,
            queue,
            prefetch: file.prefetch,
            kind: file.kind,
            bindings,
            skip_users: file.skip_users,
            repos: file.repos,
            models: file.models,
            outputs,
            description: file.description,
        })
    }

    /// Whether a message from `exchange` with `routing_key` would reach this consumer.
    pub fn accepts(&self, exchange: &str, routing_key: &str) -> bool {
        self.bindings
            .iter()
            .any(|b| b.exchange == exchange && b.keys.iter().any(|k| topic_matches(k, routing_key)))
    }
}

/// The file's own settings that need no lookup: its exchanges fit AMQP's names, its
/// prefetch is one RabbitMQ takes, its kind is one routing-key word. The field at fault and
/// why, when one is not.
fn check_settings(file: &ConsumerFile, config: &Config) -> Result<(), (&'static str, String)> {
    let too_long = |name: &str| name.len() > crate::pulse::short::MAX;
    if let Some(b) = file
        .bindings
        .iter()
        .find(|b| too_long(&config.resolve(&b.exchange)))
    {
        return Err((
            "bindings",
            format!(
                "exchange {:?}…: longer than AMQP's 255 bytes",
                b.exchange.chars().take(40).collect::<String>()
            ),
        ));
    }
    if !(1..=2000).contains(&file.prefetch) {
        return Err((
            "prefetch",
            format!(
                "{} is outside 1..=2000 (RabbitMQ advises 100–300; quorum queues cap at 2000)",
                file.prefetch
            ),
        ));
    }
    if file.kind.is_empty() || file.kind.contains('.') {
        return Err((
            "kind",
            format!("{:?} must be one routing-key word", file.kind),
        ));
    }
    Ok(())
}

/// The archive's path resolved ([`archive_path`]), and what it is asked to do with past
/// days checked against it: both need a file a day.
fn resolve_archive(
    archive: &mut ArchiveOutput,
    config: &Config,
) -> Result<(), (&'static str, String)> {
    archive.path =
        archive_path(&archive.path, config).map_err(|problem| ("sinks.archive.path", problem))?;
    for (asked, field, why) in [
        (
            archive.keep_days.is_some(),
            "sinks.archive.keep_days",
            "to know which days are old",
        ),
        (
            archive.compress,
            "sinks.archive.compress",
            "a past day's file is compressed, the current one is written",
        ),
    ] {
        if asked && !crate::sinks::archive::is_dated(&archive.path) {
            return Err((
                field,
                format!("needs a path with {{date}} in its file name (a file a day): {why}"),
            ));
        }
    }
    Ok(())
}

/// The consumer's queue with `{user}` and `{env}` resolved: at most AMQP's 255 bytes, and
/// in the user's namespace (Pulse's rule).
fn resolve_queue(template: &str, config: &Config) -> Result<String, String> {
    let queue = config.resolve(template);
    if queue.len() > crate::pulse::short::MAX {
        return Err(format!("{} bytes; AMQP allows 255", queue.len()));
    }
    if !queue.starts_with(&format!("queue/{}/", config.user)) {
        return Err(format!(
            "{queue:?}: Pulse lets user {} read only queues named queue/{}/…",
            config.user, config.user
        ));
    }
    Ok(queue)
}

/// `[sinks.archive] path` with `{user}` and `{env}` resolved; an empty one is refused, and
/// so is a `{date}` outside the file name.
fn archive_path(path: &Path, config: &Config) -> Result<PathBuf, String> {
    let path = PathBuf::from(config.resolve(&path.to_string_lossy()));
    if path.to_string_lossy().trim().is_empty() {
        return Err("is empty: name the archive file".into());
    }
    crate::sinks::archive::not_compressed(&path)?;
    let folder = path.parent().map(Path::to_string_lossy).unwrap_or_default();
    let name = crate::sinks::archive::file_name(&path);
    if folder.contains(crate::sinks::archive::DATE)
        || name.matches(crate::sinks::archive::DATE).count() > 1
    {
        return Err(format!(
            "{}: {{date}} may only be in the file name, once (a file a day in one folder)",
            path.display()
        ));
    }
    Ok(path)
}

/// Loads every `*.toml` in the consumers folder; without the folder, the built-in ones.
pub fn load_all(config: &Config) -> anyhow::Result<Vec<ConsumerSpec>> {
    let dir = &config.consumers_dir;
    let mut specs = Vec::new();
    if dir.is_dir() {
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            specs.push(load_file(&path, config)?);
        }
    } else {
        tracing::info!(dir = %dir.display(), "no consumers folder: using the built-in consumers");
        for (name, _) in BUILTIN {
            specs.push(ConsumerSpec::builtin(name, config)?);
        }
    }
    if specs.is_empty() {
        anyhow::bail!("no consumer files (*.toml) in {}", dir.display());
    }
    check_shared_archives(&specs)?;
    Ok(specs)
}

/// Consumers naming one archive share its writer (their lines never mix), so they must
/// agree on the days it keeps.
fn check_shared_archives(specs: &[ConsumerSpec]) -> anyhow::Result<()> {
    let mut first: HashMap<&Path, (&str, PastDays)> = HashMap::new();
    for spec in specs {
        let Some(archive) = &spec.outputs.archive else {
            continue;
        };
        match first.get(archive.path.as_path()) {
            Some((other, past)) if *past != archive.past_days() => anyhow::bail!(
                "consumers {other} and {} share the archive {} but not its keep_days and compress ([sinks.archive]): give both the same",
                spec.name,
                archive.path.display()
            ),
            Some(_) => {}
            None => {
                first.insert(&archive.path, (&spec.name, archive.past_days()));
            }
        }
    }
    Ok(())
}

pub fn load_file(path: &Path, config: &Config) -> anyhow::Result<ConsumerSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    Ok(ConsumerSpec::parse(
        name,
        &path.display().to_string(),
        &text,
        config,
    )?)
}

/// The dotted path of the field a TOML error is about, as far as the error tells.
fn field_of(e: &toml::de::Error) -> String {
    let msg = e.message();
    // serde's messages quote the field: "unknown field `prefech`", "missing field `queue`".
    if let Some(start) = msg.find('`')
        && let Some(len) = msg[start + 1..].find('`')
    {
        return msg[start + 1..start + 1 + len].to_owned();
    }
    match e.span() {
        Some(span) => format!("(at byte {})", span.start),
        None => "(unknown)".into(),
    }
}

/// AMQP topic matching: words are split on `.`; `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(w), Some(kw)) if w == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// Every model must read what the consumer's input carries.
fn check_models(file: &ConsumerFile) -> Result<(), String> {
    let reads: &[Input] = match file.input {
        InputKind::HgPush => &[Input::Commit],
        InputKind::BugEvent => &[Input::Bug],
        // The API asks for bug models and push risk.
        InputKind::PredictionRequest => &[Input::Bug, Input::Commit],
    };
    match file.models.iter().find(|m| !reads.contains(&m.input())) {
        Some(m) => Err(format!(
            "{m} does not read what this consumer's input ({:?}) carries",
            file.input
        )),
        None => Ok(()),
    }
}

/// The bindings with `{user}` and `{env}` resolved; `(field, problem)` for a bad one.
fn resolve_bindings(
    bindings: Vec<Binding>,
    config: &Config,
) -> Result<Vec<Binding>, (String, String)> {
    if bindings.is_empty() {
        return Err((
            "bindings".into(),
            "a consumer needs at least one binding".into(),
        ));
    }
    let mut resolved = Vec::new();
    for (i, b) in bindings.into_iter().enumerate() {
        if b.exchange.is_empty() {
            return Err((format!("bindings[{i}].exchange"), "is empty".into()));
        }
        if b.keys.is_empty() {
            return Err((
                format!("bindings[{i}].keys"),
                "needs at least one routing key (`#` for all)".into(),
            ));
        }
        if let Some(key) = b.keys.iter().find(|k| k.len() > crate::pulse::short::MAX) {
            return Err((
                format!("bindings[{i}].keys"),
                format!("{} bytes; AMQP allows 255", key.len()),
            ));
        }
        resolved.push(Binding {
            exchange: config.resolve(&b.exchange),
            ..b
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("#", "integration/autoland"));
        assert!(topic_matches("bug.*", "bug.modify:cc,status"));
        assert!(!topic_matches("bug.*", "comment.create"));
        assert!(topic_matches("bug.#", "bug"));
        assert!(topic_matches("a.#.z", "a.b.c.z"));
        assert!(!topic_matches("mozilla-central", "try"));
    }

    #[test]
    fn the_shipped_consumers_parse() {
        let config = Config::default();
        for (name, text) in BUILTIN {
            let spec = ConsumerSpec::parse(name, name, text, &config).unwrap();
            assert!(spec.queue.starts_with("queue/bugflow/"), "{}", spec.queue);
        }
    }

    /// A consumer file's `[sinks.archive]` (commented out in the shipped files), with its
    /// names resolved; a path left empty or a misspelt key is refused with the field.
    #[test]
    fn an_archive_is_kept_where_the_file_says() {
        let config = Config::default();
        let shipped = BUILTIN.iter().find(|(n, _)| *n == "bug-triage").unwrap().1;
        let asked = shipped.replace("# [sinks.archive]\n# path", "[sinks.archive]\npath");
        assert_ne!(asked, shipped, "the shipped file shows how to ask");
        let spec = ConsumerSpec::parse("bug-triage", "f", &asked, &config).unwrap();
        let path = spec.outputs.archive.unwrap().path;
        assert_eq!(
            path,
            Path::new(&format!("archive/bug-triage-{}.jsonl", config.env))
        );
        assert!(
            ConsumerSpec::parse("bug-triage", "f", shipped, &config)
                .unwrap()
                .outputs
                .archive
                .is_none()
        );

        let empty = asked.replace("path = \"archive/bug-triage-{env}.jsonl\"", "path = \" \"");
        let e = ConsumerSpec::parse("bug-triage", "f", &empty, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.path", "{e}");
        let misspelt = asked.replace("path =", "file =");
        let e = ConsumerSpec::parse("bug-triage", "f", &misspelt, &config).unwrap_err();
        assert!(e.to_string().contains("file"), "{e}");

        let daily = asked.replace(
            "path = \"archive/bug-triage-{env}.jsonl\"",
            "path = \"archive/bug-triage-{env}-{date}.jsonl\"\nkeep_days = 30",
        );
        let archive = ConsumerSpec::parse("bug-triage", "f", &daily, &config)
            .unwrap()
            .outputs
            .archive
            .unwrap();
        assert_eq!(archive.keep_days, Some(30));
        assert!(
            archive
                .path
                .ends_with(format!("bug-triage-{}-{{date}}.jsonl", config.env))
        );
        let undated = asked.replace(
            "path = \"archive/bug-triage-{env}.jsonl\"",
            "path = \"archive/bug-triage.jsonl\"\nkeep_days = 30",
        );
        let e = ConsumerSpec::parse("bug-triage", "f", &undated, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.keep_days", "{e}");
        let compressing = daily.replace("keep_days = 30", "compress = true");
        let archive = ConsumerSpec::parse("bug-triage", "f", &compressing, &config)
            .unwrap()
            .outputs
            .archive
            .unwrap();
        assert!(archive.compress);
        assert_eq!(archive.keep_days, None);
        let undated = undated.replace("keep_days = 30", "compress = true");
        let e = ConsumerSpec::parse("bug-triage", "f", &undated, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.compress", "{e}");
        let in_folder = asked.replace(
            "archive/bug-triage-{env}.jsonl",
            "archive/{date}/bug-triage.jsonl",
        );
        let e = ConsumerSpec::parse("bug-triage", "f", &in_folder, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.path", "{e}");
        assert!(e.to_string().contains("only be in the file name"), "{e}");
        let twice = asked.replace("bug-triage-{env}.jsonl", "{date}-bug-triage-{date}.jsonl");
        let e = ConsumerSpec::parse("bug-triage", "f", &twice, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.path", "{e}");
        let compressed = asked.replace("bug-triage-{env}.jsonl", "bug-triage-{env}.jsonl.zst");
        let e = ConsumerSpec::parse("bug-triage", "f", &compressed, &config).unwrap_err();
        assert_eq!(e.field, "sinks.archive.path", "{e}");
    }

    /// Two consumers may keep one archive (one writer, lines never mixed), but not with
    /// two ideas of which days to delete.
    #[test]
    fn consumers_sharing_an_archive_agree_on_its_days() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            consumers_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let shipped = |name: &str| BUILTIN.iter().find(|(n, _)| *n == name).unwrap().1;
        let keeping = |name: &str, days: u32| {
            format!(
                "{}\n[sinks.archive]\npath = \"archive/all-{{date}}.jsonl\"\nkeep_days = {days}\n",
                shipped(name)
            )
        };
        std::fs::write(dir.path().join("pushes.toml"), keeping("pushes", 7)).unwrap();
        std::fs::write(dir.path().join("landings.toml"), keeping("landings", 7)).unwrap();
        assert_eq!(load_all(&config).unwrap().len(), 2);

        std::fs::write(dir.path().join("landings.toml"), keeping("landings", 30)).unwrap();
        let e = load_all(&config).unwrap_err().to_string();
        assert!(
            e.contains("landings and pushes share the archive") && e.contains("keep_days"),
            "{e}"
        );

        // Nor with one compressing its past days and the other not.
        std::fs::write(
            dir.path().join("landings.toml"),
            keeping("landings", 7) + "compress = true\n",
        )
        .unwrap();
        let e = load_all(&config).unwrap_err().to_string();
        assert!(
            e.contains("share the archive") && e.contains("compress"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_field_is_named_with_the_file() {
        let config = Config::default();
        let text = r##"
            input = "hg-push"
            queue = "queue/{user}/x"
            kind = "push"
            prefech = 10
            bindings = [{ exchange = "e", keys = ["#"] }]
        "##;
        let e = ConsumerSpec::parse("x", "consumers/x.toml", text, &config).unwrap_err();
        assert_eq!(e.file, "consumers/x.toml");
        assert_eq!(e.field, "prefech");
    }

    #[test]
    fn a_queue_outside_the_user_namespace_is_refused() {
        let config = Config::default();
        let text = r##"
            input = "hg-push"
            queue = "pushes"
            kind = "push"
            bindings = [{ exchange = "e", keys = ["#"] }]
        "##;
        let e = ConsumerSpec::parse("x", "x.toml", text, &config).unwrap_err();
        assert_eq!(e.field, "queue");
    }
}
