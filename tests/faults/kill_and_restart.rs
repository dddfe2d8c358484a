//! `kill -9` of a running `bugflow run` mid-stream, then a restart: every event has its
//! result, no bug is written twice, nothing is dead-lettered.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bugflow::consumer::{BUILTIN, ConsumerSpec};

use crate::common::TestBroker;
use crate::fake_bugzilla::{FakeBugzilla, event};

const EVENTS: u64 = 5_000;

/// bug-triage as shipped, with the fault tests' type writer (the shipped claim lease: a
/// killed process's claims are taken over once not renewed for 30 s) as its
/// `[sinks.bugzilla]`.
fn consumer_file() -> String {
    let text = BUILTIN.iter().find(|(n, _)| *n == "bug-triage").unwrap().1;
    let head = &text[..text
        .find("[sinks.bugzilla]")
        .expect("bug-triage.toml has [sinks.bugzilla]")];
    let writer = toml::to_string(&crate::type_writer()).unwrap();
    format!(
        "{head}[sinks.bugzilla]\n{writer}\n[sinks.archive]\npath = \"{ARCHIVE}/bug-triage-{{date}}.jsonl\"\nkeep_days = 7\n"
    )
}

/// Where the consumer keeps each event with the full bug it fetched (`[sinks.archive]`): a
/// file a day (one, unless the test runs over midnight UTC), each locked by the process
/// writing it (the restarted one takes it over from the killed one).
const ARCHIVE: &str = "archive";

/// The archive's files, in the order of their days.
fn archive_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join(ARCHIVE))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let today = chrono::Utc::now()
        .format("bug-triage-%Y-%m-%d.jsonl")
        .to_string();
    assert!(
        files.iter().any(|f| f.ends_with(&today)),
        "today's file is among {files:?}"
    );
    files
}

/// A `bugflow run` child that is killed when dropped: a failing assertion must not leave it
/// running (it would declare the test's queues again after their clean-up).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(dir: &std::path::Path, broker: &TestBroker, bugzilla: &FakeBugzilla) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bugflow"));
    cmd.current_dir(dir)
        .args(["run", "--consumer", "bug-triage", "--no-http"])
        .env("BUGFLOW_USER", &broker.config.user)
        .env("BUGFLOW_ENV", &broker.config.env)
        .env("BUGFLOW_AMQP__URL", broker.config.amqp.url.expose())
        .env("BUGFLOW_AMQP__DECLARE_EXCHANGES", "false")
        .env("BUGFLOW_CONSUMERS_DIR", dir.join("consumers"))
        .env("BUGFLOW_STORE", dir.join("store.sqlite"))
        .env(
            "BUGFLOW_MODELS_DIR",
            crate::common::models_dir_without_writer_thresholds(),
        )
        .env("BUGFLOW_BUGZILLA__URL", &bugzilla.base)
        .env("BUGFLOW_BUGZILLA__API_KEY", "fault-test-key")
        .env("BUGFLOW_HG__ENABLED", "false")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Running(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing_and_writes_once() {
    let _serial = crate::SERIAL.lock().await;
    let mut broker = TestBroker::new().await;
    let bugzilla = FakeBugzilla::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("consumers")).unwrap();
    let text = consumer_file();
    std::fs::write(dir.path().join("consumers/bug-triage.toml"), &text).unwrap();
    let spec = ConsumerSpec::parse("bug-triage", "bug-triage.toml", &text, &broker.config).unwrap();
    broker.declare(&spec).await;
    let results = broker.results_queue().await;
    let exchange = broker.config.bugzilla_exchange();
    for id in 1..=EVENTS {
        broker
            .publish(&exchange, "bug.modify:priority", &event(id))
            .await;
    }

    let started = Instant::now();
    let mut first = start(dir.path(), &broker, &bugzilla);
    loop {
        let (_, written) = bugzilla.writes();
        if written as u64 >= EVENTS / 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {written} writes"
        );
        assert!(
            first.0.try_wait().unwrap().is_none(),
            "bugflow exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let (_, at_kill) = bugzilla.writes();
    let killed_at = started.elapsed();

    let mut second = start(dir.path(), &broker, &bugzilla);
    let (subjects, mut results_seen) = crate::result_subjects(
        &broker,
        &results,
        EVENTS,
        Duration::from_secs(240).saturating_sub(started.elapsed()),
        || {
            assert!(
                second.0.try_wait().unwrap().is_none(),
                "the restarted bugflow exited"
            )
        },
    )
    .await;
    let elapsed = started.elapsed();
    // SIGTERM: the restarted process drains and stops cleanly.
    unsafe { libc::kill(second.0.id() as i32, libc::SIGTERM) };
    let status = second.0.wait().unwrap();
    results_seen += broker
        .take(&results, 20_000, Duration::from_millis(500))
        .await
        .len();

    let (twice, written) = bugzilla.writes();
    let dead = broker.ready(&broker.config.dead_letter_queue()).await;
    eprintln!(
        "kill_and_restart: {EVENTS} events; kill -9 after {:.1} s with {at_kill} bugs written; \
         all done {:.1} s after the start; {results_seen} results for {} bugs, {written} bugs \
         written, {} written twice, {dead} dead letters; the second process exited with {status}",
        killed_at.as_secs_f64(),
        elapsed.as_secs_f64(),
        subjects.len(),
        twice.len(),
    );
    assert!(
        status.success(),
        "SIGTERM should end bugflow cleanly: {status}"
    );
    assert_eq!(subjects.len() as u64, EVENTS);
    assert!(twice.is_empty(), "bugs written twice: {twice:?}");
    assert_eq!(written as u64, EVENTS);
    assert_eq!(dead, 0);
    assert_eq!(broker.ready(&spec.queue).await, 0);
    broker.cleanup().await;
    the_archive_replays_offline_to_every_result(dir.path(), &subjects);
}

/// The archive both processes kept: every event once, with the full bug fetched for it (an
/// event between its line and its ack at the kill, redelivered to the restarted process, is
/// not kept again; a line the kill cut short stays alone and unreadable, its event kept
/// when it comes again), and its replay with no network gives a result for every bug.
fn the_archive_replays_offline_to_every_result(dir: &std::path::Path, subjects: &BTreeSet<String>) {
    let files = archive_files(dir);
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut kept = BTreeSet::new();
    let mut lines = 0;
    let mut cut = 0;
    for line in texts.iter().flat_map(|t| t.lines()) {
        let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else {
            cut += 1;
            continue;
        };
        let bug = &line["enrichment"]["bug"];
        assert_eq!(
            bug["id"], line["body"]["bug"]["id"],
            "kept with its own bug"
        );
        assert!(bug["comments"].is_array(), "the full bug: {bug}");
        kept.insert(bug["id"].to_string());
        lines += 1;
    }
    eprintln!(
        "kill_and_restart: the archive holds {lines} lines for {} events, {cut} cut short",
        kept.len()
    );
    assert!(cut <= 1, "{cut} lines unreadable");
    assert_eq!(&kept, subjects, "every event kept with its bug");
    assert_eq!(lines, kept.len(), "no event kept twice");

    let out = dir.join("replayed.jsonl");
    let replay = Command::new(env!("CARGO_BIN_EXE_bugflow"))
        .current_dir(dir)
        .args(["replay", "--offline", "--consumer", "bug-triage", "--out"])
        .arg(&out)
        .arg("--from")
        .args(&files)
        .env("BUGFLOW_CONSUMERS_DIR", dir.join("consumers"))
        .env(
            "BUGFLOW_MODELS_DIR",
            crate::common::models_dir_without_writer_thresholds(),
        )
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: BTreeSet<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["subject"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        &replayed, subjects,
        "a result for every bug, from the archive alone"
    );
}
