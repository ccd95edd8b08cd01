//! Peppered hashes: stored key hashes keyed with a server secret.
//!
//! Without a pepper, a store keeps the SHA-256 of each token. Tokens carry
//! at least 130 random bits, so nobody guesses one from its hash; but a
//! stolen copy of the key table still lets an attacker test any token they
//! come across (a leaked log line, a pasted `curl` command) offline, and a
//! weak legacy (opaque) key could be brute-forced. With [`Peppers`], the
//! stored hash is HMAC-SHA256 of the token under a secret that lives
//! in the application's configuration, never in the database: the table
//! alone then tells nothing about any token.
//!
//! Peppers are versioned. One is current: keys are issued and rotated
//! under it. Any number of earlier ones (and version 0, plain SHA-256, the
//! hash of every key stored before peppers were configured) still verify,
//! and a key that authenticates under another version than the current one
//! is re-hashed under the current one after that request, off the request
//! path ([`KeyStore::rehash`](crate::KeyStore::rehash)). Each stored
//! [`KeyHash`] records the version it was made under.
//!
//! Configure the peppers once, on the store; the layer takes them from it
//! ([`KeyStore::peppers`](crate::KeyStore::peppers)):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_keyauth::pepper::Peppers;
//! use tower_keyauth::store::StoreOptions;
//! use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};
//!
//! // In production: read from a secret manager or the environment, never
//! // from the database that holds the keys.
//! let peppers = Peppers::new(2, [7u8; 32])?.earlier(1, [3u8; 32])?;
//! assert_eq!(format!("{peppers:?}"), "Peppers { current: 2, earlier: [1] }");
//!
//! let store = MemoryStore::with_options(StoreOptions::default().peppers(peppers));
//! let issued = store.issue(NewKey::org("acme")).await?;
//! assert_eq!(issued.record.hash.version(), 2);
//! let layer = KeyAuthLayer::new(store.clone()); // verifies under the same peppers
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # Rotating the pepper
//!
//! 1. Add a new version as current and keep the old one as earlier:
//!    `Peppers::new(3, new)?.earlier(2, old)?`. Deploy it to every instance
//!    (instances still on the old configuration verify the new keys only
//!    once they have the new pepper, so deploy before issuing).
//! 2. Keys in use move to version 3 on their next request. Count what is
//!    left under version 2 (`SELECT count(*) FROM keyauth_keys WHERE
//!    hash_version = 2`).
//! 3. Drop version 2 when no key needs it (or when you decide the keys still
//!    on it are abandoned): those keys then fail closed with 503 and an
//!    error in the log that names the missing version, until revoked.
//!
//! # Costs and timing
//!
//! A request hashes its token once, under the current version: one HMAC
//! (two SHA-256 compressions more than a plain hash, for a short token).
//! Only when the stored record exists and was hashed under another version
//! does the layer hash a second time, under that version. So a wrong secret
//! for such a key costs one more hash than an unknown id: the timing
//! reveals that the id exists and is not yet re-hashed, never anything of
//! its secret (both comparisons stay constant time). Key ids are not
//! secret (they are the visible part of every token), and the difference
//! lasts until the key's next successful use.
//!
//! Opaque (legacy) keys are looked up by the plain SHA-256 of the whole
//! token ([`KeyFormat::opaque_key_id`](crate::KeyFormat::opaque_key_id)), so
//! they stay at version 0 and are never re-hashed: their id already derives
//! from the plain hash.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use crate::hash::HashVersion;
use crate::hash::KeyHash;

/// The fewest bytes a pepper's secret has: 256 bits, the HMAC-SHA256 key
/// length RFC 2104 recommends.
pub const MIN_PEPPER_LEN: usize = 32;

/// The peppers a store hashes keys with and the layer verifies them with:
/// one current version and any number of earlier ones (see the
/// [module](self)).
///
/// Cheap to clone (one `Arc`). `Debug` shows the versions only; no secret
/// is ever shown, logged or part of an error.
#[derive(Clone, Default)]
pub struct Peppers {
    /// `None`: no pepper, every key hashed with plain SHA-256 (version 0).
    keys: Option<Arc<PepperSet>>,
}

struct PepperSet {
    current: HashVersion,
    /// Every version's key, the current one first; a handful, searched
    /// linearly.
    keys: Vec<(HashVersion, HmacKey)>,
}

impl Peppers {
    /// No pepper: keys are hashed with plain SHA-256 (version 0), as
    /// without this module.
    pub const fn none() -> Self {
        Self { keys: None }
    }

    /// `secret` as the pepper of `version`, the current one: keys issued or
    /// rotated from now on are hashed under it.
    ///
    /// `version` is at least 1 (0 is plain SHA-256); `secret` has at least
    /// [`MIN_PEPPER_LEN`] bytes, ideally random (`openssl rand -hex 32`).
    ///
    /// ```
    /// use tower_keyauth::pepper::{PepperError, Peppers};
    /// assert!(Peppers::new(1, [9u8; 32]).is_ok());
    /// assert_eq!(Peppers::new(1, b"short").unwrap_err(), PepperError::TooShort { version: 1, len: 5 });
    /// assert_eq!(Peppers::new(0, [9u8; 32]).unwrap_err(), PepperError::VersionZero);
    /// ```
    pub fn new(version: HashVersion, secret: impl AsRef<[u8]>) -> Result<Self, PepperError> {
        let key = HmacKey::checked(version, secret.as_ref())?;
        Ok(Self {
            keys: Some(Arc::new(PepperSet {
                current: version,
                keys: vec![(version, key)],
            })),
        })
    }

    /// Adds `secret` as the pepper of an earlier `version`: keys hashed
    /// under it still verify, and are re-hashed under the current version
    /// after their next successful use.
    ///
    /// ```
    /// use tower_keyauth::pepper::{PepperError, Peppers};
    /// let peppers = Peppers::new(3, [1u8; 32]).unwrap().earlier(2, [2u8; 32]).unwrap();
    /// assert_eq!(peppers.current_version(), 3);
    /// assert!(peppers.knows(2) && peppers.knows(0) && !peppers.knows(1));
    /// assert_eq!(peppers.earlier(3, [4u8; 32]).unwrap_err(), PepperError::Duplicate { version: 3 });
    /// ```
    pub fn earlier(
        self,
        version: HashVersion,
        secret: impl AsRef<[u8]>,
    ) -> Result<Self, PepperError> {
        let Some(set) = &self.keys else {
            return Err(PepperError::NoCurrent);
        };
        if set.keys.iter().any(|(known, _)| *known == version) {
            return Err(PepperError::Duplicate { version });
        }
        let key = HmacKey::checked(version, secret.as_ref())?;
        let mut keys = set.keys.clone();
        keys.push((version, key));
        Ok(Self {
            keys: Some(Arc::new(PepperSet {
                current: set.current,
                keys,
            })),
        })
    }

    /// The version new keys are hashed under (0 without a pepper).
    pub fn current_version(&self) -> HashVersion {
        self.keys.as_ref().map_or(0, |set| set.current)
    }

    /// Whether hashes of `version` can be verified: 0 always, any other
    /// when its pepper is configured.
    pub fn knows(&self, version: HashVersion) -> bool {
        version == 0 || self.key(version).is_some()
    }

    /// The hash of `token` under the current version: what a store keeps
    /// for a key issued now.
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::pepper::Peppers;
    /// let token = "ak_Xb3kP9qLm2Ts.secret";
    /// assert_eq!(Peppers::none().hash(token), KeyHash::of(token));
    /// let peppered = Peppers::new(1, [5u8; 32]).unwrap().hash(token);
    /// assert_eq!(peppered.version(), 1);
    /// assert!(!peppered.matches(&KeyHash::of(token)));
    /// ```
    pub fn hash(&self, token: &str) -> KeyHash {
        self.hash_bytes(token.as_bytes())
    }

    /// The hash of `token` under `version`, or `None` when that version's
    /// pepper is not configured.
    pub fn hash_with(&self, version: HashVersion, token: &str) -> Option<KeyHash> {
        self.hash_bytes_with(version, token.as_bytes())
    }

    /// [`hash`](Self::hash) of a token's bytes.
    #[inline]
    pub(crate) fn hash_bytes(&self, token: &[u8]) -> KeyHash {
        match &self.keys {
            None => KeyHash::of_bytes(token),
            Some(set) => {
                let (version, key) = &set.keys[0];
                KeyHash::from_bytes(key.mac(token)).with_version(*version)
            }
        }
    }

    /// [`hash_with`](Self::hash_with) of a token's bytes.
    pub(crate) fn hash_bytes_with(&self, version: HashVersion, token: &[u8]) -> Option<KeyHash> {
        if version == 0 {
            return Some(KeyHash::of_bytes(token));
        }
        let key = self.key(version)?;
        Some(KeyHash::from_bytes(key.mac(token)).with_version(version))
    }

    /// Whether `token` hashes to `stored` under the version `stored` was
    /// made under, in constant time; `None` when that version's pepper is
    /// not configured (fail closed: treat the record as unusable).
    ///
    /// ```
    /// use tower_keyauth::pepper::Peppers;
    /// let old = Peppers::new(1, [1u8; 32]).unwrap();
    /// let stored = old.hash("ak_abc.secret");
    /// let now = Peppers::new(2, [2u8; 32]).unwrap().earlier(1, [1u8; 32]).unwrap();
    /// assert_eq!(now.verify(&stored, "ak_abc.secret"), Some(true));
    /// assert_eq!(now.verify(&stored, "ak_abc.wrong"), Some(false));
    /// assert_eq!(Peppers::none().verify(&stored, "ak_abc.secret"), None);
    /// ```
    pub fn verify(&self, stored: &KeyHash, token: &str) -> Option<bool> {
        self.verify_bytes(stored, token.as_bytes())
    }

    /// [`verify`](Self::verify) of a token's bytes.
    pub(crate) fn verify_bytes(&self, stored: &KeyHash, token: &[u8]) -> Option<bool> {
        let presented = self.hash_bytes_with(stored.version(), token)?;
        Some(stored.matches(&presented))
    }

    fn key(&self, version: HashVersion) -> Option<&HmacKey> {
        let set = self.keys.as_ref()?;
        set.keys
            .iter()
            .find(|(known, _)| *known == version)
            .map(|(_, key)| key)
    }
}

impl fmt::Debug for Peppers {
    /// `Peppers { current: 2, earlier: [1] }`: versions only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let earlier: Vec<HashVersion> = self
            .keys
            .iter()
            .flat_map(|set| set.keys.iter().skip(1).map(|(version, _)| *version))
            .collect();
        f.debug_struct("Peppers")
            .field("current", &self.current_version())
            .field("earlier", &earlier)
            .finish()
    }
}

/// Why a pepper was refused. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PepperError {
    /// Version 0 is plain SHA-256 and takes no pepper.
    #[error("pepper version 0 is reserved for plain SHA-256; number peppers from 1")]
    VersionZero,
    /// The secret is shorter than [`MIN_PEPPER_LEN`].
    #[error("the pepper of version {version} has {len} bytes; at least 32 are needed")]
    TooShort {
        /// The version the secret was given for.
        version: HashVersion,
        /// Its length in bytes.
        len: usize,
    },
    /// Two peppers were given for one version.
    #[error("two peppers were given for version {version}")]
    Duplicate {
        /// The version given twice.
        version: HashVersion,
    },
    /// An earlier pepper was added to [`Peppers::none`].
    #[error("an earlier pepper needs a current one (Peppers::new) first")]
    NoCurrent,
}

/// HMAC-SHA256 (RFC 2104) with its key's two padded blocks absorbed once:
/// each MAC then costs the token's blocks plus two compressions. Written
/// out over `sha2` because the `hmac` crate's release for this `sha2` is
/// not otherwise in the tree; checked against RFC 4231's vectors below.
/// The secret itself is not kept, only the two derived states.
#[derive(Clone)]
struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

const BLOCK: usize = 64;

impl HmacKey {
    fn checked(version: HashVersion, secret: &[u8]) -> Result<Self, PepperError> {
        if version == 0 {
            return Err(PepperError::VersionZero);
        }
        if secret.len() < MIN_PEPPER_LEN {
            return Err(PepperError::TooShort {
                version,
                len: secret.len(),
            });
        }
        Ok(Self::new(secret))
    }

    fn new(secret: &[u8]) -> Self {
        let mut block = [0u8; BLOCK];
        if secret.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let mut inner_pad = [0x36u8; BLOCK];
        let mut outer_pad = [0x5cu8; BLOCK];
        for ((inner, outer), byte) in inner_pad.iter_mut().zip(&mut outer_pad).zip(&block) {
            *inner ^= byte;
            *outer ^= byte;
        }
        let key = Self {
            inner: Sha256::new_with_prefix(inner_pad),
            outer: Sha256::new_with_prefix(outer_pad),
        };
        // Best effort: the copies of the secret on this stack frame go.
        for scratch in [&mut block, &mut inner_pad, &mut outer_pad] {
            scratch.fill(0);
            std::hint::black_box(&scratch);
        }
        key
    }

    #[inline]
    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: a short key, as the construction sees it.
        assert_eq!(
            hex(&HmacKey::new(b"Jefe").mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 1: a 20-byte key.
        assert_eq!(
            hex(&HmacKey::new(&[0x0b; 20]).mac(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 6: a key longer than a block is hashed first.
        assert_eq!(
            hex(&HmacKey::new(&[0xaa; 131])
                .mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn each_version_hashes_differently_and_records_itself() {
        let peppers = Peppers::new(2, [2u8; 32])
            .unwrap()
            .earlier(1, [1u8; 32])
            .unwrap();
        let token = b"ak_abc.secret";
        let current = peppers.hash_bytes(token);
        assert_eq!(current.version(), 2);
        let earlier = peppers.hash_bytes_with(1, token).unwrap();
        let plain = peppers.hash_bytes_with(0, token).unwrap();
        assert_eq!(plain, KeyHash::of_bytes(token));
        assert_ne!(current.as_bytes(), earlier.as_bytes());
        assert_ne!(current.as_bytes(), plain.as_bytes());
        assert_eq!(peppers.hash_bytes_with(3, token), None);
        for stored in [current, earlier, plain] {
            assert_eq!(peppers.verify_bytes(&stored, token), Some(true));
            assert_eq!(peppers.verify_bytes(&stored, b"ak_abc.secreT"), Some(false));
        }
    }

    #[test]
    fn a_hash_never_matches_one_of_another_version() {
        let stored = KeyHash::of("t");
        assert!(!stored.matches(&stored.with_version(1)));
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let secret = "correct horse battery staple, 32+";
        let peppers = Peppers::new(7, secret).unwrap();
        let shown = format!("{peppers:?} {:?}", Peppers::new(8, "short-secret"));
        assert!(
            !shown.contains("correct") && !shown.contains("short-secret"),
            "{shown}"
        );
        assert_eq!(
            shown,
            "Peppers { current: 7, earlier: [] } Err(TooShort { version: 8, len: 12 })"
        );
        assert_eq!(
            Peppers::none().earlier(1, secret).unwrap_err(),
            PepperError::NoCurrent
        );
    }
}
