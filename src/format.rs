//! The shape of a key: `<prefix>_<id>.<secret><checksum>`.
//!
//! * the **prefix** names the kind of credential (`ak` for API keys, `pat`
//!   for personal access tokens, or your own such as `andi_live`, which may
//!   also carry an [`Environment`]) so that leaked keys are easy to spot in
//!   code and logs;
//! * the **id** is public and is what a [`KeyStore`](crate::KeyStore) looks
//!   the key up by;
//! * the **secret** carries at least 128 random bits from the operating
//!   system's CSPRNG, in base62;
//! * the last six characters are a CRC32 **checksum** of everything before
//!   them (as GitHub tokens do), so a typo or random garbage is rejected
//!   without asking the store.
//!
//! Keys minted elsewhere can still be accepted with
//! [`KeyFormat::accept_opaque`]: such legacy keys are looked up by the hash
//! of the whole token.

use std::fmt;
use std::sync::Arc;

use crate::hash::{KeyHash, Token};
use crate::ids::KeyId;
use crate::ids::KeyKind;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN: usize = 6;
const ID_LEN: usize = 12;
/// 22 base62 characters carry 130.9 bits.
const MIN_SECRET_LEN: usize = 22;
const MAX_ID_LEN: usize = 64;
const MAX_PREFIX_LEN: usize = 32;
const OPAQUE_ID_PREFIX: &str = "opaque-";

/// Whether a key belongs to production or to testing, when its prefix says
/// so (as in `andi_live_…` and `andi_test_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Environment {
    /// A production key.
    Live,
    /// A key for testing or a sandbox.
    Test,
}

impl Environment {
    /// `"live"` or `"test"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`KeyKind`]s accepted under one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KindSet(u8);

impl KindSet {
    const ALL: KindSet = KindSet(7);

    fn bit(kind: KeyKind) -> u8 {
        match kind {
            KeyKind::Organization => 1,
            KeyKind::Workspace => 2,
            KeyKind::Personal => 4,
        }
    }
    fn with(self, kind: KeyKind) -> Self {
        Self(self.0 | Self::bit(kind))
    }
    pub(crate) fn contains(self, kind: KeyKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PrefixRule {
    prefix: Box<str>,
    kinds: KindSet,
    environment: Option<Environment>,
}

/// How tokens are minted and recognised.
///
/// The default accepts `ak_…` for organization and workspace keys and
/// `pat_…` for personal access tokens:
///
/// ```
/// use tower_keyauth::KeyFormat;
/// use tower_keyauth::ids::KeyKind;
/// let format = KeyFormat::default();
/// let minted = format.mint(KeyKind::Organization, None).unwrap();
/// let token = minted.token.expose_secret();
/// assert!(token.starts_with("ak_"));
/// let parsed = format.parse(token).unwrap();
/// assert_eq!(parsed.key_id().unwrap(), minted.id);
/// assert!(parsed.accepts(KeyKind::Organization));
///
/// // One changed character breaks the checksum: no store call is needed.
/// let last = if token.ends_with('x') { 'y' } else { 'x' };
/// let typo = format!("{}{last}", &token[..token.len() - 1]);
/// assert!(format.parse(&typo).is_err());
/// ```
///
/// Your own prefixes, with environments:
///
/// ```
/// use tower_keyauth::KeyFormat;
/// use tower_keyauth::format::Environment;
/// use tower_keyauth::ids::KeyKind;
/// let format = KeyFormat::new()
///     .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
///     .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test);
/// let minted = format.mint(KeyKind::Workspace, Some(Environment::Test)).unwrap();
/// assert!(minted.token.expose_secret().starts_with("andi_test_"));
/// let parsed = format.parse(minted.token.expose_secret()).unwrap();
/// assert_eq!(parsed.environment(), Some(Environment::Test));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    /// Longest first, so that `andi_live` wins over `andi`.
    rules: Arc<[PrefixRule]>,
    accept_opaque: bool,
    secret_len: usize,
}

impl Default for KeyFormat {
    /// `ak` for organization and workspace keys, `pat` for personal tokens.
    fn default() -> Self {
        Self::new()
            .prefix("ak", KeyKind::Organization)
            .prefix("ak", KeyKind::Workspace)
            .prefix("pat", KeyKind::Personal)
    }
}

impl KeyFormat {
    /// A format with no prefixes yet: add them with [`prefix`](Self::prefix).
    pub fn new() -> Self {
        Self {
            rules: Arc::from([]),
            accept_opaque: false,
            secret_len: MIN_SECRET_LEN,
        }
    }

    /// Accepts `kind` under `prefix`. Calling it again with the same prefix
    /// and another kind accepts both kinds under that prefix; when minting,
    /// the first prefix registered for a kind is used.
    ///
    /// # Panics
    ///
    /// If `prefix` is empty, longer than 32 bytes, starts or ends with `_`,
    /// or holds anything but ASCII letters, digits and `_`.
    pub fn prefix(self, prefix: &str, kind: KeyKind) -> Self {
        self.add_rule(prefix, kind, None)
    }

    /// Like [`prefix`](Self::prefix), for a prefix that also names an
    /// environment, such as `andi_live` or `andi_test`. The environment is
    /// reported on the [`Principal`](crate::Principal).
    ///
    /// # Panics
    ///
    /// As [`prefix`](Self::prefix).
    pub fn prefix_for_environment(
        self,
        prefix: &str,
        kind: KeyKind,
        environment: Environment,
    ) -> Self {
        self.add_rule(prefix, kind, Some(environment))
    }

    /// Also accepts tokens of any other shape, such as keys issued before
    /// this crate, by looking them up under [`KeyFormat::opaque_key_id`] of
    /// their hash. Tokens that start with a known prefix are still checked
    /// strictly.
    ///
    /// # Warning
    ///
    /// Opaque tokens have no checksum, so random garbage reaches the store
    /// (as one lookup by hash). Put a cache that also remembers unknown ids
    /// in front of a remote store when you enable this.
    pub fn accept_opaque(mut self) -> Self {
        self.accept_opaque = true;
        self
    }

    /// The number of base62 characters of secret in minted tokens (at least
    /// and by default 22, which is 130 bits).
    ///
    /// # Panics
    ///
    /// If `length` is below 22.
    pub fn secret_length(mut self, length: usize) -> Self {
        assert!(
            length >= MIN_SECRET_LEN,
            "a secret needs at least {MIN_SECRET_LEN} base62 characters (128 bits)"
        );
        self.secret_len = length;
        self
    }

    fn add_rule(self, prefix: &str, kind: KeyKind, environment: Option<Environment>) -> Self {
        assert!(
            is_valid_prefix(prefix),
            "invalid key prefix {prefix:?}: use 1 to {MAX_PREFIX_LEN} ASCII letters, digits and inner '_'"
        );
        let mut rules = self.rules.to_vec();
        match rules.iter_mut().find(|rule| &*rule.prefix == prefix) {
            Some(rule) => {
                rule.kinds = rule.kinds.with(kind);
                rule.environment = environment.or(rule.environment);
            }
            None => rules.push(PrefixRule {
                prefix: prefix.into(),
                kinds: KindSet::default().with(kind),
                environment,
            }),
        }
        // Stable sort: among equal lengths the order of registration stays.
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.prefix.len()));
        Self {
            rules: rules.into(),
            ..self
        }
    }

    /// Recognises a token's shape, checking its checksum. Never touches a
    /// store.
    pub fn parse<'a>(&'a self, token: &'a str) -> Result<ParsedToken<'a>, ParseError> {
        let rule = self.rules.iter().find(|rule| {
            token.len() > rule.prefix.len()
                && token.starts_with(&*rule.prefix)
                && token.as_bytes()[rule.prefix.len()] == b'_'
        });
        let Some(rule) = rule else {
            return if self.accept_opaque && !token.is_empty() {
                Ok(ParsedToken {
                    shape: Shape::Opaque,
                })
            } else {
                Err(ParseError::UnknownPrefix)
            };
        };
        let rest = &token[rule.prefix.len() + 1..];
        let (id, secret_and_checksum) = rest.split_once('.').ok_or(ParseError::Malformed)?;
        // Folds rather than `all`: no early exit, so the checks vectorize.
        let id_ok = id.bytes().fold(true, |ok, b| ok & is_id_byte(b));
        if id.is_empty() || id.len() > MAX_ID_LEN || !id_ok {
            return Err(ParseError::Malformed);
        }
        let secret_ok = secret_and_checksum
            .bytes()
            .fold(true, |ok, b| ok & b.is_ascii_alphanumeric());
        if secret_and_checksum.len() < MIN_SECRET_LEN + CHECKSUM_LEN || !secret_ok {
            return Err(ParseError::Malformed);
        }
        let (body, checksum) = token.split_at(token.len() - CHECKSUM_LEN);
        if checksum.as_bytes() != checksum_of(body) {
            return Err(ParseError::BadChecksum);
        }
        Ok(ParsedToken {
            shape: Shape::Prefixed { rule, id },
        })
    }

    /// Mints a new token for `kind` (and `environment`, if the format has
    /// environment prefixes) with a fresh random id and secret.
    pub fn mint(
        &self,
        kind: KeyKind,
        environment: Option<Environment>,
    ) -> Result<MintedToken, MintError> {
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.kinds.contains(kind) && rule.environment == environment)
            .ok_or(MintError::NoPrefix { kind, environment })?;
        let mut id = String::with_capacity(ID_LEN);
        random_base62(&mut id, ID_LEN)?;
        let mut token =
            String::with_capacity(rule.prefix.len() + 2 + ID_LEN + self.secret_len + CHECKSUM_LEN);
        token.push_str(&rule.prefix);
        token.push('_');
        token.push_str(&id);
        token.push('.');
        random_base62(&mut token, self.secret_len)?;
        let checksum = checksum_of(&token);
        token.extend(checksum.iter().map(|&b| b as char));
        Ok(MintedToken {
            id: KeyId::new(id),
            prefix: rule.prefix.clone(),
            environment,
            token: Token::new(token),
        })
    }

    /// The environment a prefix names, if any.
    pub(crate) fn environment_of_prefix(&self, prefix: &str) -> Option<Environment> {
        self.rules
            .iter()
            .find(|rule| &*rule.prefix == prefix)
            .and_then(|rule| rule.environment)
    }

    /// The id under which an opaque (legacy) token is stored: derived from
    /// the hash of the whole token, so no part of the secret shows.
    pub fn opaque_key_id(hash: &KeyHash) -> KeyId {
        let hex = hash.to_hex();
        KeyId::new(format!("{OPAQUE_ID_PREFIX}{}", &hex[..24]))
    }

    /// The masked form of a key for listings, e.g. `ak_Xb3kP9qLm2Ts.****`:
    /// prefix and id only, never any character of the secret.
    pub fn mask(prefix: Option<&str>, id: &KeyId) -> String {
        match prefix {
            Some(prefix) => format!("{prefix}_{id}.****"),
            None => format!("{id}.****"),
        }
    }
}

fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && !prefix.starts_with('_')
        && !prefix.ends_with('_')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// CRC32 (IEEE) of `body`, as six base62 digits, most significant first.
fn checksum_of(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// Appends `count` uniformly random base62 characters from the OS CSPRNG.
fn random_base62(out: &mut String, count: usize) -> Result<(), MintError> {
    let mut pushed = 0;
    let mut buffer = [0u8; 64];
    while pushed < count {
        getrandom::fill(&mut buffer).map_err(|_| MintError::Random)?;
        // 248 = 4 * 62: rejecting bytes above it keeps every character
        // equally likely.
        for &byte in buffer.iter().filter(|&&b| b < 248) {
            if pushed == count {
                break;
            }
            out.push(BASE62[usize::from(byte % 62)] as char);
            pushed += 1;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Shape<'a> {
    Prefixed { rule: &'a PrefixRule, id: &'a str },
    Opaque,
}

/// A token whose shape and checksum are valid. Nothing is known yet about
/// whether the key exists.
#[derive(Clone, Copy)]
pub struct ParsedToken<'a> {
    shape: Shape<'a>,
}

impl ParsedToken<'_> {
    /// The id to look up, for prefixed tokens. Opaque tokens are looked up by
    /// [`KeyFormat::opaque_key_id`] of their hash instead.
    pub fn key_id(&self) -> Option<KeyId> {
        match self.shape {
            Shape::Prefixed { id, .. } => Some(KeyId::new(id)),
            Shape::Opaque => None,
        }
    }

    /// The id to look up: the token's own for prefixed tokens, the one
    /// derived from `hash` (the hash of this token) for opaque ones.
    pub(crate) fn lookup_id(&self, hash: &KeyHash) -> KeyId {
        self.key_id()
            .unwrap_or_else(|| KeyFormat::opaque_key_id(hash))
    }

    /// The prefix, such as `ak` (none for opaque tokens).
    pub fn prefix(&self) -> Option<&str> {
        match self.shape {
            Shape::Prefixed { rule, .. } => Some(&rule.prefix),
            Shape::Opaque => None,
        }
    }

    /// Whether a stored key of `kind` may be presented with this token's
    /// prefix. Opaque tokens accept every kind.
    pub fn accepts(&self, kind: KeyKind) -> bool {
        self.kinds().contains(kind)
    }

    pub(crate) fn kinds(&self) -> KindSet {
        match self.shape {
            Shape::Prefixed { rule, .. } => rule.kinds,
            Shape::Opaque => KindSet::ALL,
        }
    }

    /// The environment named by the prefix, if any.
    pub fn environment(&self) -> Option<Environment> {
        match self.shape {
            Shape::Prefixed { rule, .. } => rule.environment,
            Shape::Opaque => None,
        }
    }

    /// Whether this is an opaque (legacy) token.
    pub fn is_opaque(&self) -> bool {
        matches!(self.shape, Shape::Opaque)
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("prefix", &self.prefix())
            .field("key_id", &self.key_id())
            .field("environment", &self.environment())
            .finish_non_exhaustive()
    }
}

/// Why a token is not of the expected shape. The layer answers all of these
/// with the same `invalid_token` response; the reason is only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No configured prefix matches (and opaque tokens are not accepted).
    #[error("the token has no known prefix")]
    UnknownPrefix,
    /// The prefix matches but the rest is not `<id>.<secret><checksum>`.
    #[error("the token is malformed")]
    Malformed,
    /// The checksum does not match: a typo or a made-up token.
    #[error("the token checksum does not match")]
    BadChecksum,
}

/// A freshly minted token: hand [`token`](Self::token) to its owner once and
/// store only its hash.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MintedToken {
    /// The public id, part of the token.
    pub id: KeyId,
    /// The prefix used, such as `ak`.
    pub prefix: Box<str>,
    /// The environment the prefix names, if any.
    pub environment: Option<Environment>,
    /// The whole credential (redacted in `Debug`).
    pub token: Token,
}

/// Why a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The format has no prefix for this kind and environment.
    #[error("the key format has no prefix for {kind:?} keys in environment {environment:?}")]
    NoPrefix {
        /// The kind asked for.
        kind: KeyKind,
        /// The environment asked for.
        environment: Option<Environment>,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_back_with_their_id_and_kind() {
        let format = KeyFormat::default();
        for kind in [KeyKind::Organization, KeyKind::Workspace, KeyKind::Personal] {
            let minted = format.mint(kind, None).unwrap();
            let parsed = format.parse(minted.token.expose_secret()).unwrap();
            assert_eq!(parsed.key_id(), Some(minted.id.clone()));
            assert!(parsed.accepts(kind));
        }
    }

    #[test]
    fn minted_tokens_have_the_documented_shape() {
        let minted = KeyFormat::default().mint(KeyKind::Personal, None).unwrap();
        let token = minted.token.expose_secret();
        let rest = token.strip_prefix("pat_").unwrap();
        let (id, secret) = rest.split_once('.').unwrap();
        assert_eq!(id.len(), ID_LEN);
        assert_eq!(secret.len(), MIN_SECRET_LEN + CHECKSUM_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn two_mints_never_share_id_or_secret() {
        let format = KeyFormat::default();
        let a = format.mint(KeyKind::Organization, None).unwrap();
        let b = format.mint(KeyKind::Organization, None).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let format = KeyFormat::default();
        let minted = format.mint(KeyKind::Organization, None).unwrap();
        let token = minted.token.expose_secret();
        for position in 0..token.len() {
            for replacement in [b'a', b'Z', b'7', b'.', b'_'] {
                let mut bytes = token.as_bytes().to_vec();
                if bytes[position] == replacement {
                    continue;
                }
                bytes[position] = replacement;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(
                    format.parse(&changed).is_err(),
                    "a change at {position} to {} was accepted",
                    replacement as char
                );
            }
        }
    }

    #[test]
    fn wrong_shapes_are_rejected_with_a_reason() {
        let format = KeyFormat::default();
        assert_eq!(format.parse("").unwrap_err(), ParseError::UnknownPrefix);
        assert_eq!(
            format.parse("sk_abc.def").unwrap_err(),
            ParseError::UnknownPrefix
        );
        assert_eq!(format.parse("ak").unwrap_err(), ParseError::UnknownPrefix);
        assert_eq!(format.parse("ak_").unwrap_err(), ParseError::Malformed);
        assert_eq!(format.parse("ak_abc").unwrap_err(), ParseError::Malformed);
        assert_eq!(
            format
                .parse("ak_.aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            format.parse("ak_abc.short").unwrap_err(),
            ParseError::Malformed
        );
        assert_eq!(
            format
                .parse("ak_abc.aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap_err(),
            ParseError::BadChecksum
        );
        assert_eq!(
            format
                .parse("ak_a_b.aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap_err(),
            ParseError::Malformed
        );
    }

    #[test]
    fn the_longest_prefix_wins() {
        let format = KeyFormat::new()
            .prefix("andi", KeyKind::Organization)
            .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live);
        let minted = format
            .mint(KeyKind::Workspace, Some(Environment::Live))
            .unwrap();
        let parsed = format.parse(minted.token.expose_secret()).unwrap();
        assert_eq!(parsed.prefix(), Some("andi_live"));
        assert_eq!(parsed.environment(), Some(Environment::Live));
        assert!(!parsed.accepts(KeyKind::Organization));
        let minted = format.mint(KeyKind::Organization, None).unwrap();
        assert_eq!(
            format.parse(minted.token.expose_secret()).unwrap().prefix(),
            Some("andi")
        );
    }

    #[test]
    fn minting_needs_a_prefix_for_the_kind() {
        let format = KeyFormat::new().prefix("ak", KeyKind::Organization);
        assert_eq!(
            format.mint(KeyKind::Personal, None).unwrap_err(),
            MintError::NoPrefix {
                kind: KeyKind::Personal,
                environment: None
            }
        );
    }

    #[test]
    fn opaque_tokens_are_accepted_only_when_enabled_and_never_for_known_prefixes() {
        let strict = KeyFormat::default();
        let lenient = KeyFormat::default().accept_opaque();
        assert!(strict.parse("legacy-key-1234").is_err());
        let parsed = lenient.parse("legacy-key-1234").unwrap();
        assert!(parsed.is_opaque());
        assert_eq!(parsed.key_id(), None);
        assert!(parsed.accepts(KeyKind::Personal));
        assert_eq!(
            lenient
                .parse("ak_abc.aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
                .unwrap_err(),
            ParseError::BadChecksum
        );
        let id = KeyFormat::opaque_key_id(&KeyHash::of("legacy-key-1234"));
        assert!(id.as_str().starts_with("opaque-"));
        assert!(!id.as_str().contains("legacy"));
    }

    #[test]
    #[should_panic(expected = "invalid key prefix")]
    fn prefixes_are_validated() {
        let _ = KeyFormat::new().prefix("ak_", KeyKind::Organization);
    }

    #[test]
    fn masks_show_prefix_and_id_only() {
        assert_eq!(
            KeyFormat::mask(Some("ak"), &KeyId::from("abc")),
            "ak_abc.****"
        );
        assert_eq!(
            KeyFormat::mask(None, &KeyId::from("opaque-1")),
            "opaque-1.****"
        );
    }
}
