//! Text cleanup and tokenising, with bugbug's semantics (`bugbug/feature_cleanup.py`).
//!
//! Cleanup replaces what varies but means the same — a URL, a file name, a hex address, a
//! crash-stats link, a DLL — with one placeholder token, folds synonyms ("steps to
//! reproduce" → `str`) and drops quoted replies, so that the model learns from words that
//! generalise.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    // The patterns are literals of this file, checked by the tests below.
    Regex::new(pattern).expect("a valid regex literal")
}

const CODE_URL: &str =
    r"(?i)https?://(?:hg\.mozilla\.org|searchfox\.org|dxr\.mozilla\.org|github\.com/mozilla)\S*";
const URL: &str = r"(?i)\b(?:https?|ftp)://\S+";
const FILEREF: &str = r"\b\w+\.(?:py|json|js|jsm|mjs|jsx|html|css|c|cpp|h)\b";
const HEX: &str = r"\b0[xX][0-9a-fA-F]+\b";
const DLL: &str = r"(?i)\b(?:[\w-]+)\.(?:dll|so|dylib)\b";
static FIREFOX_DLL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)^(?:xul|mozglue|nss3|freebl3|softokn3|libxul|libmozglue|lgpllibs|firefox|plugin-container|mozavcodec|mozavutil)\.(?:dll|so|dylib)$",
    )
});
const CRASH: &str = r"(?i)\b(?:bp-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b";
const QUOTED: &str = r"(?m)^\s*>.*$";

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

/// What a cleanup puts in place of what it matched.
#[derive(Clone, Copy)]
enum Replace {
    With(&'static str),
    /// A DLL's name, unless it is one of Firefox's own (those are kept).
    DllName,
}

impl Replace {
    fn apply(self, matched: &str) -> &str {
        match self {
            Replace::With(to) => to,
            Replace::DllName if FIREFOX_DLL.is_match(matched) => matched,
            Replace::DllName => " __DLL_NAME__ ",
        }
    }
}

/// Every cleanup, in bugbug's order: a pattern and what replaces its matches.
fn cleanups() -> Vec<(String, Replace)> {
    let mut all: Vec<(String, Replace)> = [
        (QUOTED, Replace::With(" ")),
        (CODE_URL, Replace::With(" __CODE_REFERENCE_URL__ ")),
        (URL, Replace::With(" __URL__ ")),
        (CRASH, Replace::With(" __CRASH_STATS_LINK__ ")),
        (HEX, Replace::With(" __HEX_NUMBER__ ")),
        (DLL, Replace::DllName),
        (FILEREF, Replace::With(" __FILE_REFERENCE__ ")),
    ]
    .into_iter()
    .map(|(pattern, replace)| (pattern.to_owned(), replace))
    .collect();
    for (to, from) in SYNONYMS {
        let alternatives: Vec<String> = from.iter().map(|f| regex::escape(f)).collect();
        let pattern = format!(r"(?i)\b(?:{})\b", alternatives.join("|"));
        all.push((pattern, Replace::With(to)));
    }
    all
}

/// Every cleanup in one multi-pattern regex, in bugbug's order. Its matches are
/// leftmost-first with the patterns ranked as an alternation's alternatives, so where two
/// cleanups could apply at one place the earlier one wins, as it did when each was a pass of
/// its own; and each match says which pattern it is, so no capture groups are resolved (a
/// capture search ran a second, slower engine over every match).
///
/// One difference remains: where a later cleanup's match starts before an earlier one's
/// and overlaps it, the passes applied the earlier one (`safe mode.cpp`: the file name,
/// then no synonym is left) and one pass applies the one that starts first (the synonym,
/// then no file name is left). `one_pass_cleans_as_the_passes_did` finds no such text in the
/// summaries and comments of 1,072 real bugs.
struct OnePass {
    /// The patterns as bugbug wrote them: `\b` is a Unicode word boundary.
    unicode: regex_automata::meta::Regex,
    /// The same with every `\b` and `\w` an ASCII one. The two differ only at a word
    /// character outside ASCII (`é`, `ж`, `中`), so on a text without one they find the
    /// same matches; and this one the fast engine searches to the end, where the Unicode
    /// boundary makes it give up at the first byte outside ASCII (a curly quote, a dash)
    /// and hand the search to an engine many times slower. (ASCII word classes also make
    /// it a fraction of the Unicode one's size.)
    ascii: regex_automata::meta::Regex,
    replaces: Vec<Replace>,
}

static ONE_PASS: LazyLock<OnePass> = LazyLock::new(|| {
    let (patterns, replaces): (Vec<String>, Vec<Replace>) = cleanups().into_iter().unzip();
    let ascii: Vec<String> = patterns
        .iter()
        // `[0-9A-Za-z_]` is a class of its own where `\w` stood alone, and a class nested
        // in one (`[\w-]`: a union) where it stood in one.
        .map(|p| p.replace(r"\w", "[0-9A-Za-z_]").replace(r"\b", r"(?-u:\b)"))
        .collect();
    let build = |patterns: &[String]| {
        regex_automata::meta::Regex::new_many(patterns)
            .expect("the cleanup patterns are valid regex literals")
    };
    OnePass {
        unicode: build(&patterns),
        ascii: build(&ascii),
        replaces,
    }
});

/// The word characters outside ASCII that a case-insensitive pattern reads as an ASCII
/// letter (`(?i)s` matches U+017F LONG S, `(?i)k` U+212A KELVIN SIGN): a stand-in would hide
/// them. `no_other_character_outside_ascii_folds_to_ascii` checks there are no others.
const FOLD_TO_ASCII: [char; 2] = ['\u{17F}', '\u{212A}'];

/// What the ASCII patterns can search in place of `text`: the text itself when no word
/// character of it is outside ASCII; otherwise a copy in which each such character is as
/// many `_` as it has bytes. `_` is a word character under either boundary, and no cleanup
/// names it (none of the hex digits, letters of a URL scheme or of a synonym), so every
/// match falls where the Unicode patterns' would, at the same byte offsets; the matched
/// text is taken from `text`. `None` when a character could be read as an ASCII letter.
fn ascii_view(text: &str) -> Option<Cow<'_, str>> {
    if text.is_ascii() {
        return Some(Cow::Borrowed(text));
    }
    let Some(first) = text.char_indices().find(|(_, c)| is_non_ascii_word(*c)) else {
        return Some(Cow::Borrowed(text));
    };
    let mut view = String::with_capacity(text.len());
    view.push_str(&text[..first.0]);
    for c in text[first.0..].chars() {
        if !is_non_ascii_word(c) {
            view.push(c);
        } else if FOLD_TO_ASCII.contains(&c) {
            return None;
        } else {
            view.extend(std::iter::repeat_n('_', c.len_utf8()));
        }
    }
    Some(Cow::Owned(view))
}

/// Applies every cleanup, in bugbug's order, in one pass over the text (one scan, one new
/// string; a text with nothing to clean is copied once).
///
/// The fast engine searches a text whose words are all ASCII, or its [`ascii_view`]; the
/// Unicode patterns only a text with a character that folds to an ASCII letter.
pub fn cleanup(text: &str) -> String {
    let one_pass = &*ONE_PASS;
    ascii_view(text)
        .and_then(|view| clean_with(&one_pass.ascii, &view, text))
        .or_else(|| clean_with(&one_pass.unicode, text, text))
        // Never taken: searching `text` itself, the regex reports no match that splits a
        // character. Were it taken, the text would go on as it came, not cleaned.
        .unwrap_or_else(|| text.to_owned())
}

/// `text` with the cleanups `pattern` finds in `haystack` (`text`, or a view of it with the
/// same byte offsets) applied. `None` if a match does not fall on `text`'s character
/// boundaries (a view that broke its promise: the caller searches `text` itself).
fn clean_with(pattern: &regex_automata::meta::Regex, haystack: &str, text: &str) -> Option<String> {
    let replaces = &ONE_PASS.replaces;
    let mut out = String::with_capacity(text.len() + 16);
    let mut last = 0;
    for found in pattern.find_iter(haystack) {
        let Some(replace) = replaces.get(found.pattern().as_usize()) else {
            continue;
        };
        out.push_str(text.get(last..found.start())?);
        out.push_str(replace.apply(text.get(found.range())?));
        last = found.end();
    }
    out.push_str(text.get(last..)?);
    Some(out)
}

/// sklearn's default tokenisation: lower case, runs of two or more word characters.
pub fn tokenize(text: &str) -> Vec<String> {
    tokens(&text.to_lowercase()).map(str::to_owned).collect()
}

/// The tokens of an already lower-cased text, borrowed from it: sklearn's `\b\w\w+\b`,
/// that is every maximal run of two or more word characters (Unicode's, as the regex
/// crate's `\w`). Scanned by hand: a regex finds each match forwards and then again
/// backwards for its start, and bug comments are long.
pub fn tokens(lower: &str) -> impl Iterator<Item = &str> {
    WordRuns { text: lower, at: 0 }
}

struct WordRuns<'a> {
    text: &'a str,
    at: usize,
}

/// `ASCII_WORD[b]`: byte `b` is an ASCII word character (`[0-9A-Za-z_]`). One load a byte
/// where the comparisons would be five: the tokeniser reads every byte of every comment.
static ASCII_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || byte == b'_';
        b += 1;
    }
    table
};

/// An ASCII word character (`[0-9A-Za-z_]`), read from [`ASCII_WORD`].
#[inline(always)]
pub(crate) fn is_ascii_word(byte: u8) -> bool {
    ASCII_WORD[usize::from(byte)]
}

/// A word character outside ASCII (`é`, `ж`, `中`; regex's Unicode `\w`).
fn is_non_ascii_word(c: char) -> bool {
    !c.is_ascii() && regex_syntax::is_word_character(c)
}

impl<'a> Iterator for WordRuns<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let text = self.text;
        let bytes = text.as_bytes();
        while self.at < text.len() {
            let start = self.at;
            let mut chars = 0usize;
            loop {
                // ASCII word bytes by the byte (most of a bug's text), the rest by the
                // character; `at` only ever steps over whole characters.
                let ascii_from = self.at;
                while bytes.get(self.at).copied().is_some_and(is_ascii_word) {
                    self.at += 1;
                }
                chars += self.at - ascii_from;
                // The run goes on only through a word character outside ASCII (an ASCII
                // byte here ends it, without decoding a character).
                let outside_ascii = bytes.get(self.at).is_some_and(|b| !b.is_ascii());
                let next = outside_ascii
                    .then(|| text.get(self.at..)?.chars().next())
                    .flatten();
                match next {
                    Some(c) if is_non_ascii_word(c) => {
                        self.at += c.len_utf8();
                        chars += 1;
                    }
                    _ => break,
                }
            }
            if chars >= 2 {
                return text.get(start..self.at);
            }
            if chars == 0 {
                // Not a word character: step over it (an ASCII byte without decoding it).
                self.at += match bytes.get(self.at) {
                    Some(b) if b.is_ascii() => 1,
                    _ => text
                        .get(self.at..)
                        .and_then(|rest| rest.chars().next())
                        .map_or(1, char::len_utf8),
                };
            }
        }
        None
    }
}

/// White space as `char::is_whitespace` has it among ASCII bytes: tab, line feed, vertical
/// tab, form feed, carriage return, space (`u8::is_ascii_whitespace` leaves the vertical tab
/// out).
pub(crate) fn is_ascii_white_space(byte: u8) -> bool {
    matches!(byte, b'\t'..=b'\r' | b' ')
}

/// Whitespace-separated words (bugbug's `NumWordsTitle` / `NumWordsComments`).
pub fn word_count(text: &str) -> usize {
    if !text.is_ascii() {
        return text.split_whitespace().count();
    }
    // ASCII: a word starts at each byte that is not white space (as `char::is_whitespace`
    // has it: tab, line feed, vertical tab, form feed, carriage return, space) and follows
    // one that is, or starts the text. Comments run to many kilobytes, so eight bytes at a
    // time: in a u64, each white-space byte's top bit set (every byte is below 0x80, so the
    // sums below carry into no other byte); a word starts where a byte's bit is clear and
    // the byte before had it.
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Top bit of each byte that is at least `n` (for bytes below 0x80).
    let at_least = |x: u64, n: u64| x + LOW * (0x80 - n);
    let space = |x: u64| {
        let tab_to_cr = at_least(x, 9) & !at_least(x, 14);
        let blank = at_least(x, 32) & !at_least(x, 33);
        (tab_to_cr | blank) & HIGH
    };
    let bytes = text.as_bytes();
    let mut words = 0;
    // The text starts after white space.
    let mut before: u64 = 0x80;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in chunks.by_ref() {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        let spaces = space(u64::from_le_bytes(eight));
        let previous = (spaces << 8) | before;
        words += (previous & !spaces & HIGH).count_ones() as usize;
        before = spaces >> 56;
    }
    let mut in_word = before == 0;
    for &byte in chunks.remainder() {
        let blank = is_ascii_white_space(byte);
        words += usize::from(!blank && !in_word);
        in_word = !blank;
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_counted_as_split_whitespace_counts_them() {
        for text in [
            "",
            "   ",
            "one",
            " two  words ",
            "tab\tline\nfeed\x0bvt\x0cff\rcr",
            "\x1c is no space",
            "non-ASCII: café\u{a0}crème\u{2003}brûlée",
            "a\r\n\r\nb",
            "a",
            " a",
            "a ",
            "\n",
        ] {
            assert_eq!(
                word_count(text),
                text.split_whitespace().count(),
                "{text:?}"
            );
        }
        // Every pair of ASCII bytes, at the start, across the first eight bytes' edge and at
        // the end of a text of 17 bytes that are otherwise letters or spaces, …
        for a in 0..128u8 {
            for b in 0..128u8 {
                for fill in [b'x', b' '] {
                    for at in [0, 7, 15] {
                        let mut bytes = vec![fill; 17];
                        bytes[at] = a;
                        bytes[at + 1] = b;
                        let text = String::from_utf8(bytes).unwrap_or_default();
                        assert_eq!(
                            word_count(&text),
                            text.split_whitespace().count(),
                            "{text:?}"
                        );
                    }
                }
            }
        }
        // … and every summary and comment of the 58 fixture bugs.
        for text in fixture_texts("bugs.jsonl") {
            assert_eq!(word_count(&text), text.split_whitespace().count());
        }
    }

    /// The summary and every comment of each bug of a fixture file.
    fn fixture_texts(file: &str) -> Vec<String> {
        use std::io::BufRead;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data");
        let reader = crate::train::data::open(&root.join(file)).expect("a fixture");
        let mut texts = Vec::new();
        for line in reader.lines() {
            let bug: serde_json::Value =
                serde_json::from_str(&line.expect("a line")).expect("a bug");
            texts.extend(bug["summary"].as_str().map(str::to_owned));
            let comments = bug["comments"].as_array().into_iter().flatten();
            texts.extend(comments.filter_map(|c| c["text"].as_str().map(str::to_owned)));
        }
        texts
    }

    /// Each cleanup as a regex of its own, in bugbug's order.
    fn passes() -> Vec<(Regex, Replace)> {
        cleanups()
            .into_iter()
            .map(|(pattern, replace)| (re(&pattern), replace))
            .collect()
    }

    /// bugbug's cleanups as they were written: one regex pass after another.
    fn cleanup_in_passes(passes: &[(Regex, Replace)], text: &str) -> String {
        let mut text = text.to_owned();
        for (pattern, replace) in passes {
            text = pattern
                .replace_all(&text, |caps: &regex::Captures| {
                    replace.apply(&caps[0]).to_owned()
                })
                .into_owned();
        }
        text
    }

    /// One pass gives what the passes gave, on the summary and every comment of the 58
    /// fixture bugs and of the 1,014 full BMO bugs.
    #[test]
    fn one_pass_cleans_as_the_passes_did() {
        let passes = passes();
        let mut texts = 0;
        for file in ["bugs.jsonl", "bugzilla/bugs-2009-2018-full.jsonl.zst"] {
            for text in fixture_texts(file) {
                assert_eq!(
                    cleanup(&text),
                    cleanup_in_passes(&passes, &text),
                    "{text:?}"
                );
                texts += 1;
            }
        }
        assert!(texts > 10_000, "{texts} texts");
    }

    /// A text's words taken in stretches (`Features::words`: ASCII ones from their bytes)
    /// are the words of the whole text lower-cased and cut at once, and its character
    /// n-grams those of the characters' path, on the summary and every comment of the 58
    /// fixture bugs and of the 1,014 full BMO bugs.
    #[test]
    fn words_in_stretches_are_the_words_of_every_real_text() {
        use crate::features::{Features, Group};
        let (mut texts, mut outside_ascii) = (0, 0);
        for file in ["bugs.jsonl", "bugzilla/bugs-2009-2018-full.jsonl.zst"] {
            for text in fixture_texts(file) {
                let mut stretches = Features::new();
                stretches.words(Group::Comments, &text);
                let mut whole = Features::new();
                whole.any_words(Group::Comments, &text, &mut None);
                assert_eq!(stretches.tokens, whole.tokens, "{text:?}");
                let (mut fast, mut any) = (Features::new(), Features::new());
                fast.char_ngrams(&text, 1500);
                any.any_char_ngrams(&text, 1500);
                assert_eq!(fast.tokens, any.tokens, "{text:?}");
                texts += 1;
                outside_ascii += usize::from(!text.is_ascii());
            }
        }
        assert!(texts > 10_000, "{texts} texts");
        assert!(outside_ascii > 100, "{outside_ascii} texts outside ASCII");
    }

    /// Where a word character outside ASCII touches a match, the Unicode word boundary
    /// decides (the ASCII one would clean `é0x1F` and `spécification`'s `ification`).
    #[test]
    fn a_word_character_outside_ascii_keeps_unicode_boundaries() {
        let passes = passes();
        for text in [
            "é0x1F and 0x1F",
            "0x1Fé main.cpp",
            "émain.cpp main.cppé “main.cpp”",
            "spécification — a spec",
            "safe modeé, safe mode",
            "ж foo.dll жfoo.dll foo.dllж",
            "“quoted” 0xAB — no word outside ASCII",
            "page 中https://example.com/x",
        ] {
            assert_eq!(cleanup(text), cleanup_in_passes(&passes, text), "{text:?}");
        }
        // Only a word character outside ASCII makes a view: a curly quote, a dash or `½`
        // are not word characters under either boundary.
        assert!(matches!(ascii_view("é0x1F"), Some(Cow::Owned(_))));
        assert!(matches!(ascii_view("“0x1F” — ½"), Some(Cow::Borrowed(_))));
    }

    /// The ASCII patterns search a view of a text whose word characters outside ASCII are
    /// `_`s: on random mixes of what the cleanups look for, next to such characters (and to
    /// the two that fold to ASCII letters), they clean what the Unicode patterns searching
    /// the text itself clean. (Not always what bugbug's passes clean: in `safe mode.cpp` a
    /// pass replaces the file name first, one pass the synonym that starts earlier; see
    /// `one_pass_cleans_as_the_passes_did` for how rare that is in bugs.)
    #[test]
    fn a_view_with_stand_ins_cleans_as_the_unicode_patterns_do() {
        const PIECES: &[&str] = &[
            "0x",
            "1F",
            "ab",
            ".js",
            ".cpp",
            "main",
            "foo",
            ".dll",
            "xul",
            "https://",
            "ftp://",
            "hg.mozilla.org/x",
            " ",
            "  ",
            "\n",
            "\n> ",
            "-",
            "_",
            "—",
            "“",
            "é",
            "ж",
            "中",
            "\u{212A}",
            "\u{17F}",
            "safe mode",
            "steps to reproduce",
            "spec",
            "str",
            "bp-",
            "1d2c3b4a-0000-4000-8000-123456789abc",
            "ification",
            "asan",
            "K",
            "s",
            "\u{17F}afe mode",
            "\u{17F}pec",
            "a\u{17F}an",
        ];
        let unicode = &ONE_PASS.unicode;
        let mut rng = crate::models::linear::SplitMix(11);
        let mut viewed = 0;
        for _ in 0..6000 {
            let n = 1 + rng.below(12);
            let text: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            viewed += usize::from(matches!(ascii_view(&text), Some(Cow::Owned(_))));
            assert_eq!(
                Some(cleanup(&text)),
                clean_with(unicode, &text, &text),
                "{text:?}"
            );
        }
        assert!(viewed > 500, "{viewed} texts searched through a view");
        assert!(ascii_view("ſafe mode").is_none() && ascii_view("\u{212A}").is_none());
        assert_eq!(ascii_view("é0x1F —").as_deref(), Some("__0x1F —"));
    }

    /// `FOLD_TO_ASCII` holds every word character outside ASCII that a case-insensitive
    /// pattern matches with an ASCII letter.
    #[test]
    fn no_other_character_outside_ascii_folds_to_ascii() {
        let letter = re(r"(?i)^[a-z]$");
        let folding: Vec<char> = ('\u{80}'..=char::MAX)
            .filter(|c| is_non_ascii_word(*c) && letter.is_match(c.encode_utf8(&mut [0; 4])))
            .collect();
        assert_eq!(folding, FOLD_TO_ASCII);
    }

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

    /// The scan finds what `\b\w\w+\b` finds, on ASCII, accents, scripts without case,
    /// marks, digits of other scripts, emoji and punctuation.
    #[test]
    fn tokens_are_the_regex_matches() {
        let token = re(r"\b\w\w+\b");
        let texts = [
            "a crash in foo_bar, x 42! élan vital — naïve café",
            "страница не загружается; ページが読み込まれない 页面 x",
            "e\u{301}t\u{301}e\u{301} ٣٤٥ a١ ½ 2² ⅷ x‿y a\u{200d}b",
            "🔥 fire🔥fire __ _ a _a_ x-y x.y 0x1f http://a.b/c?d=e",
            "",
            "  \n\t\u{a0}ok",
        ];
        for text in texts {
            let lower = text.to_lowercase();
            let expected: Vec<&str> = token.find_iter(&lower).map(|m| m.as_str()).collect();
            assert_eq!(tokens(&lower).collect::<Vec<_>>(), expected, "{text:?}");
        }
        // And on every summary and comment of the 58 fixture bugs.
        for text in fixture_texts("bugs.jsonl") {
            let lower = text.to_lowercase();
            let expected: Vec<&str> = token.find_iter(&lower).map(|m| m.as_str()).collect();
            assert_eq!(tokens(&lower).collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn tokens_are_like_sklearns() {
        assert_eq!(
            tokenize("A Crash in Foo_bar, x 42!"),
            vec!["crash", "in", "foo_bar", "42"]
        );
    }
}
