//! bugbug's per-feature expectations (`tests/test_bug_features.py`), on its fixtures.

use bugflow::features::bug;
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/bug_features/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn each<T>(name: &str, f: impl Fn(&Value) -> T) -> Vec<T> {
    fixture(name).iter().map(f).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn has_str() {
    assert_eq!(
        each("has_str.json", bug::has_str),
        vec![Some("yes".into()), None, Some("no".into())]
    );
}

#[test]
fn has_regression_range() {
    assert_eq!(
        each("has_regression_range.json", bug::has_regression_range),
        vec![Some("yes".into()), None]
    );
}

#[test]
fn has_crash_signature() {
    assert_eq!(
        each("has_crash_signature.json", bug::has_crash_signature),
        vec![false, true]
    );
}

#[test]
fn keywords() {
    assert_eq!(
        each("keywords.json", |b| bug::keywords(b, &[])),
        vec![
            strings(&["crash", "intermittent-failure", "stale-bug"]),
            strings(&["bulk-close-intermittents", "crash", "intermittent-failure"]),
        ]
    );
}

#[test]
fn severity() {
    assert_eq!(
        each("severity.json", bug::severity),
        vec![Some("major".into()), Some("normal".into())]
    );
}

#[test]
fn is_coverity_issue() {
    assert_eq!(
        each("is_coverity_issue.json", bug::is_coverity_issue),
        vec![false, true]
    );
}

#[test]
fn urls() {
    assert_eq!(each("has_url.json", bug::has_url), vec![true, false]);
    assert_eq!(
        each("has_w3c_url.json", bug::has_w3c_url),
        vec![true, false]
    );
    assert_eq!(
        each("has_github_url.json", bug::has_github_url),
        vec![true, false]
    );
}

#[test]
fn whiteboard() {
    assert_eq!(
        each("whiteboard.json", bug::whiteboard),
        vec![
            strings(&["memshrink", "platform-rel-facebook"]),
            strings(&[]),
            strings(&["inj+", "av:quick heal", "av"]),
            strings(&[
                "av:quick heal",
                "regressed sept 6th",
                "dll version is 3.0.1.*",
                "av"
            ]),
            strings(&["av:quick heal", "inj+", "av"]),
            strings(&["av:quick heal", "inj+", "av"]),
            strings(&["inj+", "av:quick heal", "av"]),
            strings(&["inj+", "av:quick heal", "av"]),
            strings(&["inj+", "ux", "av:quick heal", "qf", "av"]),
        ]
    );
}

#[test]
fn patches_and_landings() {
    assert_eq!(each("patches.json", bug::patches), vec![1, 0]);
    assert_eq!(each("landings.json", bug::landings), vec![2, 1]);
}

#[test]
fn product_and_component_are_raw() {
    let product = fixture("product.json");
    let component = fixture("component.json");
    assert_eq!(product[0]["product"], "Core");
    assert_eq!(component[0]["component"], "Graphics");
    let f = bug::extract(&product[0], &bug::Exclude::default());
    assert!(f.items.iter().any(|i| i.name == "product=Core"));
}

#[test]
fn reporter() {
    assert_eq!(
        each("is_mozillian.json", bug::is_mozillian),
        vec![false, true, true]
    );
    assert_eq!(
        each("bug_reporter.json", bug::bug_reporter),
        fixture("bug_reporter.json")
            .iter()
            .map(|b| b["creator_detail"]["email"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn counts() {
    assert_eq!(
        each("blocked_bugs_number.json", bug::blocked_bugs_number),
        vec![2, 0]
    );
    assert_eq!(
        each("has_cve_in_alias.json", bug::has_cve_in_alias),
        vec![true, false]
    );
    assert_eq!(each("comment_count.json", bug::comment_count), vec![4, 28]);
    assert_eq!(
        each("comment_length.json", bug::comment_length),
        vec![566, 5291]
    );
}

#[test]
fn bug_types() {
    assert_eq!(
        each("bug_types.json", bug::bug_types),
        vec![
            vec!["performance"],
            vec!["memory"],
            vec!["power"],
            vec!["security"],
            vec!["crash"]
        ]
    );
}
