//! A catalogue file's label rule, applied to one record (bugbug's `get_labels`).
//!
//! The rule gives a class or leaves the record out (`None`); a hand-made label file
//! (bugbug's `labels/*.csv`, bug id → value) wins over the rule where it has the bug.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::models::catalogue::{Condition, Label, LabelFile, Rule};

/// Hand-made labels, per catalogue entry of `label.files`: bug id → raw value.
#[derive(Debug, Default, Clone)]
pub struct LabelFiles {
    /// `(file rule, bug id → value)`, in the order the catalogue lists the files.
    tables: Vec<(LabelFile, HashMap<u64, String>)>,
    /// The files read, for the manifest: path and how many ids each gave.
    pub read: Vec<(String, usize)>,
}

impl LabelFiles {
    /// Reads each CSV of `paths` that a file rule of `label` names (by name or prefix).
    pub fn read(label: &Label, paths: &[&Path]) -> anyhow::Result<LabelFiles> {
        let mut out = LabelFiles::default();
        for rule in &label.files {
            let mut table = HashMap::new();
            for path in paths.iter().filter(|p| names(rule, p)) {
                let n = read_csv(path, &rule.column, &mut table)?;
                out.read.push((path.display().to_string(), n));
            }
            out.tables.push((rule.clone(), table));
        }
        Ok(out)
    }

    /// The class a label file gives `id` (the first file rule that maps its value).
    pub fn class_of(&self, id: u64) -> Option<String> {
        self.tables
            .iter()
            .find_map(|(rule, table)| table.get(&id).and_then(|v| rule.map.get(v)).cloned())
    }

    /// The raw value a label file gives `id` in any table (for conditions).
    fn raw(&self, id: u64) -> impl Iterator<Item = &str> {
        self.tables
            .iter()
            .filter_map(move |(_, t)| t.get(&id).map(String::as_str))
    }
}

/// Does the file rule name this path (`name` exactly, or a prefix before `*`)?
fn names(rule: &LabelFile, path: &Path) -> bool {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    match rule.name.strip_suffix('*') {
        Some(prefix) => file.starts_with(prefix) && file.ends_with(".csv"),
        None => file == rule.name,
    }
}

/// Reads `bug_id` → `column` of one CSV into `table`; returns the rows read.
fn read_csv(path: &Path, column: &str, table: &mut HashMap<u64, String>) -> anyhow::Result<usize> {
    let mut reader =
        csv::Reader::from_path(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let headers = reader.headers()?.clone();
    let id_col = headers.iter().position(|h| h == "bug_id");
    // bugbug's files name their second column differently (is_bug, category, label).
    let value_col = headers
        .iter()
        .position(|h| h == column)
        .or_else(|| (headers.len() >= 2).then_some(1));
    let (Some(id_col), Some(value_col)) = (id_col, value_col) else {
        anyhow::bail!(
            "{}: needs a bug_id column and a {column:?} column",
            path.display()
        );
    };
    let mut n = 0;
    for row in reader.records() {
        let row = row.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (Some(id), Some(value)) = (row.get(id_col), row.get(value_col)) else {
            continue;
        };
        if let Ok(id) = id.trim().parse::<u64>() {
            table.insert(id, value.trim().to_owned());
            n += 1;
        }
    }
    Ok(n)
}

fn text<'a>(bug: &'a Value, field: &str) -> &'a str {
    bug.get(field).and_then(Value::as_str).unwrap_or_default()
}

fn keywords(bug: &Value) -> Vec<&str> {
    bug.get("keywords")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every `(field, removed, added)` change of the bug's history.
fn changes(bug: &Value) -> impl Iterator<Item = (&str, &str, &str)> {
    bug.get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|h| {
            h.get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .map(|c| (text(c, "field_name"), text(c, "removed"), text(c, "added")))
}

/// Does the bug meet the condition (its field, or a label file, has one of the values)?
fn meets(bug: &Value, files: &LabelFiles, condition: &Condition) -> bool {
    let id = bug.get("id").and_then(Value::as_u64).unwrap_or(0);
    let wanted = |v: &str| condition.values.iter().any(|w| w == v);
    match condition.field.as_str() {
        "label_file" => files.raw(id).any(wanted),
        field => wanted(text(bug, field)),
    }
}

/// The class of a bug under `label` (`None`: the bug does not take part).
pub fn bug_class(label: &Label, files: &LabelFiles, bug: &Value) -> Option<String> {
    if label.leave_out.iter().any(|c| meets(bug, files, c)) {
        return None;
    }
    let id = bug.get("id").and_then(Value::as_u64).unwrap_or(0);
    if let Some(class) = files.class_of(id) {
        return Some(class);
    }
    rule_class(&label.rule, files, bug)
}

fn rule_class(rule: &Rule, files: &LabelFiles, bug: &Value) -> Option<String> {
    match rule {
        Rule::Field { field, map } => map.get(text(bug, field)).cloned(),
        Rule::Component {
            products,
            leave_out_components,
            keep_components,
            conflate,
        } => component(
            bug,
            products,
            leave_out_components,
            keep_components,
            *conflate,
        ),
        Rule::Keyword {
            keywords: wanted,
            positive,
            negative,
            negative_only,
        } => {
            let has = keywords(bug).iter().any(|k| wanted.iter().any(|w| w == k));
            let added = changes(bug).any(|(f, _, added)| {
                f == "keywords" && wanted.iter().any(|w| added.contains(w.as_str()))
            });
            if has || added {
                Some(positive.clone())
            } else if negative_only.is_empty() || negative_only.iter().any(|c| meets(bug, files, c))
            {
                Some(negative.clone())
            } else {
                None
            }
        }
        Rule::Moved {
            place,
            out_of,
            into,
        } => moved(bug, place, out_of, into),
        Rule::Resolution {
            value,
            positive,
            negative,
        } => match text(bug, "resolution") {
            "" | "---" => None,
            r if r == value => Some(positive.clone()),
            _ => Some(negative.clone()),
        },
        Rule::StepsToReproduce { positive, negative } => {
            steps_to_reproduce(bug).map(|has| pick(has, positive, negative))
        }
        Rule::Performance { positive, negative } => {
            performance(bug).map(|is| pick(is, positive, negative))
        }
        Rule::Accessibility { positive, negative } => {
            accessibility(bug).map(|is| pick(is, positive, negative))
        }
        Rule::Spam => spam(bug),
        // Commits and issues are labelled by their loaders.
        Rule::BackedOut | Rule::Column { .. } => None,
    }
}

/// `positive` when `yes`, else `negative`.
fn pick(yes: bool, positive: &str, negative: &str) -> String {
    if yes { positive } else { negative }.to_owned()
}

/// The component rule: the bug's `Product::Component` (conflated if asked), unless its
/// product is not among `products` or its component is left out.
fn component(
    bug: &Value,
    products: &[String],
    leave_out: &[String],
    keep: &[String],
    conflate: bool,
) -> Option<String> {
    let product = text(bug, "product");
    if product.is_empty() || (!products.is_empty() && !products.iter().any(|p| p == product)) {
        return None;
    }
    let full = format!("{product}::{}", text(bug, "component"));
    let class = if conflate {
        crate::effects::conflation::class_of(&full)
    } else {
        full
    };
    let left_out = !keep.contains(&class) && leave_out.iter().any(|s| class.ends_with(s.as_str()));
    (!left_out).then_some(class)
}

/// bugbug's steps-to-reproduce rule: `cf_has_str` yes/no; else the `stepswanted` keyword
/// (no steps), or its removal in the history (steps given); else no label.
fn steps_to_reproduce(bug: &Value) -> Option<bool> {
    match text(bug, "cf_has_str") {
        "yes" => return Some(true),
        "no" => return Some(false),
        _ => {}
    }
    if keywords(bug).contains(&"stepswanted") {
        return Some(false);
    }
    changes(bug)
        .any(|(f, removed, _)| f == "keywords" && removed.contains("stepswanted"))
        .then_some(true)
}

/// bugbug's `performancebug` rule: only bugs whose `cf_performance_impact` is set and not
/// `?` or `none` take part.
fn performance(bug: &Value) -> Option<bool> {
    let impact = bug.get("cf_performance_impact")?;
    if matches!(impact.as_str(), Some("?" | "none")) {
        return None;
    }
    Some(crate::features::bug::is_performance_bug(bug))
}

/// bugbug's `accessibility` rule: only bugs that have `cf_accessibility_severity` take part.
fn accessibility(bug: &Value) -> Option<bool> {
    let severity = bug.get("cf_accessibility_severity")?;
    Some(
        severity.as_str() != Some("---")
            || keywords(bug).contains(&"access")
            || (text(bug, "product") == "Firefox" && text(bug, "component") == "Disability Access"),
    )
}

/// bugbug's `componentspecific`: the first move of the bug out of or into `place`
/// (`Product::Component`), seen in its history.
fn moved(bug: &Value, place: &str, out_of: &str, into: &str) -> Option<String> {
    let (product, component) = place.split_once("::")?;
    let mut product_now = text(bug, "product").to_owned();
    // Walk the history: a component change names the product only when it changed too.
    for h in bug
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let entries: Vec<(&str, &str, &str)> = h
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| (text(c, "field_name"), text(c, "removed"), text(c, "added")))
            .collect();
        let product_change = entries.iter().find(|(f, _, _)| *f == "product");
        let (before, after) = match product_change {
            Some((_, removed, added)) => (removed.to_string(), added.to_string()),
            None => (product_now.clone(), product_now.clone()),
        };
        product_now = after.clone();
        for (f, removed, added) in &entries {
            if *f != "component" {
                continue;
            }
            if *removed == component && before == product {
                return Some(out_of.to_owned());
            }
            if *added == component && after == product {
                return Some(into.to_owned());
            }
        }
    }
    None
}

/// bugbug's `spambug` rule.
fn spam(bug: &Value) -> Option<String> {
    let creator = bug
        .get("creator_detail")
        .and_then(|d| d.get("email"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(bug, "creator"));
    if creator.contains("@mozilla") {
        return None;
    }
    let moved_out = changes(bug).any(|(f, removed, _)| f == "product" && removed == "Invalid Bugs");
    if moved_out || text(bug, "resolution") == "FIXED" {
        return Some("ham".into());
    }
    Some(
        if text(bug, "product") == "Invalid Bugs" {
            "spam"
        } else {
            "ham"
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn label(toml_text: &str) -> Label {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_field_rule_maps_values_and_leaves_the_rest_out() {
        let l = label(
            "rule = \"field\"\nfield = \"type\"\nmap = { defect = \"bug\", task = \"nobug\" }",
        );
        let files = LabelFiles::default();
        assert_eq!(
            bug_class(&l, &files, &json!({"type": "defect"})).as_deref(),
            Some("bug")
        );
        assert_eq!(
            bug_class(&l, &files, &json!({"type": "task"})).as_deref(),
            Some("nobug")
        );
        assert_eq!(bug_class(&l, &files, &json!({"type": "other"})), None);
    }

    #[test]
    fn regressions_are_learned_among_defects() {
        let l = label(
            "rule = \"keyword\"\nkeywords = [\"regression\"]\npositive = \"regression\"\n\
             negative = \"not-regression\"\nnegative_only = [{ field = \"type\", values = [\"defect\"] }]",
        );
        let files = LabelFiles::default();
        let class = |bug: Value| bug_class(&l, &files, &bug);
        assert_eq!(
            class(json!({"keywords": ["regression"]})).as_deref(),
            Some("regression")
        );
        assert_eq!(
            class(json!({"type": "defect", "keywords": []})).as_deref(),
            Some("not-regression")
        );
        assert_eq!(class(json!({"type": "enhancement", "keywords": []})), None);
        let added = json!({"type": "task", "keywords": [], "history": [
            {"changes": [{"field_name": "keywords", "removed": "", "added": "regression"}]}]});
        assert_eq!(class(added).as_deref(), Some("regression"));
    }

    #[test]
    fn a_move_out_of_general_is_specific() {
        let l = label(
            "rule = \"moved\"\nplace = \"Firefox::General\"\nout_of = \"specific\"\ninto = \"general\"",
        );
        let files = LabelFiles::default();
        let out = json!({"product": "Firefox", "component": "Tabbed Browser", "history": [
            {"changes": [{"field_name": "component", "removed": "General", "added": "Tabbed Browser"}]}]});
        assert_eq!(bug_class(&l, &files, &out).as_deref(), Some("specific"));
        let into = json!({"product": "Firefox", "component": "General", "history": [
            {"changes": [{"field_name": "product", "removed": "Core", "added": "Firefox"},
                         {"field_name": "component", "removed": "DOM", "added": "General"}]}]});
        assert_eq!(bug_class(&l, &files, &into).as_deref(), Some("general"));
        let core_general = json!({"product": "Core", "component": "DOM", "history": [
            {"changes": [{"field_name": "component", "removed": "General", "added": "DOM"}]}]});
        assert_eq!(
            bug_class(&l, &files, &core_general),
            None,
            "Core::General is another place"
        );
    }

    #[test]
    fn performance_and_accessibility_follow_bugbugs_rules() {
        let files = LabelFiles::default();
        let perf = label("rule = \"performance\"\npositive = \"perf\"\nnegative = \"not-perf\"");
        let class = |bug: Value| bug_class(&perf, &files, &bug);
        assert_eq!(
            class(json!({"keywords": ["perf"]})),
            None,
            "no impact field"
        );
        assert_eq!(class(json!({"cf_performance_impact": "none"})), None);
        assert_eq!(
            class(json!({"cf_performance_impact": "medium"})).as_deref(),
            Some("perf")
        );
        assert_eq!(
            class(json!({"cf_performance_impact": "---", "keywords": ["perf:frontend"]}))
                .as_deref(),
            Some("perf")
        );
        assert_eq!(
            class(json!({"cf_performance_impact": "---", "whiteboard": "[FxPerf:p2]"})).as_deref(),
            Some("perf")
        );
        assert_eq!(
            class(json!({"cf_performance_impact": "---", "keywords": []})).as_deref(),
            Some("not-perf")
        );
        let a11y =
            label("rule = \"accessibility\"\npositive = \"accessibility\"\nnegative = \"other\"");
        let class = |bug: Value| bug_class(&a11y, &files, &bug);
        assert_eq!(
            class(json!({"keywords": ["access"]})),
            None,
            "no severity field"
        );
        assert_eq!(
            class(json!({"cf_accessibility_severity": "s2"})).as_deref(),
            Some("accessibility")
        );
        assert_eq!(
            class(
                json!({"cf_accessibility_severity": "---", "product": "Firefox",
                         "component": "Disability Access"})
            )
            .as_deref(),
            Some("accessibility")
        );
        assert_eq!(
            class(json!({"cf_accessibility_severity": "---", "keywords": []})).as_deref(),
            Some("other")
        );
    }

    #[test]
    fn fenix_components_are_not_conflated_and_geckoview_general_stays() {
        let l = label(
            "rule = \"component\"\nproducts = [\"Firefox for Android\", \"GeckoView\"]\n\
             leave_out_components = [\"::General\"]\nkeep_components = [\"GeckoView::General\"]\n\
             conflate = false",
        );
        let files = LabelFiles::default();
        let class =
            |p: &str, c: &str| bug_class(&l, &files, &json!({"product": p, "component": c}));
        assert_eq!(
            class("Firefox for Android", "Toolbar").as_deref(),
            Some("Firefox for Android::Toolbar")
        );
        assert_eq!(class("Firefox for Android", "General"), None);
        assert_eq!(
            class("GeckoView", "General").as_deref(),
            Some("GeckoView::General")
        );
        assert_eq!(class("Core", "DOM: Events"), None);
    }

    #[test]
    fn spam_follows_bugbugs_rule() {
        let l = label("rule = \"spam\"");
        let files = LabelFiles::default();
        let class = |bug: Value| bug_class(&l, &files, &bug);
        assert_eq!(
            class(json!({"product": "Invalid Bugs", "creator": "a@b.c"})).as_deref(),
            Some("spam")
        );
        assert_eq!(
            class(json!({"product": "Invalid Bugs", "creator": "x@mozilla.com"})),
            None
        );
        assert_eq!(
            class(json!({"product": "Invalid Bugs", "resolution": "FIXED", "creator": "a@b.c"}))
                .as_deref(),
            Some("ham")
        );
    }
}
