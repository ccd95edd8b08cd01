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
use std::sync::{Arc, LazyLock};

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

    /// Characters of secret (and then of checksum) that minted tokens
    /// have: what the scanner tries when more letters follow a token.
    pub(crate) fn minted_secret_and_checksum_len(&self) -> usize {
        self.secret_len + CHECKSUM_LEN
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
        self.parse_bytes(token.as_bytes())
    }

    /// [`parse`](Self::parse) of a token's bytes: what the layer calls, so
    /// that no step before it needs to prove the token UTF-8.
    pub(crate) fn parse_bytes<'a>(
        &'a self,
        bytes: &'a [u8],
    ) -> Result<ParsedToken<'a>, ParseError> {
        let rule = self.rules.iter().find(|rule| {
            let prefix = rule.prefix.as_bytes();
            bytes.get(prefix.len()) == Some(&b'_') && bytes.starts_with(prefix)
        });
        let Some(rule) = rule else {
            return if self.accept_opaque && !bytes.is_empty() {
                Ok(ParsedToken {
                    shape: Shape::Opaque,
                })
            } else {
                Err(ParseError::UnknownPrefix)
            };
        };
        let id_start = rule.prefix.len() + 1;
        let rest = &bytes[id_start..];
        // The id ends at the first `.`, which must come within its longest
        // length: a longer id or no dot at all is malformed either way.
        let id_len = swar::first_dot(&rest[..rest.len().min(MAX_ID_LEN + 1)])
            .ok_or(ParseError::Malformed)?;
        let (id, secret_and_checksum) = (&rest[..id_len], &rest[id_len + 1..]);
        let id_ok = swar::all_bytes(id, |word| {
            swar::alphanumeric(word) | swar::equal(word, b'-')
        });
        let secret_ok = swar::all_bytes(secret_and_checksum, swar::alphanumeric);
        if id_len == 0
            || !id_ok
            || secret_and_checksum.len() < MIN_SECRET_LEN + CHECKSUM_LEN
            || !secret_ok
        {
            return Err(ParseError::Malformed);
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if !checksum_matches(body, checksum) {
            return Err(ParseError::BadChecksum);
        }
        // Letters, digits and `-`, so always UTF-8.
        let id = std::str::from_utf8(id).map_err(|_| ParseError::Malformed)?;
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

/// The byte tests of [`KeyFormat::parse`], eight bytes at a time in a
/// `u64` (SWAR: SIMD within a register). Every request's token is checked,
/// and a byte at a time cost three times the instructions (BENCHMARKS.md).
///
/// A test maps a word (eight bytes, the first in the lowest bits) to a word
/// in which exactly the bytes that pass have their high bit set.
mod swar {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    /// The bytes from `low` to `high` (ASCII, so below 0x80). With each
    /// byte's high bit set first, subtracting a value below 0x80 never
    /// borrows from the next byte, and leaves the high bit set exactly
    /// when the byte's low seven bits are at least that value; bytes that
    /// are not ASCII are dropped at the end.
    #[inline(always)]
    pub(super) const fn in_range(word: u64, low: u8, high: u8) -> u64 {
        let raised = word | HIGH;
        let at_least_low = raised - ONES * low as u64;
        let above_high = raised - ONES * (high as u64 + 1);
        at_least_low & !above_high & !word & HIGH
    }

    /// The bytes equal to `byte` (ASCII).
    #[inline(always)]
    pub(super) const fn equal(word: u64, byte: u8) -> u64 {
        in_range(word, byte, byte)
    }

    /// ASCII letters and digits. Setting bit 5 turns `A`-`Z` into `a`-`z`
    /// and no other byte into one.
    #[inline(always)]
    pub(super) const fn alphanumeric(word: u64) -> u64 {
        in_range(word, b'0', b'9') | in_range(word | (ONES * 0x20), b'a', b'z')
    }

    /// Whether every byte of `bytes` passes `test`. A last partial word is
    /// read again from its end (the overlap was tested already), or, in a
    /// slice shorter than a word, padded with `0`, which every test of
    /// ours accepts.
    #[inline(always)]
    pub(super) fn all_bytes(bytes: &[u8], test: impl Fn(u64) -> u64) -> bool {
        let mut words = bytes.chunks_exact(8);
        let mut passed = HIGH;
        for word in words.by_ref() {
            passed &= test(load(word));
        }
        if !words.remainder().is_empty() {
            let last = match bytes.len().checked_sub(8) {
                Some(start) => load(&bytes[start..]),
                None => {
                    let mut padded = [b'0'; 8];
                    padded[..bytes.len()].copy_from_slice(bytes);
                    u64::from_le_bytes(padded)
                }
            };
            passed &= test(last);
        }
        passed == HIGH
    }

    /// The position of the first `.` in `bytes`.
    #[inline(always)]
    pub(super) fn first_dot(bytes: &[u8]) -> Option<usize> {
        let mut words = bytes.chunks_exact(8);
        let mut offset = 0;
        for word in words.by_ref() {
            let dots = equal(load(word), b'.');
            if dots != 0 {
                return Some(offset + dots.trailing_zeros() as usize / 8);
            }
            offset += 8;
        }
        let tail = words.remainder();
        tail.iter().position(|&b| b == b'.').map(|at| offset + at)
    }

    #[inline(always)]
    fn load(bytes: &[u8]) -> u64 {
        match bytes.first_chunk::<8>() {
            Some(word) => u64::from_le_bytes(*word),
            None => 0,
        }
    }
}

/// CRC32 (IEEE) of `body`, as six base62 digits, most significant first.
fn checksum_of(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits
}

/// The value of each base62 digit, and `NOT_BASE62` for other bytes.
const BASE62_VALUES: [u8; 256] = {
    let mut values = [NOT_BASE62; 256];
    let mut digit = 0;
    while digit < BASE62.len() {
        values[BASE62[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};
const NOT_BASE62: u8 = u8::MAX;

/// Whether `checksum` is [`checksum_of`] `body`. It reads the six digits
/// as a number instead of writing the CRC as digits: one multiply-add per
/// digit instead of a division. Six base62 digits name each number below
/// 62⁶ once, and every CRC32 is below it, so the two tests agree.
fn checksum_matches(body: &[u8], checksum: &[u8]) -> bool {
    let mut presented: u64 = 0;
    let mut valid = checksum.len() == CHECKSUM_LEN;
    for &byte in checksum {
        let value = BASE62_VALUES[usize::from(byte)];
        valid &= value != NOT_BASE62;
        presented = presented * 62 + u64::from(value);
    }
    valid && presented == u64::from(crc32(body))
}

/// CRC32 of `bytes`, from a hasher whose CPU features were detected once:
/// `crc32fast::hash` detects them on every call, a sixth of its cost for a
/// token.
fn crc32(bytes: &[u8]) -> u32 {
    static DETECTED: LazyLock<crc32fast::Hasher> = LazyLock::new(crc32fast::Hasher::new);
    let mut hasher = DETECTED.clone();
    hasher.update(bytes);
    hasher.finalize()
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
    fn the_word_tests_agree_with_the_byte_tests() {
        let id_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
        for b in 0..=u8::MAX {
            // Each byte in every position, among bytes that pass and bytes
            // that do not.
            for position in 0..8 {
                for filler in [b'a', b'Z', b'7', b'.', b'-', 0xff, 0] {
                    let mut word = [filler; 8];
                    word[position] = b;
                    let word = u64::from_le_bytes(word);
                    let bit = |mask: u64| mask >> (position * 8 + 7) & 1 == 1;
                    assert_eq!(
                        bit(swar::alphanumeric(word)),
                        b.is_ascii_alphanumeric(),
                        "{b:#x}"
                    );
                    assert_eq!(bit(swar::equal(word, b'.')), b == b'.', "{b:#x}");
                    let id = swar::alphanumeric(word) | swar::equal(word, b'-');
                    assert_eq!(bit(id), id_byte(b), "{b:#x}");
                }
            }
        }
    }

    #[test]
    fn the_slice_tests_agree_with_the_byte_tests() {
        let alphabet = b"aZ09-._~ \x7f\x80\xffQ";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let pick = (state >> (i % 8 * 8)) as usize + i;
                    // Mostly letters and digits, so that all-pass slices occur.
                    if pick % 5 == 0 {
                        alphabet[pick / 5 % alphabet.len()]
                    } else {
                        b'a' + (pick % 26) as u8
                    }
                })
                .collect();
            assert_eq!(
                swar::all_bytes(&bytes, swar::alphanumeric),
                bytes.iter().all(u8::is_ascii_alphanumeric),
                "{bytes:?}"
            );
            assert_eq!(
                swar::first_dot(&bytes),
                bytes.iter().position(|&b| b == b'.'),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn reading_the_checksum_agrees_with_writing_it() {
        let format = KeyFormat::default();
        for _ in 0..200 {
            let minted = format.mint(KeyKind::Organization, None).unwrap();
            let token = minted.token.expose_secret().as_bytes();
            let (body, checksum) = token.split_at(token.len() - CHECKSUM_LEN);
            assert_eq!(checksum, checksum_of(std::str::from_utf8(body).unwrap()));
            assert!(checksum_matches(body, checksum));
            for position in 0..CHECKSUM_LEN {
                for other in BASE62.iter().chain(b"-._~!") {
                    let mut changed = checksum.to_vec();
                    if changed[position] == *other {
                        continue;
                    }
                    changed[position] = *other;
                    assert!(!checksum_matches(body, &changed));
                }
            }
            assert!(!checksum_matches(body, &checksum[1..]));
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
