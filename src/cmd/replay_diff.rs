//! `bugflow replay --from FILE… --bundle MODEL=VERSION…`: which decisions another bundle
//! would change on a recorded stream.
//!
//! Every archived message is planned twice, in-process and with nothing written: by the
//! consumers' pipelines with the serving bundles, and by the same pipelines with the named
//! bundles pinned in their place. For each model the diff counts the messages whose class
//! changed, per (serving class → other class) pair, keeps a few examples, and compares what
//! the Bugzilla writer's rules would have changed on each bug under either bundle (the
//! rules of `effects::rules` with the consumer's `[sinks.bugzilla]` thresholds and the
//! bug's history; the hourly budget and the bug-age guard are not applied). Lines go to the
//! consumers whose bindings accept them; `--consumer` keeps one of those.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::archive::ArchiveLine;
use crate::config::Config;
use crate::effects::{Effect, Planned, rules};
use crate::message::Message;
use crate::models::ModelKind;
use crate::models::registry::ModelSet;
use crate::pipeline::Pipeline;
use crate::score::Score;

/// How many examples each model's diff keeps.
const EXAMPLES: usize = 5;

/// How many class pairs it prints (the most frequent).
const PAIRS: usize = 12;

/// What one model's other bundle changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ModelDiff {
    pub from: String,
    pub to: String,
    /// Messages both bundles scored.
    pub scored: u64,
    /// …of which the class differs.
    pub changed: u64,
    /// (serving class, other class) → messages.
    pub pairs: BTreeMap<(String, String), u64>,
    /// `subject: class p → class p`.
    pub examples: Vec<String>,
}

/// The writer's decisions under either set of bundles.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriterDiff {
    /// Bugs the writer would change with the serving bundles, and with the others.
    pub before: u64,
    pub after: u64,
    /// Would write only with the others / only with the serving ones / both, differently.
    pub added: u64,
    pub dropped: u64,
    pub different: u64,
    /// `bug: {serving change} → {other change}`.
    pub examples: Vec<String>,
}

/// What a replay through other bundles changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Diff {
    pub read: u64,
    /// Messages both plans produced a result for.
    pub planned: u64,
    /// Messages either plan refused (skip, dead letter, retry), with why.
    pub not_planned: BTreeMap<String, u64>,
    pub models: BTreeMap<ModelKind, ModelDiff>,
    pub writer: WriterDiff,
}

/// One plan's result: each model's score, and the writer's change (if it would write).
struct Outcome {
    /// `bug 1629704`, `push integration/autoland/136598`.
    subject: String,
    scores: Vec<Score>,
    change: Option<Map<String, Value>>,
}

/// Plans `message` with `pipeline` and reads the writer's rules over what it planned.
async fn outcome(pipeline: &Pipeline, message: &Message) -> Result<Outcome, String> {
    let planned = pipeline.plan(message).await.map_err(|e| e.reason)?;
    let Planned::Publish {
        result, effects, ..
    } = planned
    else {
        return Err("nothing to publish (a private bug)".into());
    };
    let config = &pipeline.spec().outputs.bugzilla;
    let change = effects.iter().find_map(|e| match e {
        Effect::WriteBug { bug, scores, .. } => {
            let plan = rules::plan(bug, scores, config);
            (!plan.change.is_empty()).then_some(plan.change)
        }
        _ => None,
    });
    Ok(Outcome {
        subject: format!("{} {}", result.kind, result.subject),
        scores: result.models,
        change,
    })
}

/// A score as the diff shows it: `class 0.873`.
fn shown(score: &Score) -> Option<(String, String)> {
    match score {
        Score::Bug(s) => Some((
            s.class.clone(),
            format!(
                "{} {:.3}",
                s.class,
                s.prob.get(s.index).copied().unwrap_or(0.0)
            ),
        )),
        Score::Push(s) => {
            let class = s.class.clone()?;
            let risk = s.push_risk.unwrap_or(0.0);
            Some((class.clone(), format!("{class} {risk:.3}")))
        }
        _ => None,
    }
}

impl Diff {
    fn compare(&mut self, base: &Outcome, other: &Outcome) {
        let subject = &base.subject;
        for b in &base.scores {
            let Some(o) = other.scores.iter().find(|o| o.model() == b.model()) else {
                continue;
            };
            let (Some((bc, bs)), Some((oc, os))) = (shown(b), shown(o)) else {
                continue;
            };
            let d = self.models.entry(b.model()).or_default();
            d.from = b.version().unwrap_or_default().to_owned();
            d.to = o.version().unwrap_or_default().to_owned();
            if d.from == d.to {
                continue;
            }
            d.scored += 1;
            if bc != oc {
                d.changed += 1;
                *d.pairs.entry((bc, oc)).or_default() += 1;
                if d.examples.len() < EXAMPLES {
                    d.examples.push(format!("{subject}: {bs} → {os}"));
                }
            }
        }
        let w = &mut self.writer;
        w.before += u64::from(base.change.is_some());
        w.after += u64::from(other.change.is_some());
        let differs = match (&base.change, &other.change) {
            (None, Some(_)) => {
                w.added += 1;
                true
            }
            (Some(_), None) => {
                w.dropped += 1;
                true
            }
            (Some(a), Some(b)) if a != b => {
                w.different += 1;
                true
            }
            _ => false,
        };
        if differs && w.examples.len() < EXAMPLES {
            let show = |c: &Option<Map<String, Value>>| match c {
                Some(c) => Value::Object(c.clone()).to_string(),
                None => "nothing".into(),
            };
            w.examples.push(format!(
                "{subject}: {} → {}",
                show(&base.change),
                show(&other.change)
            ));
        }
    }

    pub fn print(&self) {
        println!(
            "replay diff: {} messages read, {} planned by both",
            self.read, self.planned
        );
        for (reason, n) in &self.not_planned {
            println!("  not planned {n:>6}  {reason}");
        }
        for (model, d) in &self.models {
            if d.from == d.to {
                println!("{model}: {} on both sides: nothing to compare", d.from);
                continue;
            }
            let share = 100.0 * d.changed as f64 / d.scored.max(1) as f64;
            println!(
                "{model}: {} → {}: {} of {} decisions change ({share:.1}%)",
                d.from, d.to, d.changed, d.scored
            );
            let mut pairs: Vec<(&(String, String), &u64)> = d.pairs.iter().collect();
            pairs.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
            for ((a, b), n) in pairs.iter().take(PAIRS) {
                println!("  {n:>6}  {a} → {b}");
            }
            if pairs.len() > PAIRS {
                let rest: u64 = pairs[PAIRS..].iter().map(|(_, n)| **n).sum();
                println!("  {rest:>6}  in {} other class pairs", pairs.len() - PAIRS);
            }
            for e in &d.examples {
                println!("    e.g. {e}");
            }
        }
        let w = &self.writer;
        println!(
            "writer (its rules and thresholds; no budget or age guard): would change {} bugs with the serving bundles, {} with these",
            w.before, w.after
        );
        println!(
            "  {} newly written, {} no longer written, {} written differently",
            w.added, w.dropped, w.different
        );
        for e in &w.examples {
            println!("    e.g. {e}");
        }
    }
}

/// Runs `files` through `base` and `other` (the same consumers, other bundles), pairwise.
pub async fn diff(
    base: &[Pipeline],
    other: &[Pipeline],
    files: &[PathBuf],
    consumer: Option<&str>,
) -> anyhow::Result<Diff> {
    let mut diff = Diff::default();
    for file in files {
        let mut lines = crate::archive::lines(file).await?;
        while let Some(line) = lines.next_line().await? {
            if line.trim().is_empty() {
                continue;
            }
            diff.read += 1;
            let mut message = match ArchiveLine::parse(&line) {
                Ok(m) => m,
                Err(e) => {
                    *diff
                        .not_planned
                        .entry(format!("unreadable line: {e}"))
                        .or_default() += 1;
                    continue;
                }
            };
            for (b, o) in base.iter().zip(other) {
                // `--consumer` picks one of the consumers; its bindings still choose the
                // lines (a diff of decisions, not of decode errors).
                let routed = consumer.is_none_or(|name| b.name() == name)
                    && b.spec().accepts(&message.exchange, &message.routing_key);
                if !routed {
                    continue;
                }
                // Fetched once, for both plans (an offline pipeline fetches nothing).
                if message.enrichment.is_none() {
                    match b.enrichment(&message).await {
                        Ok(e) if !e.is_empty() => message.enrichment = Some(Arc::new(e)),
                        Ok(_) => {}
                        Err(e) => {
                            let short: String = e.reason.chars().take(80).collect();
                            *diff.not_planned.entry(short).or_default() += 1;
                            continue;
                        }
                    }
                }
                match (outcome(b, &message).await, outcome(o, &message).await) {
                    (Ok(x), Ok(y)) => {
                        diff.planned += 1;
                        diff.compare(&x, &y);
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        let short: String = e.chars().take(80).collect();
                        *diff.not_planned.entry(short).or_default() += 1;
                    }
                }
            }
        }
    }
    Ok(diff)
}

/// `bugflow replay --bundle MODEL=VERSION…`: the diff between the serving bundles and these.
pub async fn command(
    config: Config,
    files: &[PathBuf],
    consumer: Option<&str>,
    offline: bool,
    bundles: &[(ModelKind, String)],
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let base = super::replay::configured_pipelines(config.clone())?;
    let pinned: BTreeMap<ModelKind, String> = bundles.iter().cloned().collect();
    let serving = base
        .first()
        .map(|p| p.models().clone())
        .unwrap_or_else(ModelSet::empty);
    let other_models = serving.with_pinned(pinned)?;
    let offline_if = |p: Pipeline| if offline { p.offline() } else { p };
    let other: Vec<Pipeline> = base
        .iter()
        .map(|p| offline_if(p.clone().with_models(other_models.clone())))
        .collect();
    let base: Vec<Pipeline> = base.into_iter().map(offline_if).collect();
    if let Some(name) = consumer {
        anyhow::ensure!(
            base.iter().any(|p| p.name() == name),
            "no consumer {name:?}"
        );
    }
    diff(&base, &other, files, consumer).await?.print();
    Ok(())
}

/// Parses `MODEL=VERSION`.
pub fn parse_bundle(text: &str) -> Result<(ModelKind, String), String> {
    let (model, version) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected MODEL=VERSION"))?;
    Ok((model.parse()?, version.to_owned()))
}
