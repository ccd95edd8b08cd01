//! Scopes: what a key may do.
//!
//! A scope is a name such as `objects.read`. A granted scope may be a
//! wildcard: `*` grants everything, `objects.*` grants every scope that
//! starts with `objects.`. Required scopes are matched against granted ones
//! with [`Scopes::allows`].

use std::fmt;
use std::sync::Arc;

use smol_str::SmolStr;

/// One scope name, such as `objects.read`, `objects.*` or `*`.
///
/// Names use the characters RFC 6749 allows in a scope token (visible ASCII
/// except `"` and `\`), so they can be echoed in a `WWW-Authenticate` header
/// without escaping. A `*` may only stand alone or as the last segment after
/// a dot.
///
/// ```
/// use tower_keyauth::Scope;
/// let wildcard = Scope::new("objects.*").unwrap();
/// assert!(wildcard.covers(&Scope::new("objects.read").unwrap()));
/// assert!(Scope::new("obj*").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(SmolStr);

/// The error for a scope name that breaks the rules of [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {name:?}: {reason}")]
pub struct InvalidScope {
    name: String,
    reason: &'static str,
}

impl Scope {
    /// Validates and wraps a scope name.
    pub fn new(name: &str) -> Result<Self, InvalidScope> {
        validate(name).map_err(|reason| InvalidScope {
            name: name.to_owned(),
            reason,
        })?;
        Ok(Self(SmolStr::new(name)))
    }

    /// The scope as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether this scope is a wildcard (`*` or `prefix.*`).
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with('*')
    }

    /// Whether holding this scope grants `required`.
    ///
    /// `*` covers everything; `objects.*` covers `objects.read`,
    /// `objects.read.all` and `objects.*` itself, but not `objects`; any other
    /// scope covers only itself.
    pub fn covers(&self, required: &Scope) -> bool {
        covers(self.0.as_str(), required.0.as_str())
    }
}

fn validate(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a scope must not be empty");
    }
    if name.len() > 128 {
        return Err("a scope must be at most 128 bytes long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err("a scope may only contain visible ASCII other than '\"' and '\\'");
    }
    if let Some(star) = name.find('*') {
        let is_last = star == name.len() - 1;
        let stands_alone_or_after_dot = star == 0 || name.as_bytes()[star - 1] == b'.';
        if !is_last || !stands_alone_or_after_dot || (star == 0 && name.len() > 1) {
            return Err("'*' may only stand alone or as the last segment after a '.'");
        }
    }
    Ok(())
}

fn covers(granted: &str, required: &str) -> bool {
    if granted == "*" {
        return true;
    }
    match granted.strip_suffix('*') {
        // `prefix` keeps its trailing dot: `objects.` must be followed by something.
        Some(prefix) => required.len() > prefix.len() && required.starts_with(prefix),
        None => granted == required,
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl TryFrom<&str> for Scope {
    type Error = InvalidScope;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

/// A set of granted scopes, cheap to clone.
///
/// A key created without scopes holds [`Scopes::all`] (`*`): the full access
/// of whoever issued it.
///
/// ```
/// use tower_keyauth::Scopes;
/// let granted = Scopes::parse(["objects.read", "workspaces.*"]).unwrap();
/// assert!(granted.allows("objects.read"));
/// assert!(granted.allows("workspaces.read"));
/// assert!(!granted.allows("objects.write"));
/// assert_eq!(granted.to_string(), "objects.read workspaces.*");
/// ```
#[derive(Clone)]
pub struct Scopes(Repr);

/// Most keys hold one or two scopes: those stay inline, so cloning a set on
/// every request touches no shared counter.
#[derive(Clone)]
enum Repr {
    One([Scope; 1]),
    Two([Scope; 2]),
    Many(Arc<[Scope]>),
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Scopes {}

impl std::hash::Hash for Scopes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl Scopes {
    /// Full access: the single scope `*`.
    pub fn all() -> Self {
        Self(Repr::One([Scope(SmolStr::new_static("*"))]))
    }

    /// No access at all.
    pub fn none() -> Self {
        Self(Repr::Many(Arc::from([])))
    }

    fn as_slice(&self) -> &[Scope] {
        match &self.0 {
            Repr::One(scopes) => scopes,
            Repr::Two(scopes) => scopes,
            Repr::Many(scopes) => scopes,
        }
    }

    /// Validates every name and builds the set (duplicates are dropped).
    pub fn parse<I>(names: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        names
            .into_iter()
            .map(|name| Scope::new(name.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::from_scopes)
    }

    /// Parses a space-separated list, as in an OAuth `scope` attribute.
    pub fn parse_space_separated(text: &str) -> Result<Self, InvalidScope> {
        Self::parse(text.split(' ').filter(|name| !name.is_empty()))
    }

    /// Builds the set from validated scopes (duplicates are dropped).
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut unique: Vec<Scope> = Vec::new();
        for scope in scopes {
            if !unique.contains(&scope) {
                unique.push(scope);
            }
        }
        let mut inline = unique.into_iter();
        match (inline.next(), inline.next(), inline.next()) {
            (Some(only), None, _) => Self(Repr::One([only])),
            (Some(first), Some(second), None) => Self(Repr::Two([first, second])),
            (first, second, third) => Self(Repr::Many(
                first
                    .into_iter()
                    .chain(second)
                    .chain(third)
                    .chain(inline)
                    .collect(),
            )),
        }
    }

    /// Whether some granted scope covers `required` (see [`Scope::covers`]).
    /// A `required` name that is not a valid scope is never allowed.
    pub fn allows(&self, required: &str) -> bool {
        validate(required).is_ok()
            && self
                .as_slice()
                .iter()
                .any(|granted| covers(granted.as_str(), required))
    }

    /// Whether every scope of `required` is allowed.
    pub fn allows_all(&self, required: &Scopes) -> bool {
        required.iter().all(|scope| self.allows(scope.as_str()))
    }

    /// Whether this set grants everything (`*`).
    pub fn is_all(&self) -> bool {
        self.as_slice().iter().any(|scope| scope.as_str() == "*")
    }

    /// Whether this set grants nothing.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The scopes allowed by both sets, e.g. a personal token's own scopes
    /// within its owner's membership of an organization.
    ///
    /// ```
    /// use tower_keyauth::Scopes;
    /// let token = Scopes::parse(["objects.*", "keys.read"]).unwrap();
    /// let member = Scopes::parse(["objects.read", "objects.write"]).unwrap();
    /// assert_eq!(token.intersection(&member).to_string(), "objects.read objects.write");
    /// ```
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        if self.is_all() {
            return other.clone();
        }
        if other.is_all() {
            return self.clone();
        }
        // Scopes form a hierarchy, so two grants overlap only when one covers
        // the other, and the overlap is the narrower of the two.
        let mut overlap = Vec::new();
        for mine in self.iter() {
            for theirs in other.iter() {
                if mine.covers(theirs) {
                    overlap.push(theirs.clone());
                } else if theirs.covers(mine) {
                    overlap.push(mine.clone());
                }
            }
        }
        Self::from_scopes(overlap)
    }

    /// The scopes in this set.
    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.as_slice().iter()
    }

    /// How many scopes the set holds.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl Default for Scopes {
    /// Full access, the default of a key issued without scopes.
    fn default() -> Self {
        Self::all()
    }
}

impl<'a> IntoIterator for &'a Scopes {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self::from_scopes(iter)
    }
}

impl From<Scope> for Scopes {
    fn from(scope: Scope) -> Self {
        Self(Repr::One([scope]))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl fmt::Display for Scopes {
    /// Space separated, as in an OAuth `scope` attribute.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(names: &[&str]) -> Scopes {
        Scopes::parse(names).unwrap()
    }

    #[test]
    fn exact_names_match_only_themselves() {
        let granted = scopes(&["objects.read"]);
        assert!(granted.allows("objects.read"));
        assert!(!granted.allows("objects.write"));
        assert!(!granted.allows("objects"));
        assert!(!granted.allows("objects.read.all"));
    }

    #[test]
    fn star_grants_everything() {
        let granted = Scopes::all();
        assert!(granted.allows("objects.read"));
        assert!(granted.allows("anything"));
        assert!(granted.allows("*"));
        assert!(granted.is_all());
    }

    #[test]
    fn prefix_wildcards_cover_their_subtree_only() {
        let granted = scopes(&["objects.*"]);
        assert!(granted.allows("objects.read"));
        assert!(granted.allows("objects.read.all"));
        assert!(granted.allows("objects.*"));
        assert!(!granted.allows("objects"));
        assert!(!granted.allows("objectsx.read"));
        assert!(!granted.allows("workspaces.read"));
        assert!(!granted.allows("*"));
    }

    #[test]
    fn a_narrow_grant_does_not_satisfy_a_wildcard_requirement() {
        assert!(!scopes(&["objects.read"]).allows("objects.*"));
    }

    #[test]
    fn invalid_names_are_rejected() {
        for bad in [
            "",
            "a b",
            "obj*",
            "*.read",
            "**",
            "a.*.b",
            "quote\"",
            "back\\slash",
            "é",
        ] {
            assert!(Scope::new(bad).is_err(), "{bad:?} should be invalid");
        }
        for good in ["*", "objects.*", "objects.read", "a:b", "keys.write"] {
            assert!(Scope::new(good).is_ok(), "{good:?} should be valid");
        }
        assert!(!Scopes::all().allows("not valid"));
    }

    #[test]
    fn an_empty_set_allows_nothing() {
        assert!(!Scopes::none().allows("objects.read"));
        assert!(Scopes::none().is_empty());
    }

    #[test]
    fn intersection_keeps_the_narrower_grant() {
        let token = scopes(&["objects.*", "keys.read"]);
        let member = scopes(&["objects.read", "workspaces.read"]);
        assert_eq!(token.intersection(&member), scopes(&["objects.read"]));
        assert_eq!(member.intersection(&token), scopes(&["objects.read"]));
        assert_eq!(Scopes::all().intersection(&member), member);
        assert_eq!(member.intersection(&Scopes::all()), member);
        assert!(token.intersection(&scopes(&["billing.read"])).is_empty());
    }

    #[test]
    fn duplicates_are_dropped_and_display_is_space_separated() {
        let set = scopes(&["a.read", "a.read", "b.*"]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "a.read b.*");
        assert_eq!(Scopes::parse_space_separated(" a.read  b.* ").unwrap(), set);
    }
}
