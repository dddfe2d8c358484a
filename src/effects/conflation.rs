//! bugbug's conflated components: one table for training and for the writer.
//!
//! The component model does not learn every `Product::Component`: bugbug folds the many
//! components of some products into one class (`Core::DOM: Core & HTML` and
//! `Core::DOM: Events` both train `Core::DOM`). Training maps a bug's component to its class
//! with [`class_of`]; the writer maps a predicted class back to a component that exists
//! with [`component_of`] (bugbug's `conflated_components_mapping`). A class that stands for
//! no single component (`Core::Graphics`) cannot be written.

/// (class prefix, the real component a predicted class is written as, if there is one).
pub const CONFLATED: &[(&str, Option<&str>)] = &[
    ("Core::Audio/Video", None),
    ("Core::DOM", Some("Core::DOM: Core & HTML")),
    ("Core::Graphics", None),
    ("Core::IPC", None),
    ("Core::JavaScript", Some("Core::JavaScript Engine")),
    ("Core::Layout", None),
    ("Core::Networking", None),
    ("Core::Print", Some("Core::Printing: Output")),
    ("Core::WebRTC", None),
    ("Toolkit::Password Manager", None),
    ("DevTools", Some("DevTools::General")),
    (
        "External Software Affecting Firefox",
        Some("External Software Affecting Firefox::Other"),
    ),
    ("WebExtensions", Some("WebExtensions::Untriaged")),
    (
        "Firefox Build System",
        Some("Firefox Build System::General"),
    ),
    ("Firefox for Android", Some("Firefox for Android::General")),
];

/// bugbug's `conflated_components_mapping`: each conflated class that stands for one real
/// component, and that component (the other conflated classes are components themselves:
/// `Core::Graphics`).
pub fn mapping() -> impl Iterator<Item = (&'static str, &'static str)> {
    CONFLATED
        .iter()
        .filter_map(|(class, component)| component.map(|c| (*class, c)))
}

/// The class a bug in `product::component` trains: its conflated prefix, or itself.
pub fn class_of(full: &str) -> String {
    CONFLATED
        .iter()
        .find(|(prefix, _)| full.starts_with(prefix))
        .map(|(prefix, _)| (*prefix).to_owned())
        .unwrap_or_else(|| full.to_owned())
}

/// The `Product::Component` a predicted class is written as; `None` for a conflated class
/// that stands for several components.
pub fn component_of(class: &str) -> Option<&str> {
    match CONFLATED.iter().find(|(prefix, _)| *prefix == class) {
        Some((_, component)) => *component,
        None => Some(class),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_back_to_real_components() {
        assert_eq!(class_of("Core::DOM: Events"), "Core::DOM");
        assert_eq!(class_of("Firefox::Sync"), "Firefox::Sync");
        assert_eq!(component_of("Core::DOM"), Some("Core::DOM: Core & HTML"));
        assert_eq!(component_of("Firefox::Sync"), Some("Firefox::Sync"));
        assert_eq!(component_of("Core::Graphics"), None);
        // Every class training can produce is either a real component or mapped to one,
        // or known to be unwritable.
        for (prefix, _) in CONFLATED {
            assert_eq!(class_of(prefix), *prefix);
        }
    }
}
