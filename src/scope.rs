//! Scopes: what a key may do.
//!
//! A scope is a name such as `objects.read`. A granted scope may be a
//! wildcard: `*` grants everything, `objects.*` grants every scope that
//! starts with `objects.`. Required scopes are matched against granted ones
//! with [`Scopes::allows`].
//!
//! Every set is bounded ([`Scopes::MAX_COUNT`] names of at most
//! [`Scope::MAX_LEN`] bytes), so no stored key can make a request expensive.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use smol_str::SmolStr;

/// One scope name, such as `objects.read`, `objects.*` or `*`.
///
/// Names use the characters RFC 6749 allows in a scope token (visible ASCII
/// except `"` and `\`), so they can be echoed in a `WWW-Authenticate` header
/// without escaping, and are at most [`Scope::MAX_LEN`] bytes long. A `*`
/// may only stand alone or as the last segment after a dot.
///
/// ```
/// use tower_keyauth::scope::Scope;
/// let wildcard = Scope::new("objects.*").unwrap();
/// assert!(wildcard.covers(&Scope::new("objects.read").unwrap()));
/// assert!(Scope::new("obj*").is_err());
/// assert!(Scope::new(&"a".repeat(Scope::MAX_LEN + 1)).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(SmolStr);

/// The error for a scope name that breaks the rules of [`Scope`], or a set
/// larger than [`Scopes::MAX_COUNT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidScope {
    /// The offending name, shortened for display; `None` when the set as a
    /// whole is at fault.
    name: Option<String>,
    reason: Cow<'static, str>,
}

/// How much of an offending name an error shows.
const SHOWN_NAME_CHARS: usize = 40;

impl InvalidScope {
    fn name(name: &str, reason: &'static str) -> Self {
        let shown = match name.char_indices().nth(SHOWN_NAME_CHARS) {
            Some((cut, _)) => format!("{}…", &name[..cut]),
            None => name.to_owned(),
        };
        Self {
            name: Some(shown),
            reason: Cow::Borrowed(reason),
        }
    }

    pub(crate) fn too_many() -> Self {
        Self {
            name: None,
            reason: Cow::Owned(format!("a set holds at most {} scopes", Scopes::MAX_COUNT)),
        }
    }

    fn text_too_long() -> Self {
        Self {
            name: None,
            reason: Cow::Owned(format!(
                "a list of scopes is at most {} bytes long",
                MAX_TEXT_LEN
            )),
        }
    }
}

impl fmt::Display for InvalidScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "invalid scope {name:?}: {}", self.reason),
            None => write!(f, "invalid scopes: {}", self.reason),
        }
    }
}

impl std::error::Error for InvalidScope {}

impl Scope {
    /// The longest scope name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates and wraps a scope name.
    pub fn new(name: &str) -> Result<Self, InvalidScope> {
        validate(name).map_err(|reason| InvalidScope::name(name, reason))?;
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
    if name.len() > Scope::MAX_LEN {
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

/// A set of granted scopes, cheap to clone, kept sorted and without
/// duplicates (so two sets with the same scopes are equal, whatever the
/// order they were given in).
///
/// A key created without scopes holds [`Scopes::all`] (`*`): the full access
/// of whoever issued it. A set holds at most [`Scopes::MAX_COUNT`] names.
///
/// ```
/// use tower_keyauth::Scopes;
/// let granted = Scopes::parse(["workspaces.*", "objects.read"]).unwrap();
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

/// The longest space-separated list [`Scopes::parse_space_separated`]
/// reads: every name at its longest, one space after each.
pub(crate) const MAX_TEXT_LEN: usize = Scopes::MAX_COUNT * (Scope::MAX_LEN + 1);

/// Up to this many scopes a linear scan beats binary searches.
const LINEAR_SCAN_MAX: usize = 8;

impl Scopes {
    /// The most scopes one set may hold: what a key, a membership or a
    /// [`RequireScopes`](crate::RequireScopes) may name. Parsing or building
    /// a larger set fails, and a store refuses to read back a key that
    /// holds more (the request gets a 503, never a pass).
    pub const MAX_COUNT: usize = 256;

    /// Full access: the single scope `*`.
    pub fn all() -> Self {
        Self(Repr::One([Scope(SmolStr::new_static("*"))]))
    }

    /// No access at all.
    pub fn none() -> Self {
        Self(Repr::Many(Arc::from([])))
    }

    /// The heap memory the set holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        let names: usize = self
            .as_slice()
            .iter()
            .map(|scope| crate::ids::smol_str_heap_bytes(&scope.0))
            .sum();
        match &self.0 {
            Repr::One(_) | Repr::Two(_) => names,
            Repr::Many(scopes) => {
                names + 2 * std::mem::size_of::<usize>() + std::mem::size_of_val(&**scopes)
            }
        }
    }

    fn as_slice(&self) -> &[Scope] {
        match &self.0 {
            Repr::One(scopes) => scopes,
            Repr::Two(scopes) => scopes,
            Repr::Many(scopes) => scopes,
        }
    }

    /// Validates every name and builds the set (duplicates are dropped).
    /// Fails on an invalid name or on more than [`Scopes::MAX_COUNT`]
    /// names, without reading further.
    ///
    /// ```
    /// use tower_keyauth::Scopes;
    /// let too_many = (0..=Scopes::MAX_COUNT).map(|i| format!("objects.{i}"));
    /// assert!(Scopes::parse(too_many).is_err());
    /// ```
    pub fn parse<I>(names: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::collect_bounded(names.into_iter().map(|name| Scope::new(name.as_ref())))
    }

    /// Parses a space-separated list, as in an OAuth `scope` attribute.
    pub fn parse_space_separated(text: &str) -> Result<Self, InvalidScope> {
        if text.len() > MAX_TEXT_LEN {
            return Err(InvalidScope::text_too_long());
        }
        Self::parse(text.split(' ').filter(|name| !name.is_empty()))
    }

    /// Builds the set from validated scopes (duplicates are dropped). Fails
    /// on more than [`Scopes::MAX_COUNT`] of them.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, InvalidScope> {
        Self::collect_bounded(scopes.into_iter().map(Ok))
    }

    /// Collects at most [`Scopes::MAX_COUNT`] scopes, stopping at the first
    /// invalid one or the first one too many, without reading further.
    fn collect_bounded(
        scopes: impl Iterator<Item = Result<Scope, InvalidScope>>,
    ) -> Result<Self, InvalidScope> {
        let mut collected = Vec::new();
        for scope in scopes {
            if collected.len() == Self::MAX_COUNT {
                return Err(InvalidScope::too_many());
            }
            collected.push(scope?);
        }
        Ok(Self::from_vec(collected))
    }

    /// Sorts and drops duplicates: O(n log n).
    fn from_vec(mut scopes: Vec<Scope>) -> Self {
        scopes.sort_unstable();
        scopes.dedup();
        let mut inline = scopes.into_iter();
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
    ///
    /// Costs O(log n) binary searches per `.` in `required` for large sets,
    /// a scan for small ones.
    pub fn allows(&self, required: &str) -> bool {
        validate(required).is_ok() && self.allows_valid(required)
    }

    /// [`allows`](Self::allows) for a name known to be valid.
    fn allows_valid(&self, required: &str) -> bool {
        let granted = self.as_slice();
        if granted.len() <= LINEAR_SCAN_MAX {
            return granted.iter().any(|scope| covers(scope.as_str(), required));
        }
        // The scopes that can cover `required` are `*`, `required` itself,
        // and `prefix.*` for each prefix of it that ends in a dot.
        if contains(granted, "*", "") || contains(granted, required, "") {
            return true;
        }
        required
            .bytes()
            .enumerate()
            .filter(|&(_, byte)| byte == b'.')
            .any(|(dot, _)| contains(granted, &required[..=dot], "*"))
    }

    /// Whether every scope of `required` is allowed.
    pub fn allows_all(&self, required: &Scopes) -> bool {
        required
            .iter()
            .all(|scope| self.allows_valid(scope.as_str()))
    }

    /// Whether this set grants everything (`*`).
    pub fn is_all(&self) -> bool {
        contains(self.as_slice(), "*", "")
    }

    /// Whether this set grants nothing.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// The scopes allowed by both sets, e.g. a personal token's own scopes
    /// within its owner's membership of an organization. It holds at most
    /// the scopes of both sets together.
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
        // Scopes form a hierarchy, so two grants overlap only when one
        // covers the other, and the overlap is the narrower of the two: the
        // scopes of each set that the other allows.
        let overlap = self
            .iter()
            .filter(|mine| other.allows_valid(mine.as_str()))
            .chain(
                other
                    .iter()
                    .filter(|theirs| self.allows_valid(theirs.as_str())),
            )
            .cloned()
            .collect();
        Self::from_vec(overlap)
    }

    /// The scopes in this set, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.as_slice().iter()
    }

    /// How many scopes the set holds.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// Whether the sorted `scopes` hold the name `head` followed by `tail`
/// (compared without building it).
fn contains(scopes: &[Scope], head: &str, tail: &str) -> bool {
    let wanted = || head.bytes().chain(tail.bytes());
    if scopes.len() <= LINEAR_SCAN_MAX {
        return scopes
            .iter()
            .any(|scope| scope.as_str().bytes().eq(wanted()));
    }
    scopes
        .binary_search_by(|scope| scope.as_str().bytes().cmp(wanted()))
        .is_ok()
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

    /// `count` distinct valid names under `objects.`.
    fn many(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("objects.n{i:05}")).collect()
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
        let nested = scopes(&["a.*", "b.c.*"]);
        let wide = scopes(&["a.b.*", "b.*", "c.d"]);
        assert_eq!(nested.intersection(&wide), scopes(&["a.b.*", "b.c.*"]));
    }

    #[test]
    fn duplicates_are_dropped_and_display_is_sorted_and_space_separated() {
        let set = scopes(&["b.*", "a.read", "a.read"]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "a.read b.*");
        assert_eq!(Scopes::parse_space_separated(" b.*  a.read ").unwrap(), set);
        assert_eq!(scopes(&["x", "y", "z"]), scopes(&["z", "y", "x", "y"]));
    }

    #[test]
    fn sets_are_bounded_in_count_and_text() {
        assert_eq!(
            Scopes::parse(many(Scopes::MAX_COUNT)).unwrap().len(),
            Scopes::MAX_COUNT
        );
        let error = Scopes::parse(many(Scopes::MAX_COUNT + 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid scopes: a set holds at most 256 scopes"
        );
        let scopes_iter = many(Scopes::MAX_COUNT + 1)
            .into_iter()
            .map(|name| Scope::new(&name).unwrap());
        assert!(Scopes::from_scopes(scopes_iter).is_err());
        // A huge list is refused before it is split.
        let spaces = " ".repeat(MAX_TEXT_LEN + 1);
        assert!(Scopes::parse_space_separated(&spaces).is_err());
        let at_the_bound = many(Scopes::MAX_COUNT).join(" ");
        assert!(Scopes::parse_space_separated(&at_the_bound).is_ok());
        // An error shows only the start of an overlong name.
        let long = "x".repeat(10_000);
        assert!(Scope::new(&long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn large_sets_answer_like_a_scan() {
        let mut names = many(Scopes::MAX_COUNT - 4);
        names.extend(["keys.*", "a.b.c.*", "z", "!first"].map(String::from));
        let set = Scopes::parse(&names).unwrap();
        assert!(set.len() > LINEAR_SCAN_MAX);
        for required in [
            "objects.n00007",
            "objects.n99999",
            "keys.read",
            "keys",
            "a.b.c.d",
            "a.b.c",
            "a.b",
            "z",
            "z.y",
            "!first",
            "*",
            "keys.*",
            "a.b.c.*",
        ] {
            let scan = set.iter().any(|granted| covers(granted.as_str(), required));
            assert_eq!(set.allows(required), scan, "{required}");
        }
        let with_star =
            Scopes::parse(names.iter().skip(1).map(String::as_str).chain(["*"])).unwrap();
        assert!(with_star.is_all() && with_star.allows("anything.at.all"));
    }
}
