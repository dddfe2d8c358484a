//! Feature extraction: from a bug, a commit or an issue to a sparse feature list.
//!
//! Extractors emit [`Feature`]s — a group, a name and a value. The group says how the value is
//! weighted when the model is trained and applied (see [`Group`]): text tokens are TF-IDF
//! weighted and L2-normalised per group, as sklearn's `TfidfVectorizer` does for bugbug;
//! structured features keep their value. Names are hashed to 64 bits, so a model stores no
//! strings, only the hashes of the features it kept.

pub mod bug;
pub mod commit;
pub mod issue;
pub mod text;

use serde::{Deserialize, Serialize};

/// How a group of features is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Structured features: booleans (1.0), categorical values (`product=Firefox` → 1.0) and
    /// numbers (already scaled, e.g. `log1p`). Used as they are.
    Data,
    /// Words and word bigrams of a title.
    Title,
    /// Words and word bigrams of the first comment (the description) or an issue body.
    Body,
    /// Words of all comments.
    Comments,
    /// Character n-grams (2–5, within word boundaries), robust to spelling and code.
    Chars,
    /// Headings of an issue body (issue templates differ by label).
    Headings,
    /// File paths, directories and extensions of a commit.
    Files,
}

/// How many groups there are (`Group::index` is below it).
pub const GROUPS: usize = Group::Files as usize + 1;

impl Group {
    /// Every group, in the order of [`index`](Self::index): `Group::ALL[g.index()] == g`.
    pub const ALL: [Group; GROUPS] = [
        Group::Data,
        Group::Title,
        Group::Body,
        Group::Comments,
        Group::Chars,
        Group::Headings,
        Group::Files,
    ];

    /// Whether values are TF-IDF weighted and L2-normalised within the group.
    pub fn is_text(self) -> bool {
        !matches!(self, Group::Data)
    }

    pub fn index(self) -> u8 {
        self as u8
    }
}

/// One structured feature: a name and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub group: Group,
    pub name: String,
    pub value: f64,
}

/// A bag of features being built by extractors.
///
/// Structured features keep their names (a model's exclusions read them); text tokens are
/// hashed as they are made, with [`Fnv`], straight from the text: a bug with 20,000 words
/// of comments costs no string per word or word pair.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Features {
    pub items: Vec<Feature>,
    /// Text tokens: `(feature hash, group)`, one entry per occurrence.
    pub tokens: Vec<(u64, Group)>,
}

impl Features {
    pub fn new() -> Self {
        Self::default()
    }

    /// A structured feature with a value.
    pub fn num(&mut self, name: impl Into<String>, value: f64) {
        if value != 0.0 && value.is_finite() {
            self.items.push(Feature {
                group: Group::Data,
                name: name.into(),
                value,
            });
        }
    }

    /// A boolean feature (present when true).
    pub fn flag(&mut self, name: impl Into<String>, on: bool) {
        if on {
            self.num(name, 1.0);
        }
    }

    /// A categorical feature: `name=value`.
    pub fn category(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.num(format!("{name}={value}"), 1.0);
        }
    }

    /// A list feature: one boolean per item, `item in name` (bugbug's naming).
    pub fn list<'a>(&mut self, name: &str, items: impl IntoIterator<Item = &'a str>) {
        for item in items {
            self.num(format!("{item} in {name}"), 1.0);
        }
    }

    /// A count, scaled with `ln(1 + n)` so that one huge bug does not dominate.
    pub fn count(&mut self, name: impl Into<String>, n: f64) {
        self.num(name, n.max(0.0).ln_1p());
    }

    /// A token of a text group (counted; weighted later).
    pub fn token(&mut self, group: Group, token: &str) {
        self.tokens.push((feature_hash(group, token), group));
    }

    /// Words and word bigrams of `text` into `group` (a bigram is `"first second"`).
    pub fn words(&mut self, group: Group, text: &str) {
        let lower = text.to_lowercase();
        // A bigram's hash goes on from its first word's: the first word is not read twice.
        let mut previous: Option<Fnv> = None;
        for word in text::tokens(&lower) {
            let hash = Fnv::new(group).str(word);
            self.tokens.push((hash.finish(), group));
            if let Some(first) = previous {
                let pair = first.byte(b' ').str(word).finish();
                self.tokens.push((pair, group));
            }
            previous = Some(hash);
        }
    }

    /// Character n-grams (2..=5) of each word, padded with spaces (sklearn's `char_wb`).
    pub fn char_ngrams(&mut self, text: &str, max_chars: usize) {
        let clipped: String = text
            .chars()
            .take(max_chars)
            .collect::<String>()
            .to_lowercase();
        let mut padded: Vec<char> = Vec::new();
        for word in clipped.split_whitespace() {
            padded.clear();
            padded.push(' ');
            padded.extend(word.chars());
            padded.push(' ');
            // The n-grams starting at one character are prefixes of each other, and so
            // are their hashes: each is the one before it fed one more character.
            for (start, &first) in padded.iter().enumerate() {
                let mut hash = Fnv::new(Group::Chars).char(first);
                for &c in padded.iter().skip(start + 1).take(4) {
                    hash = hash.char(c);
                    self.tokens.push((hash.finish(), Group::Chars));
                }
            }
        }
    }
}

/// FNV-1a, 64-bit, fed piece by piece: the hash of a token without building its string.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    /// Starts a feature's hash with its group.
    pub fn new(group: Group) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325).byte(group.index())
    }

    pub fn byte(self, byte: u8) -> Fnv {
        Fnv((self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3))
    }

    pub fn str(self, s: &str) -> Fnv {
        s.bytes().fold(self, Fnv::byte)
    }

    pub fn char(self, c: char) -> Fnv {
        let mut buf = [0u8; 4];
        self.str(c.encode_utf8(&mut buf))
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// FNV-1a, 64-bit, over the group and the name: the key a model stores for a feature.
pub fn feature_hash(group: Group, name: &str) -> u64 {
    Fnv::new(group).str(name).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text's tokens are the hashes of their names: each word, and each pair of
    /// neighbours as `"first second"` (the names a bundle's vocabulary was hashed from).
    #[test]
    fn words_and_pairs_hash_as_their_names() {
        let mut f = Features::new();
        f.words(Group::Title, "Crash in the Über-menu, crash!");
        let names = [
            "crash",
            "in",
            "crash in",
            "the",
            "in the",
            "über",
            "the über",
            "menu",
            "über menu",
            "crash",
            "menu crash",
        ];
        let expected: Vec<(u64, Group)> = names
            .iter()
            .map(|n| (feature_hash(Group::Title, n), Group::Title))
            .collect();
        assert_eq!(f.tokens, expected);
    }
}
