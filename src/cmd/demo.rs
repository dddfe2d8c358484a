//! `bugflow demo`: the bundled sample stream through every consumer, in-process.
//!
//! Needs nothing running: no broker, no network. Each message of
//! `tests/fixtures/demo-stream.jsonl` (compiled into the binary) goes to the consumers whose
//! bindings match it, and the demo prints what it became — a result, a skip or a dead
//! letter, with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::archive::ArchiveLine;
use crate::clients::hg;
use crate::consumer::ConsumerSpec;
use crate::error::Action;
use crate::pipeline::Pipeline;
use crate::score::Score;

/// The sample stream: real hg.mozilla.org and BMO message shapes (see tests/fixtures/README.md).
pub const DEMO_STREAM: &str = include_str!("../../tests/fixtures/demo-stream.jsonl");

/// Counts of what the demo stream became.
#[derive(Debug, Default, PartialEq)]
pub struct DemoCounts {
    pub results: usize,
    pub skipped: usize,
    pub dead_lettered: usize,
    pub unrouted: usize,
}

/// json-pushes responses the demo's pushes are enriched from (no network needed).
pub fn bundled_hg() -> hg::Source {
    let mut responses = BTreeMap::new();
    responses.insert(
        "https://hg.mozilla.org/try/json-pushes?version=2&full=1&startID=136597&endID=136598"
            .to_owned(),
        include_str!("../../tests/fixtures/pulse/treeherder_hg_json_pushes_v2_full_response.json")
            .to_owned(),
    );
    let obsolescence =
        include_str!("../../tests/fixtures/pulse/vct_json_pushes_v2_full_obsolete_git_fields.json");
    for url in [
        "https://hg.mozilla.org/integration/autoland/json-pushes?version=2&full=1&startID=2&endID=3",
        "https://hg.mozilla.org/mozilla-central/json-pushes?version=2&full=1&startID=0&endID=1",
    ] {
        responses.insert(url.to_owned(), obsolescence.to_owned());
    }
    hg::Source::Bundled(Arc::new(responses))
}

/// Runs the demo, writing one paragraph per message to `out`.
pub async fn demo(
    pipelines: &[Pipeline],
    out: &mut dyn std::io::Write,
) -> std::io::Result<DemoCounts> {
    let specs: Vec<&ConsumerSpec> = pipelines.iter().map(Pipeline::spec).collect();
    let mut counts = DemoCounts::default();
    writeln!(
        out,
        "bugflow demo: {} messages through consumers {}\n",
        DEMO_STREAM.lines().filter(|l| !l.trim().is_empty()).count(),
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for (i, line) in DEMO_STREAM.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let message = match ArchiveLine::parse(line) {
            Ok(m) => m,
            Err(e) => {
                writeln!(
                    out,
                    "#{:<3} (unreadable line) → dead-lettered: {e}\n",
                    i + 1
                )?;
                counts.dead_lettered += 1;
                continue;
            }
        };
        writeln!(
            out,
            "#{:<3} {} [{}]",
            i + 1,
            message.exchange,
            message.routing_key
        )?;
        let mut routed = false;
        for pipeline in pipelines
            .iter()
            .filter(|p| p.spec().accepts(&message.exchange, &message.routing_key))
        {
            routed = true;
            show(pipeline, &message, &mut counts, out).await?;
        }
        if !routed {
            counts.unrouted += 1;
            writeln!(
                out,
                "     (no consumer binds this exchange and routing key)"
            )?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} results, {} skipped, {} dead-lettered, {} unrouted",
        counts.results, counts.skipped, counts.dead_lettered, counts.unrouted
    )?;
    Ok(counts)
}

/// What one consumer made of one message: its result with the predictions, the skip or
/// the dead letter with the reason.
async fn show(
    pipeline: &Pipeline,
    message: &crate::message::Message,
    counts: &mut DemoCounts,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let name = pipeline.name();
    match pipeline.process(message).await {
        Ok(results) => {
            for r in results {
                counts.results += 1;
                writeln!(out, "     {name:<11} → result {}", r.routing_key)?;
                writeln!(out, "                   {}", summarize(&r.data))?;
                for m in &r.models {
                    writeln!(out, "                   {}", describe_prediction(m))?;
                }
            }
        }
        Err(e) if e.action == Action::Skip => {
            counts.skipped += 1;
            writeln!(out, "     {name:<11} → skipped: {}", e.reason)?;
        }
        Err(e) => {
            counts.dead_lettered += 1;
            writeln!(
                out,
                "     {name:<11} → dead-lettered ({}): {}",
                e.stage, e.reason
            )?;
        }
    }
    Ok(())
}

/// `bugtype: defect (0.81)`, `commit-risk: push risk 0.12 …`, or why a model did not run.
fn describe_prediction(score: &Score) -> String {
    let name = score.model().name();
    match score {
        Score::Skipped(s) => format!("{name}: not scored ({})", s.skipped),
        Score::Push(p) => match p.push_risk {
            Some(risk) => format!(
                "{name}: push risk {risk:.3} over {} commits (riskiest {}) [{}]",
                p.scored_commits,
                p.riskiest
                    .as_deref()
                    .map(|n| &n[..12.min(n.len())])
                    .unwrap_or("-"),
                p.version
            ),
            None => format!("{name}: no changesets to score (all obsolete)"),
        },
        Score::Bug(b) => format!(
            "{name}: {} ({:.2}) [{}]",
            b.class,
            b.confidence(),
            b.version
        ),
        Score::Request(r) => format!("{name}: answered [{}]", r.version),
    }
}

/// A one-line digest of a result's data.
fn summarize(data: &serde_json::Value) -> String {
    let fields = [
        "repo",
        "push_id",
        "user",
        "bug_id",
        "event",
        "product",
        "component",
        "type",
        "summary",
    ];
    fields
        .iter()
        .filter_map(|f| {
            let v = data.get(*f)?;
            if v.is_null() {
                return None;
            }
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("{f}={shown}"))
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// `bugflow demo`: every consumer of the configuration, on the bundled stream, with the
/// bundled json-pushes answers (no network), printed to stdout.
pub async fn command(config: &crate::config::Config) -> anyhow::Result<()> {
    let models = crate::app::load_models(config)?;
    let hg = bundled_hg();
    let pipelines: Vec<_> = crate::consumer::load_all(config)?
        .into_iter()
        .map(|spec| Pipeline::new(spec, models.clone()).with_hg(hg.clone()))
        .collect();
    let mut out = Vec::new();
    demo(&pipelines, &mut out).await?;
    use std::io::Write;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
