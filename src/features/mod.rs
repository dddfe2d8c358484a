//! Feature extraction: from a bug, a commit or an issue to a sparse feature list.
//!
//! Extractors emit [`Feature`]s — a group, a name and a value. The group says how the value is
//! weighted when the model is trained and applied (see [`Group`]): text tokens are TF-IDF
//! weighted and L2-normalised per group, as sklearn's `TfidfVectorizer` does for bugbug;
//! structured features keep their value. Names are hashed to 64 bits, so a model stores no
//! strings, only the hashes of the features it kept.

pub mod bug;
pub mod commit;
pub mod fields;
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

/// A set of groups, a bit each: the groups some model reads, so that a bug's text is read
/// only for them ([`bug::extract_groups`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Groups(u8);

impl Groups {
    pub const ALL: Groups = Groups((1 << GROUPS) - 1);
    pub const NONE: Groups = Groups(0);

    /// The set of `groups`.
    pub fn of(groups: impl IntoIterator<Item = Group>) -> Groups {
        groups
            .into_iter()
            .fold(Groups::NONE, |set, g| Groups(set.0 | 1 << g.index()))
    }

    pub fn contains(self, group: Group) -> bool {
        self.0 & (1 << group.index()) != 0
    }

    pub fn union(self, other: Groups) -> Groups {
        Groups(self.0 | other.0)
    }
}

/// The union of several sets (the groups some bundle of several reads).
impl FromIterator<Groups> for Groups {
    fn from_iter<I: IntoIterator<Item = Groups>>(sets: I) -> Groups {
        sets.into_iter().fold(Groups::NONE, Groups::union)
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
    ///
    /// Most of a bug's text is ASCII, where lower case is a byte's own affair: those
    /// stretches are read in one pass from their bytes ([`ascii_words`](Self::ascii_words)).
    /// Only the pieces around a character outside ASCII, from the space or line feed before
    /// it to the one after, are lower-cased by Unicode's rules into a new string
    /// ([`any_words`](Self::any_words)). Cutting there changes nothing: no word runs over a
    /// space, and Unicode's one rule that reads a character's neighbours (a final sigma)
    /// looks no further than a space either, so the pieces lower-case as the whole text
    /// does. A bigram joins the last word of one stretch to the first of the next.
    pub fn words(&mut self, group: Group, text: &str) {
        // Room for a word and a bigram every six bytes (English averages a word and a space
        // in about that): the vector is not grown and copied a dozen times over a long
        // comment thread.
        self.tokens.reserve(text.len() / 3);
        let bytes = text.as_bytes();
        let is_break = |b: &u8| *b == b' ' || *b == b'\n';
        let mut previous: Option<Fnv> = None;
        let mut from = 0;
        while from < bytes.len() {
            let rest = &bytes[from..];
            let Some(outside) = rest.iter().position(|b| !b.is_ascii()) else {
                self.ascii_words(group, rest, &mut previous);
                break;
            };
            let outside = from + outside;
            let start = bytes[from..outside]
                .iter()
                .rposition(is_break)
                .map_or(from, |at| from + at + 1);
            let end = bytes[outside..]
                .iter()
                .position(is_break)
                .map_or(bytes.len(), |at| outside + at);
            self.ascii_words(group, &bytes[from..start], &mut previous);
            // `start` follows an ASCII byte and `end` is one (or the end): both fall
            // between characters.
            if let Some(piece) = text.get(start..end) {
                self.any_words(group, piece, &mut previous);
            }
            from = end;
        }
    }

    /// The words of any text: lower-cased into a new string (Unicode's rules), then cut by
    /// [`text::tokens`]. A bigram's hash goes on from its first word's (`previous`, which
    /// is left at the last word): the first word is not read twice.
    fn any_words(&mut self, group: Group, text: &str, previous: &mut Option<Fnv>) {
        let lower = text.to_lowercase();
        for word in text::tokens(&lower) {
            let hash = Fnv::new(group).str(word);
            self.tokens.push((hash.finish(), group));
            if let Some(first) = *previous {
                let pair = first.byte(b' ').str(word).finish();
                self.tokens.push((pair, group));
            }
            *previous = Some(hash);
        }
    }

    /// The same tokens as [`any_words`](Self::any_words) for ASCII bytes, in one pass and
    /// no copy: a word's runs are the same in either case, so each byte is lower-cased as
    /// it is hashed, into the word's hash and its bigram's at once (two independent
    /// multiplications a byte).
    fn ascii_words(&mut self, group: Group, bytes: &[u8], previous: &mut Option<Fnv>) {
        let mut at = 0;
        while at < bytes.len() {
            while bytes.get(at).is_some_and(|b| !text::is_ascii_word(*b)) {
                at += 1;
            }
            let start = at;
            let mut word = Fnv::new(group);
            let mut pair = previous.map(|first| first.byte(b' '));
            while let Some(&b) = bytes.get(at).filter(|b| text::is_ascii_word(**b)) {
                let lower = b.to_ascii_lowercase();
                word = word.byte(lower);
                pair = pair.map(|p| p.byte(lower));
                at += 1;
            }
            if at - start < 2 {
                continue;
            }
            self.tokens.push((word.finish(), group));
            if let Some(pair) = pair {
                self.tokens.push((pair.finish(), group));
            }
            *previous = Some(word);
        }
    }

    /// Character n-grams (2..=5) of each word, padded with spaces (sklearn's `char_wb`), of
    /// the first `max_chars` characters of `text`.
    pub fn char_ngrams(&mut self, text: &str, max_chars: usize) {
        if text.is_ascii() {
            self.ascii_char_ngrams(&text.as_bytes()[..text.len().min(max_chars)]);
        } else {
            self.any_char_ngrams(text, max_chars);
        }
    }

    /// [`char_ngrams`](Self::char_ngrams) of any text: clipped, lower-cased (Unicode's
    /// rules) and split at white space into new strings, each word's characters padded.
    fn any_char_ngrams(&mut self, text: &str, max_chars: usize) {
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
            self.padded_ngrams(&padded, Fnv::char);
        }
    }

    /// The n-grams (2..=5 items) of one padded word, each item fed to its hash by `feed`.
    /// The n-grams starting at one item are prefixes of each other, and so are their
    /// hashes: each is the one before it fed one more item.
    fn padded_ngrams<T: Copy>(&mut self, padded: &[T], feed: impl Fn(Fnv, T) -> Fnv) {
        for (start, &first) in padded.iter().enumerate() {
            let mut hash = feed(Fnv::new(Group::Chars), first);
            for &item in padded.iter().skip(start + 1).take(4) {
                hash = feed(hash, item);
                self.tokens.push((hash.finish(), Group::Chars));
            }
        }
    }

    /// The same n-grams of ASCII bytes (a character is a byte, its lower case the byte's):
    /// no string made, each word lower-cased and padded in one reused buffer; white space
    /// as `char::is_whitespace` has it ([`text::is_ascii_white_space`]).
    fn ascii_char_ngrams(&mut self, bytes: &[u8]) {
        // Four n-grams start at each byte but the last few of a word.
        self.tokens.reserve(4 * (bytes.len() + 2));
        let mut padded: Vec<u8> = Vec::with_capacity(bytes.len().min(64) + 2);
        let words = bytes.split(|b| text::is_ascii_white_space(*b));
        for word in words.filter(|w| !w.is_empty()) {
            padded.clear();
            padded.push(b' ');
            padded.extend(word.iter().map(u8::to_ascii_lowercase));
            padded.push(b' ');
            self.padded_ngrams(&padded, Fnv::byte);
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

    /// A text's words taken in stretches (ASCII ones from their bytes, the pieces around
    /// other characters lower-cased apart) are the words of the whole text lower-cased and
    /// cut at once: random texts of ASCII letters of both cases, digits, `_`, white space,
    /// punctuation, and characters whose lower case is not themselves or reads their
    /// neighbours (Σ, İ), a combining mark, a letter that is no word character's (ª is, ©
    /// is not), curly quotes; words of one to four characters.
    #[test]
    fn words_in_stretches_are_the_words_of_the_whole_text() {
        const CHARS: &[char] = &[
            'a', 'Z', 'q', '_', '7', ' ', ' ', '.', '\n', '-', '\'', '\t', ',', 'B', 'Σ', 'İ', 'é',
            'Ж', '\u{301}', 'ª', '©', '’', '中',
        ];
        let mut rng = crate::models::linear::SplitMix(0x2545_f491_4f6c_dd1d);
        for round in 0..3_000 {
            let len = round % 60;
            // Half the texts ASCII only, half with the others too.
            let pool = if round % 2 == 0 { 14 } else { CHARS.len() };
            let text: String = (0..len).map(|_| CHARS[rng.below(pool)]).collect();
            let mut stretches = Features::new();
            stretches.words(Group::Body, &text);
            let mut whole = Features::new();
            whole.any_words(Group::Body, &text, &mut None);
            assert_eq!(stretches.tokens, whole.tokens, "{text:?}");
        }
    }

    /// An ASCII text's character n-grams, taken from its bytes, are those the characters'
    /// path takes: random texts of letters of both cases, digits, punctuation and every
    /// ASCII white space (vertical tab and form feed among them), clipped anywhere.
    #[test]
    fn ascii_char_ngrams_are_those_of_any_text() {
        const BYTES: &[u8] = b"aZq_7 .-\t\n\x0B\x0C\rB'";
        let mut rng = crate::models::linear::SplitMix(0x9e37_79b9_7f4a_7c15);
        for round in 0..2_000 {
            let len = round % 50;
            let text: String = (0..len)
                .map(|_| char::from(BYTES[rng.below(BYTES.len())]))
                .collect();
            let max_chars = [0, 1, 7, 200][round % 4];
            let (mut ascii, mut any) = (Features::new(), Features::new());
            ascii.ascii_char_ngrams(&text.as_bytes()[..text.len().min(max_chars)]);
            any.any_char_ngrams(&text, max_chars);
            assert_eq!(ascii.tokens, any.tokens, "{text:?} clipped at {max_chars}");
        }
    }
}
