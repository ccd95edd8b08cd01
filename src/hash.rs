//! Secrets and their stored form.
//!
//! A [`Token`] is the whole credential a client sends. Only its SHA-256,
//! a [`KeyHash`], is ever stored, and hashes are compared in constant time.
//! API keys carry at least 128 random bits, so a fast hash is the right
//! tool here (a slow password hash would only add latency to every request).

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The version of the hash a key's [`KeyHash`] was made under: 0 is plain
/// SHA-256, any other is HMAC-SHA256 under the pepper of that version (see
/// [`pepper`](crate::pepper)).
pub type HashVersion = u16;

/// A whole credential, such as `ak_Xb3kP9qLm2Ts.9fK2...`.
///
/// `Debug` and `Display` never show the secret; call
/// [`expose_secret`](Token::expose_secret) to hand it to the client, once.
///
/// ```
/// use tower_keyauth::hash::Token;
/// let token = Token::new("ak_abc.supersecret");
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// assert_eq!(token.to_string(), "<redacted>");
/// assert_eq!(token.expose_secret(), "ak_abc.supersecret");
/// ```
#[derive(Clone, Eq)]
pub struct Token(String);

impl PartialEq for Token {
    /// Constant time for tokens of equal length (the length is not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Token {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself. Show it to its owner once; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the credential, the only form that is stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 of a whole token, or its HMAC-SHA256 under a pepper (see
/// [`pepper`](crate::pepper)), with the version it was made under: what a
/// [`KeyStore`](crate::KeyStore) keeps.
///
/// Hashes of different versions never match, whatever their bytes.
/// Equality through [`KeyHash::matches`] runs in constant time. The hash is not
/// a secret (the token has too much entropy to be guessed from it), but it is
/// still only shown abbreviated in `Debug`.
///
/// ```
/// use tower_keyauth::hash::KeyHash;
/// let stored = KeyHash::of("ak_abc.secret");
/// assert!(stored.matches(&KeyHash::of("ak_abc.secret")));
/// assert!(!stored.matches(&KeyHash::of("ak_abc.secreT")));
/// assert_eq!(KeyHash::from_hex(&stored.to_hex()), Some(stored));
/// ```
#[derive(Clone, Copy, Eq)]
pub struct KeyHash {
    bytes: [u8; 32],
    /// The [`HashVersion`] it was made under: 0 for plain SHA-256.
    version: HashVersion,
}

impl KeyHash {
    /// Hashes a token with plain SHA-256 (version 0); see
    /// [`Peppers::hash`](crate::pepper::Peppers::hash) for a peppered hash.
    pub fn of(token: &str) -> Self {
        Self::of_bytes(token.as_bytes())
    }

    /// Hashes a token's bytes.
    #[inline]
    pub(crate) fn of_bytes(token: &[u8]) -> Self {
        Self::from_bytes(Sha256::digest(token).into())
    }

    /// Wraps 32 bytes read back from storage, of version 0 (plain SHA-256);
    /// add the stored version with [`with_version`](Self::with_version).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self { bytes, version: 0 }
    }

    /// The same bytes, made under `version` (0 is plain SHA-256; any other
    /// the pepper of that version).
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// let stored = KeyHash::from_bytes([7; 32]).with_version(2);
    /// assert_eq!(stored.version(), 2);
    /// assert!(!stored.matches(&KeyHash::from_bytes([7; 32])));
    /// ```
    pub const fn with_version(self, version: HashVersion) -> Self {
        Self {
            bytes: self.bytes,
            version,
        }
    }

    /// The version this hash was made under: 0 for plain SHA-256.
    pub const fn version(&self) -> HashVersion {
        self.version
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let digits = hex.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Self::from_bytes(bytes))
    }

    /// The raw 32 bytes (without the version).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(64);
        for byte in self.bytes {
            text.push(DIGITS[usize::from(byte >> 4)] as char);
            text.push(DIGITS[usize::from(byte & 0x0f)] as char);
        }
        text
    }

    /// Constant-time equality: the time taken does not depend on where the
    /// two hashes first differ. Hashes of different versions never match
    /// (the version is not secret).
    pub fn matches(&self, other: &KeyHash) -> bool {
        // Four 64-bit words rather than 32 bytes: the same guarantee, an
        // eighth of the work.
        fn words(hash: &[u8; 32]) -> [u64; 4] {
            let mut words = [0u64; 4];
            for (word, bytes) in words.iter_mut().zip(hash.chunks_exact(8)) {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(bytes);
                *word = u64::from_le_bytes(eight);
            }
            words
        }
        let same_bytes: bool = words(&self.bytes).ct_eq(&words(&other.bytes)).into();
        same_bytes & (self.version == other.version)
    }
}

impl PartialEq for KeyHash {
    /// Constant time, like [`KeyHash::matches`].
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            0 => write!(f, "KeyHash({}…)", &self.to_hex()[..8]),
            version => write!(f, "KeyHash(v{version}:{}…)", &self.to_hex()[..8]),
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_of_the_whole_token() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let hash = KeyHash::of("token");
        assert_eq!(KeyHash::from_hex(&hash.to_hex().to_uppercase()), Some(hash));
        assert_eq!(KeyHash::from_hex("abc"), None);
        assert_eq!(KeyHash::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_the_whole_hash() {
        let token = Token::new("ak_id.topsecretvalue");
        let hash = token.hash();
        assert!(!format!("{token:?} {token}").contains("topsecret"));
        assert!(!format!("{hash:?}").contains(&hash.to_hex()));
    }
}
