//! GitHub issue features, for the issue-type model (bug / feature / question).
//!
//! Title and body words, character n-grams (robust to identifiers and typos), and the body's
//! headings: projects ask for different templates per kind of issue ("### Describe the bug",
//! "Is your feature request related to a problem?"), which tells the kinds apart.

use std::sync::LazyLock;

use regex::Regex;

use super::text::cleanup;
use super::{Features, Group};

static CODE_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)```.*?```").expect("a valid regex literal"));
static HEADING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^\s*(?:#+|\*\*)\s*([^\n*#]{2,60})").expect("a valid regex literal")
});
static NON_WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\W+").expect("a valid regex literal"));

/// How many characters of an issue's body the words read, and of its title, title and body
/// the character n-grams (1,500 for the n-grams before: 5-fold cross-validation on the
/// training issues, 0.767 → 0.773 at the best C of each; BENCHMARKS.md).
const READ_CHARS: usize = 4000;

/// Every feature of an issue.
pub fn extract(title: &str, body: &str) -> Features {
    let mut f = Features::new();
    let clipped: String = body.chars().take(READ_CHARS).collect();
    let without_code = CODE_BLOCK.replace_all(&clipped, " codeblock ");
    let clean_body = cleanup(&without_code);
    let clean_title = cleanup(title);
    f.words(Group::Title, &clean_title);
    f.words(Group::Body, &clean_body);
    let both: String = format!("{clean_title} {clean_title} {clean_body}");
    f.char_ngrams(&both, READ_CHARS);
    for cap in HEADING.captures_iter(&clipped) {
        let heading = NON_WORD.replace_all(cap[1].trim(), "_").to_lowercase();
        f.token(Group::Headings, &format!("H_{heading}"));
    }
    if clipped.chars().take(300).any(|c| c == '?') {
        f.token(Group::Headings, "body_question_mark");
    }
    if title.contains('?') {
        f.token(Group::Headings, "title_question_mark");
    }
    f
}
