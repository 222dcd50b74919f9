//! Event-type globs: `order.*`, `*.created`, `visitors.insert`, `*`. Estafeta's own
//! event types (`estafeta.…`, e.g. `estafeta.message.undecodable`) are matched only by
//! patterns that begin with `estafeta.`, so a catch-all route never forwards them by
//! surprise.

use wildmatch::WildMatch;

/// The prefix of the event types Estafeta itself emits.
pub const SYSTEM_PREFIX: &str = "estafeta.";

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

    /// True when `ty` matches. A type in Estafeta's own namespace (`estafeta.…`) matches
    /// only a pattern that names that namespace.
    #[must_use]
    pub fn matches(&self, ty: &str) -> bool {
        if ty.starts_with(SYSTEM_PREFIX) {
            return self
                .patterns
                .iter()
                .any(|(p, w)| p.starts_with(SYSTEM_PREFIX) && w.matches(ty));
        }
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
    fn own_types_need_a_pattern_that_names_them() {
        let ty = "estafeta.message.undecodable";
        assert!(!TypeMatcher::new::<&str>(&[]).matches(ty));
        assert!(!TypeMatcher::new(&["*"]).matches(ty));
        assert!(!TypeMatcher::new(&["*.undecodable"]).matches(ty));
        assert!(TypeMatcher::new(&["estafeta.*"]).matches(ty));
        assert!(TypeMatcher::new(&["estafeta.message.undecodable"]).matches(ty));
        assert!(TypeMatcher::new(&["*"]).matches("estafetaorders.created"));
    }

    #[test]
    fn globs_match_types() {
        let m = TypeMatcher::new(&["order.*"]);
        assert!(m.matches("order.created"));
        assert!(!m.matches("orders.created"));
        assert!(TypeMatcher::new::<&str>(&[]).matches("anything"));
        assert!(TypeMatcher::new(&["*.created", "x"]).matches("a.b.created"));
    }
}
