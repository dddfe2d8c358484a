//! The fuzz targets' seeds and every input a fuzzer ever found a crash with
//! (`fuzz/regressions/<target>/`), run through the same calls as the fuzz targets in
//! `fuzz/fuzz_targets/`: none may panic. The fuzzers themselves run with `fuzz/run-all`.

use std::path::Path;

use bugflow::archive::ArchiveLine;
use bugflow::config::Config;
use bugflow::consumer::ConsumerSpec;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn each(target: &str, at_least: usize, check: impl Fn(&[u8])) {
    let all = inputs(target);
    assert!(all.len() >= at_least, "{target}: {} inputs", all.len());
    for (name, data) in all {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(result.is_ok(), "{target}: {name} panics");
        // Truncations of a valid input are the classic crashers: try them all.
        for cut in 0..data.len() {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data[..cut])));
            assert!(result.is_ok(), "{target}: {name} cut at {cut} panics");
        }
    }
}

#[test]
fn hgpush() {
    each("hgpush", 5, |data| {
        if let Ok(event) = bugflow::events::hgpush::decode(data) {
            let _ = event.kind();
        }
    });
}

#[test]
fn bmo_webhook() {
    each("bmo_webhook", 4, |data| {
        if let Ok(event) = bugflow::events::bmo::decode(data) {
            let _ = bugflow::features::bug::extract_all(&event.bug.to_rest());
        }
    });
}

#[test]
fn simple_bug() {
    each("simple_bug", 2, |data| {
        let _ = bugflow::events::simple::decode(data);
    });
}

#[test]
fn prediction_request() {
    each("prediction_request", 2, |data| {
        let _ = bugflow::events::request::decode(data);
    });
}

#[test]
fn archive_line() {
    each("archive_line", 2, |data| {
        if let Ok(line) = std::str::from_utf8(data)
            && let Ok(message) = ArchiveLine::parse(line)
        {
            // Recorded again, the body is the same JSON (a line's body is replayed as the
            // text it holds, and recorded as a tree: the same values), or the same bytes.
            let again = ArchiveLine::from_message(&message).to_line();
            let again = ArchiveLine::parse(&again).unwrap().body;
            match serde_json::from_slice::<serde_json::Value>(&message.body) {
                Ok(json) => assert_eq!(serde_json::from_slice(&again).ok(), Some(json)),
                Err(_) => assert_eq!(again, message.body),
            }
        }
    });
}

#[test]
fn config() {
    each("config", 3, |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let config = Config::from_toml_str(text).unwrap_or_default();
            let _ = ConsumerSpec::parse("fuzz", "fuzz.toml", text, &config);
        }
    });
}

/// The whole-path target's seeds (whole inputs only: each runs the pipeline with models).
#[tokio::test]
async fn whole_path() {
    let config = Config::default();
    let models = bugflow::models::registry::ModelSet::load(
        bugflow::models::registry::Registry::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    )
    .unwrap();
    let mut pipelines = Vec::new();
    for (name, text) in bugflow::consumer::BUILTIN {
        let spec = ConsumerSpec::parse(name, name, text, &config).unwrap();
        for binding in &spec.bindings {
            let pipeline = bugflow::pipeline::Pipeline::new(spec.clone(), models.clone());
            pipelines.push((binding.exchange.clone(), pipeline));
        }
    }
    let all = inputs("whole_path");
    assert!(all.len() >= 50, "{} inputs", all.len());
    let mut results = 0;
    for (name, data) in all {
        let Some((&pick, rest)) = data.split_first() else {
            continue;
        };
        let (key, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&b"bug.modify"[..], rest),
        };
        let (exchange, pipeline) = &pipelines[usize::from(pick) % pipelines.len()];
        let message = bugflow::message::Message::new(
            exchange.as_str(),
            String::from_utf8_lossy(key),
            body.to_vec(),
        );
        match pipeline.process(&message).await {
            Ok(found) => {
                for result in found {
                    results += 1;
                    let bytes = serde_json::to_vec(&result).unwrap();
                    let back: bugflow::result::ResultMessage =
                        serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(back.message_id, result.message_id, "{name}");
                    bugflow::pulse::short::checked(&result.routing_key, "key").unwrap();
                }
            }
            Err(e) => assert!(e.reason.len() <= bugflow::error::MAX_REASON, "{name}"),
        }
    }
    assert!(results > 0, "some seeds make results");
}
