//! Event-type globs: `order.*`, `*.created`, `visitors.insert`, `*`.

use wildmatch::WildMatch;

/// A set of event-type patterns; matches when any pattern matches. `*` matches any run of
/// characters (dots included), `?` one character.
#[derive(Clone, Debug)]
pub struct TypeMatcher {
    patterns: Vec<(String, WildMatch)>,
}

impl TypeMatcher {
    /// Builds a matcher; an empty list matches every type.
    #[must_use]
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        Self {
            patterns: patterns
                .iter()
                .map(|p| (p.as_ref().to_owned(), WildMatch::new(p.as_ref())))
                .collect(),
        }
    }

    /// True when `ty` matches.
    #[must_use]
    pub fn matches(&self, ty: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|(_, w)| w.matches(ty))
    }

    /// The patterns as written.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_types() {
        let m = TypeMatcher::new(&["order.*"]);
        assert!(m.matches("order.created"));
        assert!(!m.matches("orders.created"));
        assert!(TypeMatcher::new::<&str>(&[]).matches("anything"));
        assert!(TypeMatcher::new(&["*.created", "x"]).matches("a.b.created"));
    }
}
