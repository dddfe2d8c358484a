use std::collections::BTreeSet;
use std::io::Write;

use bugflow::archive::ArchiveLine;
use bugflow::cmd::replay::{ReplayOptions, replay};
use bugflow::config::Config;
use bugflow::consumer::{BUILTIN, ConsumerSpec};
use bugflow::message::{Enrichment, Message};
use bugflow::models::registry::ModelSet;
use bugflow::pipeline::Pipeline;

use crate::common::{json_pushes_for, push};

/// The shipped consumers, without models or hg (replay needs no network).
fn shipped_consumers() -> Vec<Pipeline> {
    let config = Config::default();
    BUILTIN
        .iter()
        .map(|(name, text)| {
            Pipeline::new(
                ConsumerSpec::parse(name, name, text, &config).unwrap(),
                ModelSet::empty(),
            )
        })
        .collect()
}

/// 10,000 lines: 7,000 pushes, 1,000 by a skipped bot, 500 newrepo.1, 500 lines that are not
/// JSON, 500 pushes with a bad head, 500 messages on an exchange nobody binds.
fn write_archive(path: &std::path::Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let line = |exchange: &str, key: &str, body: Vec<u8>| {
        ArchiveLine::from_message(&Message::new(exchange, key, body)).to_line()
    };
    let v2 = "exchange/hgpushes/v2";
    for i in 0..10_000u64 {
        let text = match i % 20 {
            0..=13 => line(v2, "integration/autoland", push("integration/autoland", i, "dev@mozilla.com")),
            14 | 15 => line(v2, "try", push("try", i, "reviewbot")),
            16 => line(
                v2,
                "mozilla-central",
                br#"{"payload": {"type": "newrepo.1", "data": {"repo_url": "https://hg.mozilla.org/mozilla-central"}}}"#.to_vec(),
            ),
            17 => format!("{{\"exchange\": \"{v2}\", \"routing_key\": \"try\", truncated"),
            18 => line(
                v2,
                "try",
                br#"{"payload": {"repo_url": "https://hg.mozilla.org/try", "heads": ["0"], "pushlog_pushes": []}}"#.to_vec(),
            ),
            _ => line("exchange/hgpushes/v1", "try", push("try", i, "dev@mozilla.com")),
        };
        writeln!(file, "{text}").unwrap();
    }
}

// Two workers: a replay processes each batch on every core and must still write its
// results in the archive's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10000_message_archive_replays_with_a_correct_summary() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("stream.jsonl");
    let out = dir.path().join("results.jsonl");
    write_archive(&archive);

    let summary = replay(
        &shipped_consumers(),
        &ReplayOptions {
            files: vec![archive.clone()],
            out: Some(out.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.read, 10_000);
    assert_eq!(summary.results, 7_000);
    assert_eq!(summary.skipped, 1_500);
    assert_eq!(summary.dead_lettered, 1_000);
    assert_eq!(summary.unrouted, 500);
    assert_eq!(
        summary.results + summary.skipped + summary.dead_lettered + summary.unrouted,
        summary.read,
        "every line is accounted for"
    );

    let lines = std::fs::read_to_string(&out).unwrap();
    let pushes: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["push_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        pushes.windows(2).all(|w| w[0] < w[1]),
        "results leave in the order the archive holds them"
    );
    let ids: BTreeSet<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        ids.len(),
        7_000,
        "one result per push, each with its own id"
    );

    // The same archive through the command line prints the same counts.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_bugflow"))
        .args(["replay", "--from"])
        .arg(&archive)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(cli.status.success());
    let text = String::from_utf8_lossy(&cli.stderr);
    for expected in [
        "messages read        10000",
        "results               7000",
        "skipped               1500",
        "dead-lettered         1000",
        "unrouted               500",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("msg/s"));
}

#[tokio::test]
async fn a_replay_is_deterministic_in_its_message_ids() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.jsonl");
    std::fs::write(
        &archive,
        ArchiveLine::from_message(&Message::new(
            "exchange/hgpushes/v2",
            "try",
            push("try", 9, "a@b.c"),
        ))
        .to_line(),
    )
    .unwrap();
    let mut ids = Vec::new();
    for run in 0..2 {
        let out = dir.path().join(format!("out{run}.jsonl"));
        replay(
            &shipped_consumers(),
            &ReplayOptions {
                files: vec![archive.clone()],
                out: Some(out.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(out).unwrap().trim()).unwrap();
        ids.push(v["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
}

/// An offline replay of `archive` through `pipelines`, results appended to `out`.
pub async fn replay_offline(
    pipelines: &[Pipeline],
    archive: std::path::PathBuf,
    out: &std::path::Path,
) -> bugflow::cmd::replay::Summary {
    replay(
        pipelines,
        &ReplayOptions {
            files: vec![archive],
            out: Some(out.to_path_buf()),
            offline: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Asserts that one of `summary`'s reasons contains `needle`.
fn assert_a_reason(summary: &bugflow::cmd::replay::Summary, needle: &str) {
    assert!(
        summary.reasons.keys().any(|r| r.contains(needle)),
        "no reason contains {needle:?}: {:?}",
        summary.reasons
    );
}

/// The shipped consumers with the shipped models, and an hg source that may fetch from no
/// host at all: a fetch would fail (a skip or a dead letter, not a result).
fn consumers_that_must_not_fetch() -> Vec<Pipeline> {
    let config = Config::default();
    let models = ModelSet::load(bugflow::models::registry::Registry::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models"
    )))
    .unwrap();
    let hg = bugflow::clients::hg::Source::Http(
        bugflow::clients::hg::HttpHg::new(Vec::new(), std::time::Duration::from_secs(1), 1)
            .unwrap(),
    );
    BUILTIN
        .iter()
        .map(|(name, text)| {
            Pipeline::new(
                ConsumerSpec::parse(name, name, text, &config).unwrap(),
                models.clone(),
            )
            .with_hg(hg.clone())
        })
        .collect()
}

/// Issue 14: a replay of archived pushes with their json-pushes answers stored scores every
/// push from the archive and never touches the network; a push stored without its answer is
/// counted as a skip with the reason, not fetched. (Before: every push was fetched again,
/// and without network each one was dead-lettered after the fetch's retries.)
#[tokio::test]
async fn an_offline_replay_scores_every_push_from_its_stored_answer_and_fetches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("pushes.jsonl");
    let out = dir.path().join("results.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&archive).unwrap());
    for i in 1..=1_010u64 {
        let mut message = Message::new(
            "exchange/hgpushes/v2",
            "integration/autoland",
            push("integration/autoland", i, "dev@mozilla.com"),
        );
        if i <= 1_000 {
            let url = format!(
                "https://hg.mozilla.org/integration/autoland/json-pushes?version=2&full=1&startID={}&endID={i}",
                i - 1
            );
            let mut enrichment = bugflow::message::Enrichment::default();
            enrichment.json_pushes.insert(url, json_pushes_for(i));
            message.enrichment = Some(std::sync::Arc::new(enrichment));
        }
        writeln!(file, "{}", ArchiveLine::from_message(&message).to_line()).unwrap();
    }
    drop(file);

    let started = std::time::Instant::now();
    let summary = replay_offline(&consumers_that_must_not_fetch(), archive.clone(), &out).await;
    assert_eq!(summary.read, 1_010);
    assert_eq!(summary.results, 1_000, "{summary:?}");
    assert_eq!(summary.skipped, 10, "{summary:?}");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_a_reason(&summary, "offline: no stored json-pushes answer");
    // Nothing waited on a network call (each would take seconds of retries).
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let results = std::fs::read_to_string(&out).unwrap();
    for line in results.lines() {
        let result: serde_json::Value = serde_json::from_str(line).unwrap();
        let risk = &result["models"][0];
        assert_eq!(risk["model"], "commit-risk", "{result}");
        assert_eq!(risk["scored_commits"], 2, "{result}");
    }

    // The same archive compressed (`zstd` of a past day's file): the same results.
    let compressed = dir.path().join("pushes.jsonl.zst");
    let plain = std::fs::File::open(&archive).unwrap();
    let zst = ruzstd::encoding::compress_to_vec(plain, ruzstd::encoding::CompressionLevel::Fastest);
    std::fs::write(&compressed, zst).unwrap();
    let again = dir.path().join("again.jsonl");
    let summary = replay_offline(&consumers_that_must_not_fetch(), compressed, &again).await;
    assert_eq!(
        (summary.read, summary.results, summary.skipped),
        (1_010, 1_000, 10)
    );
    let without_times = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
                r.as_object_mut().unwrap().remove("produced_at");
                r
            })
            .collect()
    };
    assert_eq!(
        without_times(&std::fs::read_to_string(&again).unwrap()),
        without_times(&results)
    );
}

/// Issue 14: the `api-requests` consumer's stream replays like the others. Each request's
/// bugs (or, for a push-risk request, its `json-pushes?changeset=` answer) are stored with
/// it, as `record --enrich` keeps them; an offline replay answers every request from them
/// with the serving models and fetches nothing, and a request stored without them is a skip
/// with its reason. (Before: a replay has no store, and every request was dead-lettered
/// with "prediction requests need the store (bugflow run)", stored bugs or not.)
#[tokio::test]
async fn an_offline_replay_answers_every_prediction_request_from_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, out) = (
        dir.path().join("requests.jsonl"),
        dir.path().join("results.jsonl"),
    );
    let pipelines = consumers_that_must_not_fetch();
    let api = pipelines
        .iter()
        .find(|p| p.name() == "api-requests")
        .unwrap();
    let exchange = api.spec().bindings[0].exchange.clone();
    let bugs: Vec<serde_json::Value> = include_str!("../fixtures/data/bugs.jsonl")
        .lines()
        .take(40)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let models = ["bugtype", "component", "spam", "regression"];
    let request = |body: serde_json::Value, key: &str, stored: Option<Enrichment>| {
        let mut m = Message::new(&exchange, key, serde_json::to_vec(&body).unwrap());
        m.enrichment = stored.map(std::sync::Arc::new);
        ArchiveLine::from_message(&m).to_line()
    };
    let stored_bugs = |bugs: Vec<serde_json::Value>| Enrichment {
        bugs: Some(bugs),
        ..Default::default()
    };
    let mut lines = Vec::new();
    for (i, bug) in bugs.iter().enumerate() {
        let model = models[i % models.len()];
        let body = serde_json::json!({"request": "bugs", "model": model, "bugs": [bug["id"]]});
        lines.push(request(
            body,
            &format!("predict.{model}"),
            Some(stored_bugs(vec![bug.clone()])),
        ));
    }
    // A bug Bugzilla showed as private (kept as its id alone), and one it did not show.
    let body = serde_json::json!({"request": "bugs", "model": "bugtype", "bugs": [7, 8]});
    let private = serde_json::json!({"id": 7, "is_private": true});
    lines.push(request(
        body,
        "predict.bugtype",
        Some(stored_bugs(vec![private])),
    ));
    // A push-risk request with its changeset answer.
    let (branch, rev) = ("integration/autoland", "5fb1d9a0e1ce");
    let mut answer = Enrichment::default();
    answer.json_pushes.insert(
        bugflow::clients::hg::changeset_url("https://hg.mozilla.org", branch, rev),
        json_pushes_for(4711),
    );
    let body = serde_json::json!({"request": "push-risk", "branch": branch, "rev": rev});
    lines.push(request(body, "push.risk", Some(answer)));
    // Three requests recorded without what they need.
    for id in [1, 2, 3] {
        let body = serde_json::json!({"request": "bugs", "model": "bugtype", "bugs": [id]});
        lines.push(request(body, "predict.bugtype", None));
    }
    std::fs::write(&archive, lines.join("\n") + "\n").unwrap();

    let summary = replay_offline(&pipelines, archive, &out).await;
    assert_eq!(summary.read, 45, "{summary:?}");
    assert_eq!((summary.results, summary.skipped), (42, 3), "{summary:?}");
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    assert_a_reason(&summary, "offline: no stored bugs");
    let results: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut answered = BTreeSet::new();
    for (i, bug) in bugs.iter().enumerate() {
        let model = models[i % models.len()];
        let result = results
            .iter()
            .find(|r| r["subject"] == format!("{model}.{}", bug["id"]))
            .unwrap_or_else(|| panic!("no answer of {model} on bug {}", bug["id"]));
        // The answer is the serving model's on the stored bug, read in full; a bundle that
        // gives none (the shipped spam bundle is untrained) is an unavailable answer with
        // its reason, not a class of null counted as available.
        let expected = api
            .score_bug(bug)
            .into_iter()
            .find(|s| s.model().name() == model)
            .unwrap();
        let answer = &result["data"]["answers"][0];
        match expected.as_bug() {
            Some(expected) => {
                assert_eq!(result["data"]["available"], 1, "{result}");
                // bugbug's form of the class (a binary model's is 0 or 1).
                assert_eq!(
                    answer["class"],
                    expected.bugbug_answer()["class"],
                    "{result}"
                );
            }
            None => {
                assert_eq!(result["data"]["available"], 0, "{result}");
                assert_eq!(answer["available"], false, "{result}");
                assert!(answer["reason"].is_string(), "{result}");
                assert!(answer.get("class").is_none(), "{result}");
            }
        }
        answered.insert(expected.as_bug().is_some());
    }
    assert_eq!(
        answered.len(),
        2,
        "an answer and a bundle that gives none were both checked"
    );
    let unshown = results
        .iter()
        .find(|r| r["subject"] == "bugtype.7")
        .unwrap();
    assert_eq!(unshown["data"]["available"], 0, "{unshown}");
    assert_eq!(
        unshown["data"]["answers"],
        serde_json::json!([{"bug_id": 8, "available": false}]),
        "the private bug is not listed: {unshown}"
    );
    let push = results
        .iter()
        .find(|r| r["kind"] == "prediction" && r["data"]["rev"] == rev);
    let push = push.expect("the push-risk answer");
    assert_eq!(push["models"][0]["scored_commits"], 2, "{push}");
    assert_eq!(push["data"]["push_id"], 4711, "{push}");
}
