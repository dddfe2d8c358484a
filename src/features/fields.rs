//! The fields of a bug that the bug models, their answers and the Bugzilla writer's rules
//! read, and a reader of a stored bug that keeps only those.
//!
//! A full bug as Bugzilla's REST API gives it is about 13 KB of JSON: some 70 top-level
//! fields (release flags, people and their details, dates), every comment with its author
//! and times, every change of its history, the people in its CC list. The features
//! ([`super::bug`]) read a few dozen of those fields, a comment's text, a change's field
//! and new value; the writer's rules ([`crate::effects::rules`]) the product, component,
//! type, keywords and which fields the history changed. A replay reads the bugs stored on an
//! archive line (a bug event's full bug, a prediction request's bugs: see
//! [`crate::message::Enrichment`]) with [`KEPT`]: the same features, answers and planned
//! writes, without building (and then dropping) a tree of the fields nothing reads.
//!
//! **A field a feature or a rule starts to read must be listed here**: the test below reads
//! each of the 58 fixture bugs and the 1,014 full BMO bugs as they are and as [`KEPT`]
//! reads them, and fails on the first feature, or the first planned write, that differs.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What of a JSON value is kept.
#[derive(Debug)]
pub enum Keep {
    /// The whole value.
    All,
    /// Of an object, the fields named (a name ending in `*` keeps every field it begins);
    /// any other value is kept whole.
    Fields(&'static [(&'static str, Keep)]),
    /// Of an array, each element as the given rule keeps it; any other value whole.
    Each(&'static Keep),
}

/// What a bug model and its answer read of a bug: the fields of [`super::bug`]'s
/// extractors and the text features (`summary`, each comment's `text`), whether it is
/// private (`is_private`, `groups`), its `id` and `last_change_time` (the API's answer);
/// and the writer's: its rules' fields (all among the extractors'), `creation_time` (the
/// age it waits for).
pub static KEPT: Keep = Keep::Fields(&[
    ("alias", Keep::All),
    (
        "attachments",
        Keep::Each(&Keep::Fields(&[
            ("content_type", Keep::All),
            ("is_patch", Keep::All),
        ])),
    ),
    ("blocks", Keep::All),
    ("cf_crash_signature", Keep::All),
    ("cf_has_regression_range", Keep::All),
    ("cf_has_str", Keep::All),
    ("cf_performance", Keep::All),
    ("cf_performance_impact", Keep::All),
    ("comment_count", Keep::All),
    (
        "comments",
        Keep::Each(&Keep::Fields(&[("text", Keep::All)])),
    ),
    ("component", Keep::All),
    ("creation_time", Keep::All),
    ("creator", Keep::All),
    (
        "creator_detail",
        Keep::Fields(&[("email", Keep::All), ("login", Keep::All)]),
    ),
    ("filed_via", Keep::All),
    ("groups", Keep::All),
    (
        "history",
        Keep::Each(&Keep::Fields(&[(
            "changes",
            Keep::Each(&Keep::Fields(&[
                ("added", Keep::All),
                ("field_name", Keep::All),
            ])),
        )])),
    ),
    ("id", Keep::All),
    ("is_private", Keep::All),
    ("keywords", Keep::All),
    ("last_change_time", Keep::All),
    ("op_sys", Keep::All),
    ("platform", Keep::All),
    ("product", Keep::All),
    ("severity", Keep::All),
    ("summary", Keep::All),
    ("type", Keep::All),
    ("url", Keep::All),
    ("whiteboard", Keep::All),
    ("cf_status_firefox*", Keep::All),
]);

impl Keep {
    /// The rule for field `name` of an object kept by `fields`, if it is kept.
    fn field(fields: &'static [(&'static str, Keep)], name: &str) -> Option<&'static Keep> {
        fields.iter().find_map(|(kept, rule)| {
            let matches = match kept.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == *kept,
            };
            matches.then_some(rule)
        })
    }
}

/// `Option<Vec<bug>>`, each bug read as [`KEPT`] keeps it: for `#[serde(deserialize_with)]`.
pub fn kept_bugs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
    struct Bugs;
    impl<'de> Visitor<'de> for Bugs {
        type Value = Option<Vec<Value>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of bugs")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut bugs = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(bug) = seq.next_element_seed(&KEPT)? {
                bugs.push(bug);
            }
            Ok(Some(bugs))
        }
    }
    d.deserialize_any(Bugs)
}

/// `Option<Arc<bug>>`, read as [`KEPT`] keeps it: for `#[serde(deserialize_with)]`.
pub fn kept_bug<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Value>>, D::Error> {
    match KEPT.deserialize(d)? {
        Value::Null => Ok(None),
        bug => Ok(Some(Arc::new(bug))),
    }
}

impl<'de> DeserializeSeed<'de> for &'static Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => serde::Deserialize::deserialize(d),
            rule => d.deserialize_any(Kept(rule)),
        }
    }
}

/// A value as `.0` keeps it (a [`Keep::Fields`] or a [`Keep::Each`]).
struct Kept(&'static Keep);

impl<'de> Visitor<'de> for Kept {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(Key(name)) = map.next_key()? {
            // An object where a rule expected a list is kept whole, as any other
            // unexpected value.
            let rule = match self.0 {
                Keep::Fields(fields) => Keep::field(fields, &name),
                _ => Some(&Keep::All),
            };
            match rule {
                Some(rule) => {
                    let value = map.next_value_seed(rule)?;
                    kept.insert(name.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let rule = match self.0 {
            Keep::Each(rule) => *rule,
            _ => &Keep::All,
        };
        let mut kept = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element_seed(rule)? {
            kept.push(value);
        }
        Ok(Value::Array(kept))
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// An object's key, borrowed from the JSON text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effects::bugzilla::WriterConfig;
    use crate::effects::rules::plan;
    use crate::features::bug::extract_all;
    use crate::models::ModelKind;
    use crate::pipeline::filter::is_private;
    use crate::score::{BugScore, Score};

    fn kept(bug: &str) -> Value {
        KEPT.deserialize(&mut serde_json::Deserializer::from_str(bug))
            .expect("a bug")
    }

    /// Every feature of each of the 58 fixture bugs and the 1,014 full BMO bugs (comments,
    /// history, attachments) is the same read whole and read as [`KEPT`] keeps it, and so
    /// are what the answer reads (id, privacy, last change) and the change the writer's
    /// rules plan on a confident answer of each model; and most of a bug's values (its
    /// fields, comments' fields, changes) are not kept. Fails when a feature or a rule reads
    /// a field [`KEPT`] does not list.
    #[test]
    fn a_bug_read_as_kept_has_every_feature_of_the_whole_bug() {
        use std::io::BufRead;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data");
        fn values(v: &Value) -> usize {
            1 + match v {
                Value::Array(a) => a.iter().map(values).sum(),
                Value::Object(o) => o.values().map(values).sum(),
                _ => 0,
            }
        }
        // Confident answers of each model the writer acts on: each rule reads the bug.
        let config = WriterConfig::default();
        let sure = |model, class: &str| {
            Score::Bug(BugScore {
                class: class.into(),
                index: 0,
                labels: vec![class.into()].into(),
                model,
                prob: vec![0.999],
                version: "v1".into(),
                writes: None,
            })
        };
        let writes = [
            vec![sure(ModelKind::SPAM, "spam")],
            vec![sure(ModelKind::COMPONENT, "Core::DOM: Core & HTML")],
            vec![sure(ModelKind::BUGTYPE, "task")],
            vec![sure(ModelKind::REGRESSION, "regression")],
        ];
        let (mut bugs, mut whole_values, mut kept_values, mut changes) = (0, 0, 0, 0);
        for file in ["bugs.jsonl", "bugzilla/bugs-2009-2018-full.jsonl.zst"] {
            let reader = crate::train::data::open(&root.join(file)).expect("a fixture");
            for line in reader.lines() {
                let line = line.expect("a line");
                let whole: Value = serde_json::from_str(&line).expect("a bug");
                let slim = kept(&line);
                let id = &whole["id"];
                assert_eq!(extract_all(&slim), extract_all(&whole), "bug {id}");
                assert_eq!(slim["id"], whole["id"]);
                assert_eq!(slim["last_change_time"], whole["last_change_time"]);
                assert_eq!(slim["creation_time"], whole["creation_time"]);
                for scores in &writes {
                    let planned = plan(&whole, scores, &config);
                    changes += usize::from(!planned.change.is_empty());
                    assert_eq!(plan(&slim, scores, &config), planned, "bug {id}");
                }
                assert_eq!(is_private(&slim), is_private(&whole), "bug {id}");
                bugs += 1;
                whole_values += values(&whole);
                kept_values += values(&slim);
            }
        }
        assert!(bugs > 1_000, "{bugs} bugs");
        assert!(changes > 1_000, "{changes} planned changes");
        assert!(
            kept_values * 2 < whole_values,
            "{kept_values} of {whole_values} JSON values kept"
        );
    }

    /// A private bug stays private read as kept, and a value of an unexpected shape is kept
    /// whole rather than refused (`comments` an object, `history` a string).
    #[test]
    fn privacy_and_odd_shapes_are_kept() {
        let bug = kept(r#"{"id": 7, "groups": ["core-security"], "cc": ["a@b.c"]}"#);
        assert!(is_private(&bug));
        assert_eq!(
            bug,
            serde_json::json!({"id": 7, "groups": ["core-security"]})
        );
        let odd = kept(r#"{"comments": {"text": "x", "n": 1}, "history": "none", "x\u0041": 1}"#);
        assert_eq!(
            odd,
            serde_json::json!({"comments": {"text": "x", "n": 1}, "history": "none"})
        );
    }
}
