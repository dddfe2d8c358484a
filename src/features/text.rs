//! Text cleanup and tokenising, with bugbug's semantics (`bugbug/feature_cleanup.py`).
//!
//! Cleanup replaces what varies but means the same — a URL, a file name, a hex address, a
//! crash-stats link, a DLL — with one placeholder token, folds synonyms ("steps to
//! reproduce" → `str`) and drops quoted replies, so that the model learns from words that
//! generalise.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    // The patterns are literals of this file, checked by the tests below.
    Regex::new(pattern).expect("a valid regex literal")
}

static CODE_URL: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)https?://(?:hg\.mozilla\.org|searchfox\.org|dxr\.mozilla\.org|github\.com/mozilla)\S*")
});
static URL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(?:https?|ftp)://\S+"));
static FILEREF: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b\w+\.(?:py|json|js|jsm|mjs|jsx|html|css|c|cpp|h)\b"));
static HEX: LazyLock<Regex> = LazyLock::new(|| re(r"\b0[xX][0-9a-fA-F]+\b"));
static DLL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)\b(?:[\w-]+)\.(?:dll|so|dylib)\b"));
static FIREFOX_DLL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:xul|mozglue|nss3|freebl3|softokn3|libxul|libmozglue|lgpllibs|firefox|plugin-container|mozavcodec|mozavutil)\.(?:dll|so|dylib)$",
    )
});
static CRASH: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)\b(?:bp-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
});
static QUOTED: LazyLock<Regex> = LazyLock::new(|| re(r"(?m)^\s*>.*$"));
static TOKEN: LazyLock<Regex> = LazyLock::new(|| re(r"\b\w\w+\b"));

/// bugbug's synonyms: each variant becomes the first word.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("safemode", &["safemode", "safe mode"]),
    ("str", &["str", "steps to reproduce", "repro steps"]),
    ("uaf", &["uaf", "use after free", "use-after-free"]),
    ("asan", &["asan", "address sanitizer", "addresssanitizer"]),
    (
        "permafailure",
        &[
            "permafailure",
            "permafailing",
            "permafail",
            "perma failure",
            "perma failing",
            "perma fail",
            "perma-failure",
            "perma-failing",
            "perma-fail",
        ],
    ),
    ("spec", &["spec", "specification"]),
];

static SYNONYM_RES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    SYNONYMS
        .iter()
        .map(|(to, from)| {
            let alternatives: Vec<String> = from.iter().map(|f| regex::escape(f)).collect();
            (re(&format!(r"(?i)\b(?:{})\b", alternatives.join("|"))), *to)
        })
        .collect()
});

/// Applies every cleanup, in bugbug's order.
pub fn cleanup(text: &str) -> String {
    let text = QUOTED.replace_all(text, " ");
    let text = CODE_URL.replace_all(&text, " __CODE_REFERENCE_URL__ ");
    let text = URL.replace_all(&text, " __URL__ ");
    let text = CRASH.replace_all(&text, " __CRASH_STATS_LINK__ ");
    let text = HEX.replace_all(&text, " __HEX_NUMBER__ ");
    let text = DLL.replace_all(&text, |caps: &regex::Captures| {
        let name = &caps[0];
        if FIREFOX_DLL.is_match(name) {
            name.to_owned()
        } else {
            " __DLL_NAME__ ".to_owned()
        }
    });
    let mut text = FILEREF
        .replace_all(&text, " __FILE_REFERENCE__ ")
        .into_owned();
    for (pattern, to) in SYNONYM_RES.iter() {
        text = pattern.replace_all(&text, *to).into_owned();
    }
    text
}

/// sklearn's default tokenisation: lower case, runs of two or more word characters.
pub fn tokenize(text: &str) -> Vec<String> {
    tokens(&text.to_lowercase()).map(str::to_owned).collect()
}

/// The tokens of an already lower-cased text, borrowed from it.
pub fn tokens(lower: &str) -> impl Iterator<Item = &str> {
    TOKEN.find_iter(lower).map(|m| m.as_str())
}

/// Whitespace-separated words (bugbug's `NumWordsTitle` / `NumWordsComments`).
pub fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_replaces_what_varies() {
        let cleaned = cleanup(
            "See https://example.com/a and https://hg.mozilla.org/x, crash bp-1d2c3b4a-0000-4000-8000-123456789abc \
             at 0xDEADBEEF in foo.dll (not xul.dll) from main.cpp.\nSteps to reproduce: use after free\n> quoted reply",
        );
        assert!(cleaned.contains("__URL__"), "{cleaned}");
        assert!(cleaned.contains("__CODE_REFERENCE_URL__"), "{cleaned}");
        assert!(cleaned.contains("__CRASH_STATS_LINK__"), "{cleaned}");
        assert!(cleaned.contains("__HEX_NUMBER__"), "{cleaned}");
        assert!(cleaned.contains("__DLL_NAME__"), "{cleaned}");
        assert!(cleaned.contains("xul.dll"), "{cleaned}");
        assert!(cleaned.contains("__FILE_REFERENCE__"), "{cleaned}");
        assert!(cleaned.contains("str: uaf"), "{cleaned}");
        assert!(!cleaned.contains("quoted reply"), "{cleaned}");
    }

    #[test]
    fn tokens_are_like_sklearns() {
        assert_eq!(
            tokenize("A Crash in Foo_bar, x 42!"),
            vec!["crash", "in", "foo_bar", "42"]
        );
    }
}
