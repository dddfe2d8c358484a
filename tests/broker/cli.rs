//! The binary as a user runs it.

use std::process::Command;

fn bugflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bugflow"));
    // Outside the checkout: no config/bugflow.toml, no consumers/ (the built-ins are used).
    cmd.current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn the_demo_runs_with_nothing_else_running() {
    // From the checkout, as the README runs it: the shipped models in models/ serve.
    let out = bugflow()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("demo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("→ result pushes.push.integration/autoland/3"),
        "{text}"
    );
    assert!(text.contains("commit-risk: push risk"), "{text}");
    for model in ["bugtype: ", "component: ", "spam: ", "regression: "] {
        assert!(text.contains(model), "no {model} prediction in:\n{text}");
    }
    assert!(!text.contains("no serving bundle"), "{text}");
    assert!(text.contains("→ result bug-triage.bug.1629704"), "{text}");
    assert!(text.contains("skipped: bug 2 is private"), "{text}");
    assert!(
        text.contains("7 results, 5 skipped, 3 dead-lettered, 1 unrouted"),
        "{text}"
    );
}

#[test]
fn the_demo_without_models_says_why_nothing_is_scored() {
    let out = bugflow().arg("demo").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bugtype: not scored (no serving bundle)"),
        "{text}"
    );
    assert!(
        text.contains("7 results, 5 skipped, 3 dead-lettered, 1 unrouted"),
        "{text}"
    );
}

#[test]
fn a_bad_config_names_the_field_and_hides_the_password() {
    let out = bugflow()
        .arg("consumers")
        .env(
            "BUGFLOW_AMQP__URL",
            "amqps://bot:hunter2@pulse.mozilla.org:5671/",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("amqp.url"), "{text}");
    assert!(text.contains("empty vhost"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
}

#[test]
fn a_bad_consumer_file_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("consumers")).unwrap();
    std::fs::write(
        dir.path().join("consumers/pushes.toml"),
        "input = \"hg-push\"\nqueue = \"queue/{user}/x\"\nkind = \"push\"\nprefetch = 0\nbindings = [{ exchange = \"e\", keys = [\"#\"] }]\n",
    )
    .unwrap();
    let out = bugflow()
        .current_dir(dir.path())
        .arg("consumers")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("consumers/pushes.toml"), "{text}");
    assert!(text.contains("prefetch"), "{text}");
}

#[test]
fn an_unknown_consumer_name_lists_the_known_ones() {
    let out = bugflow()
        .args(["run", "--consumer", "nope", "--no-http"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no consumer \"nope\""), "{text}");
    assert!(text.contains("bug-triage"), "{text}");
}

#[test]
fn a_consumer_whose_needs_are_not_configured_stops_start_up_naming_both() {
    // landings scores commits, which need hg.mozilla.org: refused before anything runs
    // (before this check, every push was published unscored).
    let out = bugflow()
        .args(["run", "--consumer", "landings", "--no-http"])
        .env("BUGFLOW_HG__ENABLED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("consumer landings"), "{text}");
    assert!(text.contains("hg.enabled"), "{text}");
}

#[test]
fn version_names_the_code_and_the_serving_bundles() {
    let out = bugflow()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("bugflow {} (git ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let registry =
        bugflow::models::registry::Registry::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    for model in bugflow::models::ModelKind::all() {
        let serving = registry.current(model).unwrap().unwrap();
        assert!(
            text.contains(&format!(
                "{:<12} {}",
                model.name(),
                serving.manifest.version
            )),
            "{model} {} missing from:\n{text}",
            serving.manifest.version
        );
    }

    // Outside the checkout: no models folder, said so.
    let out = bugflow().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("models: none"));
}

/// Issue 16: `replay --bundle MODEL=VERSION` plans the demo stream with an earlier bugtype
/// and component bundle beside the serving ones and prints what changes.
#[test]
fn a_replay_through_other_bundles_prints_which_decisions_change() {
    let history = |model: &str| -> serde_json::Value {
        let path = format!("{}/models/{model}/history.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let mut args = vec![
        "replay".to_owned(),
        "--from".into(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/demo-stream.jsonl"
        )
        .into(),
        "--consumer".into(),
        "bug-triage".into(),
    ];
    let mut expected = Vec::new();
    for model in ["bugtype", "component"] {
        let h = history(model);
        let promoted = h["promoted"].as_array().unwrap();
        let earlier = promoted[promoted.len() - 2].as_str().unwrap();
        args.push("--bundle".into());
        args.push(format!("{model}={earlier}"));
        expected.push(format!(
            "{model}: {} → {earlier}: ",
            h["current"].as_str().unwrap()
        ));
    }
    // From the checkout: the shipped models in models/.
    let here = env!("CARGO_MANIFEST_DIR");
    let out = bugflow().current_dir(here).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("replay diff: 16 messages read, 4 planned by both"),
        "{stdout}"
    );
    for line in &expected {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(stdout.contains("decisions change"), "{stdout}");
    assert!(
        stdout.contains("writer (its rules and thresholds"),
        "{stdout}"
    );
    // An unknown version is refused before anything runs.
    let out = bugflow()
        .current_dir(here)
        .args(["replay", "--from", &args[2], "--bundle", "bugtype=nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
