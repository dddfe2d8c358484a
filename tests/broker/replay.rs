use std::collections::BTreeSet;
use std::io::Write;

use bugflow::archive::ArchiveLine;
use bugflow::cmd::replay::{ReplayOptions, replay};
use bugflow::config::Config;
use bugflow::consumer::{BUILTIN, ConsumerSpec};
use bugflow::message::Message;
use bugflow::models::registry::ModelSet;
use bugflow::pipeline::Pipeline;

use crate::common::push;

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

#[tokio::test]
async fn a_10000_message_archive_replays_with_a_correct_summary() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("stream.jsonl");
    let out = dir.path().join("results.jsonl");
    write_archive(&archive);

    let summary = replay(
        &shipped_consumers(),
        &ReplayOptions {
            files: vec![archive.clone()],
            consumer: None,
            out: Some(out.clone()),
            publish: false,
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
                consumer: None,
                out: Some(out.clone()),
                publish: false,
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
