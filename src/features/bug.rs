// Over 400 lines on purpose: one function per bugbug extractor, in the order of
// bugbug/bug_features.py, so that the two can be read side by side.
//! Bug features, with bugbug's semantics (`bugbug/bug_features.py`).
//!
//! The input is a bug as Bugzilla's REST API returns it (`GET /rest/bug/{id}`), optionally
//! merged with its `comments`, `history` and `attachments` — the shape of bugbug's
//! `bugs.json` and of `bugflow data bugs`. Every field is optional: a bug from a webhook
//! has no comments or history, and the extractors make do with what is there.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::text::{cleanup, word_count};
use super::{Features, Group, Groups};

fn s<'a>(bug: &'a Value, field: &str) -> &'a str {
    bug.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(bug: &'a Value, field: &str) -> &'a [Value] {
    bug.get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The most text of one comment that feeds the text features, in bytes.
pub const MAX_COMMENT_TEXT: usize = 20_000;
/// The most comment text of one bug that feeds them, in bytes.
pub const MAX_COMMENTS_TEXT: usize = 200_000;

/// `text`, cut to at most `max` bytes at a character boundary.
fn capped(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn comments(bug: &Value) -> impl Iterator<Item = &str> {
    list(bug, "comments")
        .iter()
        .map(|c| c.get("text").and_then(Value::as_str).unwrap_or_default())
}

/// `cf_has_str`: `yes`, `no`, or nothing for `---`.
pub fn has_str(bug: &Value) -> Option<String> {
    tri_state(s(bug, "cf_has_str"))
}

/// `cf_has_regression_range`, like [`has_str`].
pub fn has_regression_range(bug: &Value) -> Option<String> {
    tri_state(s(bug, "cf_has_regression_range"))
}

fn tri_state(v: &str) -> Option<String> {
    match v {
        "" | "--" | "---" => None,
        other => Some(other.to_owned()),
    }
}

pub fn has_crash_signature(bug: &Value) -> bool {
    !s(bug, "cf_crash_signature").trim().is_empty()
}

/// Keywords minus `ignored`, plus `sec-` / `csectype-` for their families.
pub fn keywords(bug: &Value, ignored: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut families = Vec::new();
    for k in list(bug, "keywords").iter().filter_map(Value::as_str) {
        if ignored.contains(&k) {
            continue;
        }
        out.push(k.to_owned());
        if k.starts_with("sec-") {
            families.push("sec-".to_owned());
        } else if k.starts_with("csectype-") {
            families.push("csectype-".to_owned());
        }
    }
    out.extend(families);
    out
}

pub fn severity(bug: &Value) -> Option<String> {
    tri_state(s(bug, "severity"))
}

static COVERITY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[CID ?[0-9]+\]").expect("a valid regex literal"));

pub fn is_coverity_issue(bug: &Value) -> bool {
    COVERITY.is_match(s(bug, "summary")) || COVERITY.is_match(s(bug, "whiteboard"))
}

pub fn has_url(bug: &Value) -> bool {
    !s(bug, "url").is_empty()
}

pub fn has_w3c_url(bug: &Value) -> bool {
    s(bug, "url").contains("w3c")
}

pub fn has_github_url(bug: &Value) -> bool {
    s(bug, "url").contains("github")
}

/// Whiteboard tags: split on `[`/`]` (and on spaces outside brackets), lower case, plus the
/// part before `:` of `a:b` tags.
pub fn whiteboard(bug: &Value) -> Vec<String> {
    let lower = s(bug, "whiteboard").to_lowercase();
    let mut splits: Vec<String> = Vec::new();
    for part in lower.split('[') {
        if part.contains(']') {
            splits.extend(part.split(']').map(str::to_owned));
        } else {
            splits.extend(part.split(' ').map(str::to_owned));
        }
    }
    let mut splits: Vec<String> = splits
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let prefixes: Vec<String> = splits
        .iter()
        .filter_map(|s| s.split_once(':').map(|(p, _)| p.to_owned()))
        .collect();
    splits.extend(prefixes);
    splits
}

/// Attachments that are patches (or review requests).
pub fn patches(bug: &Value) -> usize {
    list(bug, "attachments")
        .iter()
        .filter(|a| {
            truthy(a.get("is_patch"))
                || matches!(
                    a.get("content_type").and_then(Value::as_str),
                    Some("text/x-review-board-request" | "text/x-phabricator-request")
                )
        })
        .count()
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    }
}

/// Comments that announce a landing (a link to hg.mozilla.org).
pub fn landings(bug: &Value) -> usize {
    comments(bug)
        .filter(|t| t.contains("://hg.mozilla.org/"))
        .count()
}

fn creator_email(bug: &Value) -> &str {
    bug.get("creator_detail")
        .and_then(|d| d.get("email").or_else(|| d.get("login")))
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(bug, "creator"))
}

pub fn is_mozillian(bug: &Value) -> bool {
    let email = creator_email(bug);
    email.ends_with("@mozilla.com") || email.ends_with("@mozilla.org")
}

pub fn bug_reporter(bug: &Value) -> String {
    creator_email(bug).to_owned()
}

pub fn blocked_bugs_number(bug: &Value) -> usize {
    list(bug, "blocks").len()
}

pub fn has_cve_in_alias(bug: &Value) -> bool {
    match bug.get("alias") {
        Some(Value::String(a)) => a.contains("CVE"),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|x| x.contains("CVE")),
        _ => false,
    }
}

pub fn comment_count(bug: &Value) -> usize {
    bug.get("comment_count")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .unwrap_or_else(|| list(bug, "comments").len())
}

/// Characters in all comments (Python's `len`: code points).
pub fn comment_length(bug: &Value) -> usize {
    length_of(comments(bug))
}

fn length_of<'a>(texts: impl Iterator<Item = &'a str>) -> usize {
    texts.map(|t| t.chars().count()).sum()
}

/// Any `cf_status_firefox*` flag was ever set to `affected`.
pub fn ever_affected(bug: &Value) -> bool {
    list(bug, "history").iter().any(|h| {
        list(h, "changes").iter().any(|c| {
            s(c, "field_name").starts_with("cf_status_firefox") && s(c, "added") == "affected"
        })
    })
}

/// Some version is unaffected although an older one is affected.
pub fn affected_then_unaffected(bug: &Value) -> bool {
    let Some(fields) = bug.as_object() else {
        return false;
    };
    let mut affected = Vec::new();
    let mut unaffected = Vec::new();
    for (key, value) in fields {
        let version = key
            .strip_prefix("cf_status_firefox_esr")
            .or_else(|| key.strip_prefix("cf_status_firefox"));
        let (Some(version), Some(value)) = (version, value.as_str()) else {
            continue;
        };
        let Ok(version) = version.parse::<u32>() else {
            continue;
        };
        match value {
            "unaffected" => unaffected.push(version),
            "affected" | "fixed" | "wontfix" | "fix-optional" | "verified" | "disabled"
            | "verified disabled" => affected.push(version),
            _ => {}
        }
    }
    unaffected.iter().any(|u| affected.iter().any(|a| a < u))
}

/// Whiteboard tags of a performance bug (bugbug's `IsPerformanceBug`).
pub const PERFORMANCE_WHITEBOARD: [&str; 6] = [
    "[fxperf",
    "[fxperfsize",
    "[snappy",
    "[pdfjs-c-performance",
    "[pdfjs-performance",
    "[sp3",
];

/// bugbug's `IsPerformanceBug` (the `performancebug` model's label): a performance impact of
/// low, medium or high, a keyword starting with `perf`, `topperf` or `main-thread-io`, or a
/// performance tag in the whiteboard.
pub fn is_performance_bug(bug: &Value) -> bool {
    const KEYWORD_PREFIXES: [&str; 3] = ["perf", "topperf", "main-thread-io"];
    matches!(s(bug, "cf_performance_impact"), "low" | "medium" | "high")
        || list(bug, "keywords")
            .iter()
            .filter_map(Value::as_str)
            .any(|k| KEYWORD_PREFIXES.iter().any(|p| k.starts_with(p)))
        || {
            let whiteboard = s(bug, "whiteboard").to_lowercase();
            PERFORMANCE_WHITEBOARD
                .iter()
                .any(|p| whiteboard.contains(p))
        }
}

/// bugbug's rule-based bug types: crash, memory, performance, power, security.
pub fn bug_types(bug: &Value) -> Vec<&'static str> {
    let keywords: Vec<&str> = list(bug, "keywords")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let wb = s(bug, "whiteboard").to_lowercase();
    let mut types = Vec::new();
    let perf_keywords = [
        "perf",
        "perf:pageload",
        "perf:resource-use",
        "perf:responsiveness",
        "perf:animation",
        "perf:startup",
        "perf:frontend",
        "topperf",
    ];
    let perf_impact = matches!(s(bug, "cf_performance_impact"), "low" | "medium" | "high")
        || matches!(s(bug, "cf_performance"), "low" | "medium" | "high");
    if keywords.iter().any(|k| perf_keywords.contains(k))
        || perf_impact
        || PERFORMANCE_WHITEBOARD.iter().any(|w| wb.contains(w))
    {
        types.push("performance");
    }
    if keywords
        .iter()
        .any(|k| *k == "memory-footprint" || *k == "memory-leak")
        || wb.contains("[memshrink")
    {
        types.push("memory");
    }
    if keywords.contains(&"power") || wb.contains("[power") {
        types.push("power");
    }
    if keywords
        .iter()
        .any(|k| k.starts_with("sec-") && *k != "sec-other")
        || ["[sg:", "[psm-", "[adv-main", "[adv-esr"]
            .iter()
            .any(|w| wb.contains(w))
    {
        types.push("security");
    }
    if keywords
        .iter()
        .any(|k| *k == "crash" || *k == "crashreportid")
        || has_crash_signature(bug)
    {
        types.push("crash");
    }
    types
}

/// What a model may not see because it is (or gives away) its label, and the feature groups
/// it reads (a catalogue file's `[features]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exclude {
    /// Keywords that are labels (`regression`, `feature`).
    pub keywords: Vec<String>,
    /// Structured fields hidden: `product`, `component` (the component and spam models
    /// predict them), `type` (the bug type model predicts it).
    pub fields: Vec<String>,
    /// The groups kept (empty: every group).
    pub groups: Vec<Group>,
}

impl Exclude {
    /// Whether a structured feature is hidden from the model.
    fn hides(&self, name: &str) -> bool {
        let field = name.split_once('=').map(|(f, _)| f);
        field.is_some_and(|f| self.fields.iter().any(|h| h == f))
            || name
                .strip_suffix(" in keywords")
                .is_some_and(|k| self.keywords.iter().any(|h| h == k))
    }

    /// Whether the model reads this feature.
    pub fn keeps(&self, f: &super::Feature) -> bool {
        (self.groups.is_empty() || self.groups.contains(&f.group))
            && (f.group.is_text() || !self.hides(&f.name))
    }

    /// `all` (from [`extract_all`]) without what this model may not see.
    pub fn apply(&self, all: &Features) -> Features {
        let group_kept = |g: &Group| self.groups.is_empty() || self.groups.contains(g);
        Features {
            items: all
                .items
                .iter()
                .filter(|f| self.keeps(f))
                .cloned()
                .collect(),
            tokens: all
                .tokens
                .iter()
                .filter(|(_, g)| group_kept(g))
                .copied()
                .collect(),
        }
    }
}

/// The features a model may see: [`extract_all`] filtered by `exclude`. Serving extracts
/// once and filters per model; training calls this: both see exactly the same features.
/// Only the groups the model keeps are read ([`extract_groups`]).
pub fn extract(bug: &Value, exclude: &Exclude) -> Features {
    let groups = match exclude.groups.as_slice() {
        [] => Groups::ALL,
        kept => Groups::of(kept.iter().copied()),
    };
    exclude.apply(&extract_groups(bug, groups))
}

/// Every feature of a bug.
pub fn extract_all(bug: &Value) -> Features {
    extract_groups(bug, Groups::ALL)
}

/// The features of `groups` only: [`extract_all`]'s, in the same order, without those of
/// any other group, whose text is then never cleaned or cut into words. Serving extracts
/// the groups its models read: a full bug's comments after the description are most of
/// its text, and of the shipped bug models only regression reads them.
pub fn extract_groups(bug: &Value, groups: Groups) -> Features {
    let mut f = Features::new();
    // The comments' texts, looked up once for the structured features that read them all
    // and for the text groups (not at all for a title-only model).
    let reads_comments = [Group::Data, Group::Body, Group::Comments]
        .into_iter()
        .any(|g| groups.contains(g));
    let texts: Vec<&str> = if reads_comments {
        comments(bug).collect()
    } else {
        Vec::new()
    };
    if groups.contains(Group::Data) {
        structured(bug, &texts, &mut f);
    }
    if groups.contains(Group::Title) || groups.contains(Group::Chars) {
        let title = cleanup(s(bug, "summary"));
        if groups.contains(Group::Title) {
            f.words(Group::Title, &title);
        }
        if groups.contains(Group::Chars) {
            f.char_ngrams(&title, 200);
        }
    }
    // A crash report or a pasted log can be megabytes: the text features read a bounded
    // part of each comment, and of all of them.
    let mut texts = texts.iter().map(|t| capped(t, MAX_COMMENT_TEXT));
    if let Some(first) = texts.next()
        && groups.contains(Group::Body)
    {
        f.words(Group::Body, &cleanup(first));
    }
    if !groups.contains(Group::Comments) {
        return f;
    }
    // The next 50 comments, cleaned and joined by spaces into one string; those that
    // would start past the cap are not cleaned at all.
    let mut rest = String::new();
    for (i, text) in texts.take(50).enumerate() {
        if rest.len() >= MAX_COMMENTS_TEXT {
            break;
        }
        if i > 0 {
            rest.push(' ');
        }
        rest.push_str(&cleanup(text));
    }
    f.words(Group::Comments, capped(&rest, MAX_COMMENTS_TEXT));
    f
}

/// The structured features ([`Group::Data`]); `texts` are the comments' texts.
fn structured(bug: &Value, texts: &[&str], f: &mut Features) {
    if let Some(v) = has_str(bug) {
        f.category("has_str", &v);
    }
    if let Some(v) = has_regression_range(bug) {
        f.category("has_regression_range", &v);
    }
    if let Some(v) = severity(bug) {
        f.category("severity", &v);
    }
    let kws = keywords(bug, &[]);
    f.list("keywords", kws.iter().map(String::as_str));
    f.flag("has_crash_signature", has_crash_signature(bug));
    f.flag("is_coverity_issue", is_coverity_issue(bug));
    f.flag("has_url", has_url(bug));
    f.flag("has_w3c_url", has_w3c_url(bug));
    f.flag("has_github_url", has_github_url(bug));
    let wb = whiteboard(bug);
    f.list("whiteboard", wb.iter().map(String::as_str));
    f.count("blocked_bugs_number", blocked_bugs_number(bug) as f64);
    f.flag("ever_affected", ever_affected(bug));
    f.flag("affected_then_unaffected", affected_then_unaffected(bug));
    f.category("product", s(bug, "product"));
    f.category("component", s(bug, "component"));
    f.category("type", s(bug, "type"));
    f.category("platform", s(bug, "platform"));
    f.category("op_sys", s(bug, "op_sys"));
    f.category("filed_via", s(bug, "filed_via"));
    f.flag("is_mozillian", is_mozillian(bug));
    f.flag("has_cve_in_alias", has_cve_in_alias(bug));
    f.count("comment_count", comment_count(bug) as f64);
    f.count("comment_length", length_of(texts.iter().copied()) as f64);
    f.count("num_words_title", word_count(s(bug, "summary")) as f64);
    f.count(
        "num_words_comments",
        texts.iter().copied().map(word_count).sum::<usize>() as f64,
    );
    f.flag("has_attachment", !list(bug, "attachments").is_empty());
    f.count("patches", patches(bug) as f64);
    f.count("landings", landings(bug) as f64);
    f.list("bug_types", bug_types(bug));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `extract_groups` is `extract_all` with the other groups' features left out, in the
    /// same order, for every set of a bug's groups, on the 58 fixture bugs (full, with
    /// comments and history) and a bug with no comments at all. Fails if a group is read
    /// when it was not asked for, or left out when it was (the comments' count must not
    /// move the first comment into the comments, nor the description into the body).
    #[test]
    fn extracting_some_groups_is_extracting_all_and_keeping_those() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/data/bugs.jsonl"
        );
        let mut bugs: Vec<Value> = std::fs::read_to_string(path)
            .expect("the fixture bugs")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a fixture bug"))
            .collect();
        bugs.push(serde_json::json!({"id": 1, "summary": "Crash in nsDocShell.cpp at 0x1f"}));
        let bug_groups = [
            Group::Data,
            Group::Title,
            Group::Body,
            Group::Comments,
            Group::Chars,
        ];
        let mut compared = 0;
        for b in &bugs {
            let all = extract_all(b);
            assert_eq!(extract_groups(b, Groups::ALL), all);
            for mask in 0..1u32 << bug_groups.len() {
                let chosen: Vec<Group> = (0..bug_groups.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| bug_groups[i])
                    .collect();
                let groups = Groups::of(chosen.iter().copied());
                let kept = Features {
                    items: all
                        .items
                        .iter()
                        .filter(|f| groups.contains(f.group))
                        .cloned()
                        .collect(),
                    tokens: all
                        .tokens
                        .iter()
                        .filter(|(_, g)| groups.contains(*g))
                        .copied()
                        .collect(),
                };
                assert_eq!(
                    extract_groups(b, groups),
                    kept,
                    "bug {} {chosen:?}",
                    b["id"]
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 59 * 32);
        // The fixture bugs have text in every group the comparison covers.
        let first = extract_all(&bugs[0]);
        for g in bug_groups {
            assert!(
                first.items.iter().any(|f| f.group == g) || first.tokens.iter().any(|t| t.1 == g),
                "{g:?}"
            );
        }
    }

    #[test]
    fn a_model_does_not_see_its_label() {
        let b = serde_json::json!({"product": "Core", "component": "DOM", "type": "defect",
                                   "keywords": ["regression", "crash"], "summary": "x y"});
        let names = |e: &Exclude| -> Vec<String> {
            extract(&b, e).items.into_iter().map(|f| f.name).collect()
        };
        let component = names(&Exclude {
            fields: vec!["product".into(), "component".into()],
            ..Exclude::default()
        });
        assert!(
            !component
                .iter()
                .any(|n| n.starts_with("product=") || n.starts_with("component="))
        );
        assert!(component.contains(&"type=defect".to_string()));
        let bugtype = names(&Exclude {
            keywords: vec!["regression".into()],
            fields: vec!["type".into()],
            ..Exclude::default()
        });
        assert!(
            !bugtype
                .iter()
                .any(|n| n == "regression in keywords" || n.starts_with("type="))
        );
        assert!(bugtype.contains(&"crash in keywords".to_string()));
    }

    /// The comment words are those of the first 50 comments after the description,
    /// cleaned, joined by spaces and cut at `MAX_COMMENTS_TEXT` bytes, also when the comments
    /// are long enough to pass the cap (those past it are not cleaned) or empty.
    #[test]
    fn comment_words_are_cut_where_the_joined_text_is() {
        for (count, size) in [(3, 10), (60, 9_000), (60, 30_000), (12, 19_999)] {
            let texts: Vec<String> = (0..count)
                .map(|i| match i % 7 {
                    3 => String::new(),
                    _ => format!("c{i} ").repeat(size / 4) + "see https://example.com/x",
                })
                .collect();
            let comments: Vec<Value> = texts
                .iter()
                .map(|t| serde_json::json!({ "text": t }))
                .collect();
            let bug = serde_json::json!({ "summary": "s", "comments": comments });
            let joined = texts
                .iter()
                .skip(1)
                .take(50)
                .map(|t| cleanup(capped(t, MAX_COMMENT_TEXT)))
                .collect::<Vec<_>>()
                .join(" ");
            let mut expected = Features::new();
            expected.words(Group::Comments, capped(&joined, MAX_COMMENTS_TEXT));
            let got: Vec<_> = extract_all(&bug)
                .tokens
                .into_iter()
                .filter(|(_, g)| *g == Group::Comments)
                .collect();
            assert_eq!(got, expected.tokens, "{count} comments of {size} bytes");
        }
    }

    #[test]
    fn whiteboard_matches_bugbug() {
        let wb = |w: &str| whiteboard(&serde_json::json!({ "whiteboard": w }));
        assert_eq!(
            wb("inj+ ux [AV:Quick Heal] qf"),
            vec!["inj+", "ux", "av:quick heal", "qf", "av"]
        );
        assert_eq!(
            wb("[MemShrink][platform-rel-Facebook]"),
            vec!["memshrink", "platform-rel-facebook"]
        );
        assert!(wb("").is_empty());
    }
}
