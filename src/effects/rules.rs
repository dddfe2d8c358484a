//! The writer's rules, one per model: from a prediction to a change of the bug, or a note
//! saying why not.
//!
//! A rule writes at the higher of two thresholds: bugbot's, from the configuration
//! (`WriterConfig`, a floor), and the bundle's own, which training measured as the lowest
//! probability at which test precision reaches the catalogue's target (`BugScore::writes`).
//! A bundle that could not reach its target on test never writes, and says why.
//!
//! The rules run in a fixed order, and an earlier change can stop a later one: a bug moved
//! to *Invalid Bugs* as spam gets no component move.

use serde_json::{Map, Value, json};

use super::bugzilla::WriterConfig;
use super::conflation;
use crate::models::ModelKind;
use crate::score::{BugScore, Score, Writes, bug_score};

/// What the rules decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The PUT body (without the comment), empty when nothing is to change.
    pub change: Map<String, Value>,
    /// One line per model: what it would change, or why not.
    pub notes: Vec<String>,
    /// What the comment tells a human (and how to revert).
    pub explanations: Vec<String>,
}

/// One model's rule: reads the bug and its score, adds to the plan.
type Rule = fn(&Value, &BugScore, &WriterConfig, &mut Plan);

/// The rules, in the order they apply.
const RULES: &[(ModelKind, Rule)] = &[
    (ModelKind::SPAM, spam),
    (ModelKind::COMPONENT, component),
    (ModelKind::BUGTYPE, bugtype),
    (ModelKind::REGRESSION, regression),
];

/// Decides the change for `bug` (REST shape, with history) from the scores.
pub fn plan(bug: &Value, scores: &[Score], config: &WriterConfig) -> Plan {
    let mut p = Plan {
        change: Map::new(),
        notes: Vec::new(),
        explanations: Vec::new(),
    };
    for (model, rule) in RULES {
        let Some(score) = bug_score(scores, *model) else {
            continue;
        };
        match &score.writes {
            Some(Writes::Never(why)) => p
                .notes
                .push(format!("{model}: its bundle does not write: {why}")),
            Some(Writes::AtOrAbove(at)) => {
                let mut raised = config.clone();
                raise(&mut raised, *model, *at);
                rule(bug, score, &raised, &mut p);
            }
            None => rule(bug, score, config, &mut p),
        }
    }
    p
}

/// Raises `model`'s thresholds in `config` to at least `at` (bugbot's stay floors).
fn raise(config: &mut WriterConfig, model: ModelKind, at: f64) {
    let fields: Vec<&mut f64> = match model {
        ModelKind::SPAM => vec![&mut config.spam],
        ModelKind::COMPONENT => vec![&mut config.component, &mut config.general_component],
        ModelKind::BUGTYPE => vec![&mut config.bugtype],
        ModelKind::REGRESSION => vec![&mut config.regression],
        _ => Vec::new(),
    };
    for threshold in fields {
        *threshold = threshold.max(at);
    }
}

fn field(bug: &Value, name: &str) -> String {
    bug[name].as_str().unwrap_or_default().to_owned()
}

/// Did anyone (a person or bugflow) ever change one of `fields` (the bug's history)?
fn ever_changed(bug: &Value, fields: &[&str]) -> bool {
    bug["history"].as_array().into_iter().flatten().any(|h| {
        h["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| fields.contains(&c["field_name"].as_str().unwrap_or_default()))
    })
}

/// Spam → *Invalid Bugs::General*, RESOLVED INVALID.
fn spam(bug: &Value, s: &BugScore, config: &WriterConfig, p: &mut Plan) {
    let (class, prob, version) = (&s.class, s.confidence(), &s.version);
    if class != "spam" || prob < config.spam {
        p.notes.push(format!(
            "spam: {class} {prob:.3} (needs spam ≥ {})",
            config.spam
        ));
    } else if field(bug, "product") == "Invalid Bugs" || ever_changed(bug, &["product"]) {
        p.notes
            .push("spam: product already Invalid Bugs or changed before".into());
    } else {
        for (k, v) in [
            ("product", "Invalid Bugs"),
            ("component", "General"),
            ("status", "RESOLVED"),
            ("resolution", "INVALID"),
        ] {
            p.change.insert(k.into(), json!(v));
        }
        p.notes
            .push(format!("spam: moving to Invalid Bugs ({prob:.3})"));
        p.explanations.push(format!(
            "is spam (spam model {version}, probability {prob:.2}), so it moves to Invalid Bugs::General as RESOLVED INVALID; \
             to revert, move it back to {}::{} and reopen it", field(bug, "product"), field(bug, "component")));
    }
}

/// A component move, at a higher threshold into a `General` component.
fn component(bug: &Value, s: &BugScore, config: &WriterConfig, p: &mut Plan) {
    let (class, prob, version) = (s.class.as_str(), s.confidence(), &s.version);
    let Some(full) = conflation::component_of(class) else {
        p.notes.push(format!(
            "component: {class} stands for several components: not written"
        ));
        return;
    };
    let (product, component) = full.split_once("::").unwrap_or((full, "General"));
    let threshold = if component == "General" {
        config.general_component
    } else {
        config.component
    };
    if p.change.contains_key("product") {
        p.notes
            .push("component: not changed, the bug is spam".into());
    } else if prob < threshold {
        p.notes
            .push(format!("component: {full} {prob:.3} < {threshold}"));
    } else if product == field(bug, "product") && component == field(bug, "component") {
        p.notes.push(format!("component: already {full}"));
    } else if ever_changed(bug, &["product", "component"]) {
        p.notes
            .push("component: product or component changed before (by a human or bugflow)".into());
    } else {
        p.change.insert("product".into(), json!(product));
        p.change.insert("component".into(), json!(component));
        p.notes.push(format!("component: {full} ({prob:.3})"));
        p.explanations.push(format!(
            "belongs to the '{full}' component (component model {version}, probability {prob:.2}); \
             to revert, move it back to {}::{}",
            field(bug, "product"),
            field(bug, "component")
        ));
    }
}

/// The bug's type (defect, enhancement, task), only when nobody set it before.
fn bugtype(bug: &Value, s: &BugScore, config: &WriterConfig, p: &mut Plan) {
    let (class, prob, version) = (&s.class, s.confidence(), &s.version);
    if prob < config.bugtype {
        p.notes
            .push(format!("bugtype: {class} {prob:.3} < {}", config.bugtype));
    } else if *class == field(bug, "type") {
        p.notes.push(format!("bugtype: already {class}"));
    } else if ever_changed(bug, &["type", "bug_type"]) {
        p.notes.push("bugtype: the type was changed before".into());
    } else {
        p.change.insert("type".into(), json!(class));
        p.notes.push(format!("bugtype: {class} ({prob:.3})"));
        p.explanations.push(format!(
            "is a [{class}](https://firefox-source-docs.mozilla.org/bug-mgmt/guides/bug-types.html) \
             (bugtype model {version}, probability {prob:.2}); to revert, set the type back to {}", field(bug, "type")));
    }
}

/// The `regression` keyword, added (never replacing the keywords).
fn regression(bug: &Value, s: &BugScore, config: &WriterConfig, p: &mut Plan) {
    let (class, prob, version) = (&s.class, s.confidence(), &s.version);
    let has = bug["keywords"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k == "regression");
    if class != "regression" || prob < config.regression {
        p.notes.push(format!(
            "regression: {class} {prob:.3} (needs regression ≥ {})",
            config.regression
        ));
    } else if has || ever_changed(bug, &["keywords"]) {
        p.notes
            .push("regression: keyword present or keywords changed before".into());
    } else {
        p.change
            .insert("keywords".into(), json!({"add": ["regression"]}));
        p.notes
            .push(format!("regression: adding the keyword ({prob:.3})"));
        p.explanations.push(format!(
            "is a regression (regression model {version}, probability {prob:.2}); to revert, remove the regression keyword"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(model: ModelKind, class: &str, p: f64) -> Score {
        Score::Bug(BugScore {
            class: class.into(),
            index: 0,
            labels: vec![class.into()].into(),
            model,
            prob: vec![p],
            version: "v1".into(),
            writes: None,
        })
    }

    fn bug() -> Value {
        json!({"id": 1, "product": "Firefox", "component": "Sync", "type": "defect",
               "keywords": [], "history": []})
    }

    #[test]
    fn thresholds_and_history_decide() {
        let config = WriterConfig::default();
        let c = ModelKind::COMPONENT;
        let p = plan(&bug(), &[pred(c, "Core::DOM", 0.5)], &config);
        assert_eq!(p.change["product"], "Core");
        assert_eq!(
            p.change["component"], "DOM: Core & HTML",
            "conflated class mapped back"
        );
        assert!(
            plan(&bug(), &[pred(c, "Core::DOM", 0.2)], &config)
                .change
                .is_empty()
        );
        // A General prediction needs 0.8.
        assert!(
            plan(&bug(), &[pred(c, "Firefox::General", 0.5)], &config)
                .change
                .is_empty()
        );
        // A class that stands for several components is never written.
        let p = plan(&bug(), &[pred(c, "Core::Graphics", 0.99)], &config);
        assert!(p.change.is_empty(), "{:?}", p.notes);

        let mut touched = bug();
        touched["history"] =
            json!([{"changes": [{"field_name": "component", "removed": "A", "added": "Sync"}]}]);
        let p = plan(&touched, &[pred(c, "Core::DOM", 0.9)], &config);
        assert!(p.change.is_empty(), "a human chose the component before");
        assert!(p.notes[0].contains("changed before"));

        let t = ModelKind::BUGTYPE;
        assert!(
            plan(&bug(), &[pred(t, "task", 0.98)], &config)
                .change
                .is_empty()
        );
        assert_eq!(
            plan(&bug(), &[pred(t, "task", 0.995)], &config).change["type"],
            "task"
        );
    }

    #[test]
    fn the_bundles_threshold_raises_bugbots_and_a_bundle_without_one_never_writes() {
        let config = WriterConfig::default();
        let scored = |p: f64, writes: Option<Writes>| {
            let mut s = pred(ModelKind::COMPONENT, "Core::DOM", p);
            if let Score::Bug(b) = &mut s {
                b.writes = writes;
            }
            plan(&bug(), &[s], &config)
        };
        // bugbot's 0.35 alone would move it; the bundle's 0.93 does not.
        assert!(!scored(0.5, None).change.is_empty());
        let raised = scored(0.5, Some(Writes::AtOrAbove(0.93)));
        assert!(raised.change.is_empty(), "{:?}", raised.notes);
        assert!(raised.notes[0].contains("0.93"), "{:?}", raised.notes);
        assert!(
            !scored(0.95, Some(Writes::AtOrAbove(0.93)))
                .change
                .is_empty()
        );
        // A bundle's threshold under bugbot's does not lower it.
        assert!(scored(0.3, Some(Writes::AtOrAbove(0.1))).change.is_empty());
        let never = scored(
            0.99,
            Some(Writes::Never("precision 0.9 not reached".into())),
        );
        assert!(never.change.is_empty());
        assert!(
            never.notes[0].contains("does not write"),
            "{:?}",
            never.notes
        );
    }

    #[test]
    fn spam_wins_over_a_component_move() {
        let config = WriterConfig::default();
        let p = plan(
            &bug(),
            &[
                pred(ModelKind::SPAM, "spam", 0.97),
                pred(ModelKind::COMPONENT, "Core::DOM", 0.9),
            ],
            &config,
        );
        assert_eq!(p.change["product"], "Invalid Bugs");
        assert_eq!(p.change["resolution"], "INVALID");
        assert!(p.notes.iter().any(|n| n.contains("the bug is spam")));
    }
}
