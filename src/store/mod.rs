//! Where keys live: the [`KeyStore`] trait, the [`KeyLifecycle`] of the
//! bundled stores with its policies and [`StoreOptions`], and the stores.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::clock::{Clock, SharedClock};
use crate::format::KeyFormat;
use crate::hash::KeyHash;
use crate::ids::{KeyId, OrgId, UserId};
use crate::pepper::{HashVersion, Peppers};
use guard::catching;

#[cfg(feature = "cache")]
mod answer_cache;
#[cfg(feature = "cache")]
mod cached;
pub(crate) mod guard;
mod lifecycle;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod rehash;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
pub(crate) mod usage;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cached::{CacheInvalidator, CacheOptions, CacheStats, CachedStore};
pub use lifecycle::{
    InvalidCursor, IssuedKey, KeyLifecycle, KeyListing, KeyPage, KeyPolicy, KeySummary,
    LifecycleError, NewKey, PageCursor, PageRequest, Rotation,
};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{INVALIDATION_CHANNEL, InvalidationListener, PostgresStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

pub use crate::record::{KeyRecord, Membership, Owner};

/// A map keyed by key ids that only the store mints (never an id a client
/// made up), hashed with foldhash instead of SipHash: the lookup is on every
/// request, and a client cannot choose the keys that go in, so there is no
/// table to flood.
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Looks keys up for [`KeyAuthLayer`](crate::KeyAuthLayer).
///
/// Implement it for your own database: one required method, plus
/// [`membership`](KeyStore::membership) if you issue personal access tokens.
/// The store only ever sees a key's public id, never its secret; the layer
/// hashes the presented token and compares it with [`KeyRecord::hash`] in
/// constant time.
///
/// Errors fail closed: every error (and every timeout) answers the request
/// with 503 and never lets it through.
///
/// ```
/// use async_trait::async_trait;
/// use tower_keyauth::KeyStore;
/// use tower_keyauth::hash::KeyHash;
/// use tower_keyauth::ids::KeyId;
/// use tower_keyauth::store::{KeyRecord, Owner, StoreError};
///
/// /// Stands in for a database client.
/// struct Database;
///
/// impl Database {
///     async fn key_row(&self, id: &str) -> Result<Option<(String, String)>, std::io::Error> {
///         // SELECT hash, org_id FROM api_keys WHERE id = $1
///         Ok(None)
///     }
/// }
///
/// struct MyStore {
///     db: Database,
/// }
///
/// #[async_trait]
/// impl KeyStore for MyStore {
///     async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
///         let row = self.db.key_row(id.as_str()).await.map_err(StoreError::backend)?;
///         Ok(row.and_then(|(hash, org)| {
///             Some(KeyRecord::new(id.clone(), KeyHash::from_hex(&hash)?, Owner::org(org)))
///         }))
///     }
/// }
/// ```
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The key with this id, revoked and expired ones included (the layer
    /// tells those apart), or `None` when there is no such key.
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// The key with this id, if the hash of the presented token (`presented`)
    /// matches the stored one: what the layer asks for every credential.
    ///
    /// The default calls [`find_key`](KeyStore::find_key) and compares with
    /// [`KeyMatch::compare`]. Override it only when decoding a whole record
    /// costs more than reading its hash (the bundled SQL stores do, so that a
    /// forged token never pays for parsing a record's scopes), and compare
    /// with [`KeyMatch::compare_then`], which keeps the comparison constant
    /// time and an unknown id as costly as a wrong secret.
    async fn find_key_matching(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Result<KeyMatch, StoreError> {
        Ok(KeyMatch::compare(self.find_key(id).await?, presented))
    }

    /// The membership of `user` in `org`, or `None` when the user is not a
    /// member. Asked only for personal access tokens.
    ///
    /// The default answers `None`, so personal tokens are refused (403) until
    /// you implement it.
    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        let _ = (user, org);
        Ok(None)
    }

    /// Spends `cost` of key `id`'s credits, atomically in the store of
    /// record: the layer asks for every request of a key whose
    /// [`UsageLimits`](crate::limit::UsageLimits) have
    /// [`Credits`](crate::limit::Credits), after its rate limits admitted
    /// it. A refill that is due is applied first (the remaining credits are
    /// set back to the refill's amount, once per interval since the last
    /// one); then the credits are spent if there are `cost` of them, and
    /// left alone otherwise. Never below zero, however many instances spend
    /// at once.
    ///
    /// The default fails, so a store that keeps no credits refuses keys
    /// that have them (503) rather than letting them spend without limit.
    async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
        let _ = (id, cost);
        Err(StoreError::backend(std::io::Error::other(
            "this key store keeps no credits",
        )))
    }

    /// Answers [`find_key`](KeyStore::find_key) at once when the store can
    /// do so without waiting (an in-memory map, a cache hit), which saves the
    /// layer an allocation and a task wake-up. `None` means "ask
    /// `find_key`"; the default always says so.
    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        let _ = id;
        None
    }

    /// [`find_key_matching`](KeyStore::find_key_matching) without waiting,
    /// when the store can: the layer's fast path. The default compares what
    /// [`find_key_now`](KeyStore::find_key_now) answers; a store that holds
    /// its records in memory can compare in place and copy a record only
    /// when it matches, so that a wrong secret costs what an unknown id
    /// costs.
    fn find_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Option<Result<KeyMatch, StoreError>> {
        let found = self.find_key_now(id)?;
        Some(found.map(|found| KeyMatch::compare(found, presented)))
    }

    /// [`find_key_matching_now`](KeyStore::find_key_matching_now) without
    /// copying the record: the store lends the key with this id, compared
    /// with `presented`, to `examine`, which the layer uses to decide about
    /// the request and to copy only what the request's principal needs.
    /// `examine` answers the time of an admitted request, whose use the
    /// store then notes as [`record_use`](KeyStore::record_use) would.
    /// `None` means "ask [`find_key_matching`](KeyStore::find_key_matching)",
    /// and `examine` was not called.
    ///
    /// The default lends what `find_key_matching_now` answers. A store that
    /// holds its records in memory can lend them where they are (under its
    /// read lock, say), which saves a copy of the record on every request:
    /// [`MemoryStore`] and `CachedStore` do. Compare with
    /// [`KeyMatchRef::compare`], and call `examine` at most once.
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::ids::KeyId;
    /// use tower_keyauth::store::{KeyMatchRef, KeyRecord, KeyStore, Owner, StoreError};
    /// # use async_trait::async_trait;
    ///
    /// /// One key, held in memory.
    /// struct OneKey(KeyRecord);
    ///
    /// #[async_trait]
    /// impl KeyStore for OneKey {
    ///     async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
    ///         Ok((self.0.id == *id).then(|| self.0.clone()))
    ///     }
    ///
    ///     fn with_key_matching_now(
    ///         &self,
    ///         id: &KeyId,
    ///         presented: &KeyHash,
    ///         examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<SystemTime>,
    ///     ) -> Option<Result<(), StoreError>> {
    ///         let found = (self.0.id == *id).then_some(&self.0);
    ///         if let Some(at) = examine(KeyMatchRef::compare(found, presented)) {
    ///             self.record_use(&self.0, at);
    ///         }
    ///         Some(Ok(()))
    ///     }
    /// }
    /// ```
    fn with_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
        examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<SystemTime>,
    ) -> Option<Result<(), StoreError>> {
        let matched = match self.find_key_matching_now(id, presented)? {
            Ok(matched) => matched,
            Err(error) => return Some(Err(error)),
        };
        let used_at = examine(matched.lend());
        // An admitted `OtherVersion` match was settled by the caller.
        if let (Some(at), KeyMatch::Matches(record) | KeyMatch::OtherVersion(record)) =
            (used_at, &matched)
        {
            note_use(self, record, at);
        }
        Some(Ok(()))
    }

    /// Notes that `record` authenticated a request at `at`, for its
    /// `last_used_at`. Called on the request path, so it must not block:
    /// debounce and buffer the write, and make it later. Failures must stay
    /// inside. The default ignores it. (The bundled stores write at most once
    /// per key per interval-long window: `MemoryStore` in memory at once, the
    /// SQL stores from a background task, again after a failed attempt.)
    fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        let _ = (record, at);
    }

    /// The peppers this store's keys are hashed with (see
    /// [`pepper`](crate::pepper)); the layer verifies with the same ones,
    /// read once when it is built. The default is [`Peppers::none`]: plain
    /// SHA-256.
    ///
    /// A store that hashes keys with peppers answers them here. A record
    /// whose hash is of a version the peppers do not know fails closed
    /// (503, logged with the version).
    fn peppers(&self) -> Peppers {
        Peppers::none()
    }

    /// Replaces the stored hash of key `id` with `to` (made under the
    /// current pepper), but only while it is still `from`, bytes and
    /// version: a rotation, revocation or other re-hash in between is never
    /// undone. Answers whether the hash was replaced.
    ///
    /// The layer calls it after a key whose hash is of an earlier version
    /// authenticated a request, from a background task (bounded; see
    /// [`pepper`](crate::pepper)), never on the request path; a failure is
    /// logged and the key is re-hashed after a later use. The default
    /// replaces nothing, so keys stay under their version (and still
    /// verify).
    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        let _ = (id, from, to);
        Ok(false)
    }
}

/// `KeyStore` for a pointer to a store (`Arc<S>`, `Box<S>`, `S` possibly
/// `dyn KeyStore`): every method forwarded to the store.
macro_rules! forward_key_store {
    ($($pointer:ident),*) => {$(
        #[async_trait]
        impl<S: KeyStore + ?Sized> KeyStore for $pointer<S> {
            async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
                (**self).find_key(id).await
            }

            async fn find_key_matching(
                &self,
                id: &KeyId,
                presented: &KeyHash,
            ) -> Result<KeyMatch, StoreError> {
                (**self).find_key_matching(id, presented).await
            }

            async fn membership(
                &self,
                user: &UserId,
                org: &OrgId,
            ) -> Result<Option<Membership>, StoreError> {
                (**self).membership(user, org).await
            }

            async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
                (**self).spend_credits(id, cost).await
            }

            fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
                (**self).find_key_now(id)
            }

            fn find_key_matching_now(
                &self,
                id: &KeyId,
                presented: &KeyHash,
            ) -> Option<Result<KeyMatch, StoreError>> {
                (**self).find_key_matching_now(id, presented)
            }

            fn with_key_matching_now(
                &self,
                id: &KeyId,
                presented: &KeyHash,
                examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<SystemTime>,
            ) -> Option<Result<(), StoreError>> {
                (**self).with_key_matching_now(id, presented, examine)
            }

            fn record_use(&self, record: &KeyRecord, at: SystemTime) {
                (**self).record_use(record, at);
            }

            fn peppers(&self) -> Peppers {
                (**self).peppers()
            }

            async fn rehash(
                &self,
                id: &KeyId,
                from: &KeyHash,
                to: &KeyHash,
            ) -> Result<bool, StoreError> {
                (**self).rehash(id, from, to).await
            }
        }
    )*};
}

forward_key_store!(Arc, Box);

/// What [`KeyStore::spend_credits`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreditSpend {
    /// The credits were spent; this many are left.
    Spent {
        /// Credits left after this spend.
        remaining: u64,
    },
    /// Fewer than the cost are left; nothing was spent. `refill_in` is
    /// when the next refill is due, if the key has one.
    Exhausted {
        /// Credits left (fewer than the cost).
        remaining: u64,
        /// Until the next refill.
        refill_in: Option<Duration>,
    },
    /// The key has no credits: it spends nothing and is not limited by
    /// them.
    Unlimited,
    /// No key has this id (it was deleted since the lookup).
    NotFound,
}

/// What a lookup found for a presented token (see
/// [`KeyStore::find_key_matching`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Boxing the record would cost an allocation on every request; the value
// is moved once, straight into the layer's check.
#[allow(clippy::large_enum_variant)]
pub enum KeyMatch {
    /// A key has this id and the token's hash matches it.
    Matches(KeyRecord),
    /// A key has this id, but the token's hash differs (a wrong secret, or
    /// a forged token naming a real id).
    Differs,
    /// No key has this id.
    Unknown,
    /// A key has this id, hashed under another [pepper](crate::pepper)
    /// version than the presented hash: the caller, who holds the token,
    /// decides by hashing it again under the record's version
    /// ([`Peppers::verify`]). Nothing about the secret is known yet.
    OtherVersion(KeyRecord),
}

/// A [`KeyMatch`] whose record the store lends instead of copying, as
/// [`KeyStore::with_key_matching_now`] shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum KeyMatchRef<'a> {
    /// A key has this id and the token's hash matches it.
    Matches(&'a KeyRecord),
    /// A key has this id, but the token's hash differs.
    Differs,
    /// No key has this id.
    Unknown,
    /// A key has this id, hashed under another pepper version than the
    /// presented hash (see [`KeyMatch::OtherVersion`]).
    OtherVersion(&'a KeyRecord),
}

impl<'a> KeyMatchRef<'a> {
    /// Compares `presented` with the hash of `found` in constant time, an
    /// unknown id against a dummy hash (see [`KeyMatch::compare`]).
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::store::{KeyMatchRef, KeyRecord, Owner};
    /// let record = KeyRecord::new("Xb3kP9qLm2Ts", KeyHash::of("ak_Xb3kP9qLm2Ts.right"), Owner::org("acme"));
    /// let right = KeyHash::of("ak_Xb3kP9qLm2Ts.right");
    /// assert_eq!(KeyMatchRef::compare(Some(&record), &right), KeyMatchRef::Matches(&record));
    /// assert_eq!(KeyMatchRef::compare(None, &right), KeyMatchRef::Unknown);
    /// ```
    pub fn compare(found: Option<&'a KeyRecord>, presented: &KeyHash) -> Self {
        let matches = hash_matches(found.map(|record| &record.hash), presented);
        match found {
            Some(record) if matches => KeyMatchRef::Matches(record),
            Some(record) if record.hash.version() != presented.version() => {
                KeyMatchRef::OtherVersion(record)
            }
            Some(_) => KeyMatchRef::Differs,
            None => KeyMatchRef::Unknown,
        }
    }

    /// Decides an [`OtherVersion`](Self::OtherVersion) match by hashing
    /// `token` under the record's version (one more hash, constant-time
    /// comparison); any other match is already decided and stays as it is.
    /// `Err` names a version `peppers` do not know: fail closed. A revoked
    /// key under such a version is refused like a wrong secret instead: it
    /// can never be used again, so it is never re-hashed, and dropping an
    /// old pepper must not turn every request naming it into a 503.
    pub(crate) fn settle(self, peppers: &Peppers, token: &[u8]) -> Result<Self, HashVersion> {
        match self {
            KeyMatchRef::OtherVersion(record) => match peppers.verify_bytes(&record.hash, token) {
                Some(true) => Ok(KeyMatchRef::Matches(record)),
                Some(false) => Ok(KeyMatchRef::Differs),
                None if record.is_revoked() => Ok(KeyMatchRef::Differs),
                None => Err(record.hash.version()),
            },
            decided => Ok(decided),
        }
    }

    /// The match with its record copied.
    pub fn to_owned(self) -> KeyMatch {
        match self {
            KeyMatchRef::Matches(record) => KeyMatch::Matches(record.clone()),
            KeyMatchRef::Differs => KeyMatch::Differs,
            KeyMatchRef::Unknown => KeyMatch::Unknown,
            KeyMatchRef::OtherVersion(record) => KeyMatch::OtherVersion(record.clone()),
        }
    }
}

/// Notes a use for [`KeyStore::with_key_matching_now`]: a panicking
/// `record_use` does not fail the request.
pub(crate) fn note_use<S: KeyStore + ?Sized>(store: &S, record: &KeyRecord, at: SystemTime) {
    if let Err(panic) = catching(|| store.record_use(record, at)) {
        tracing::error!(key_id = %record.id, error = %panic, "recording a key's use failed; the request goes on");
    }
}

/// Compared against when the id is unknown, so that an unknown id and a
/// wrong secret cost the same.
const DUMMY_HASH: KeyHash = KeyHash::from_bytes([0x5a; 32]);

impl KeyMatch {
    /// Compares `presented` with the hash of `found` in constant time. An
    /// unknown id is compared against a dummy hash, so that it costs what a
    /// wrong secret costs.
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::store::{KeyMatch, KeyRecord, Owner};
    /// let record = KeyRecord::new("Xb3kP9qLm2Ts", KeyHash::of("ak_Xb3kP9qLm2Ts.right"), Owner::org("acme"));
    /// let wrong = KeyHash::of("ak_Xb3kP9qLm2Ts.wrong");
    /// assert_eq!(KeyMatch::compare(Some(record), &wrong), KeyMatch::Differs);
    /// assert_eq!(KeyMatch::compare(None, &wrong), KeyMatch::Unknown);
    /// ```
    pub fn compare(found: Option<KeyRecord>, presented: &KeyHash) -> Self {
        let stored = found.as_ref().map(|record| &record.hash);
        let matches = hash_matches(stored, presented);
        match found {
            Some(record) if matches => KeyMatch::Matches(record),
            Some(record) if record.hash.version() != presented.version() => {
                KeyMatch::OtherVersion(record)
            }
            Some(_) => KeyMatch::Differs,
            None => KeyMatch::Unknown,
        }
    }

    /// Like [`compare`](Self::compare) for a record the store keeps (an
    /// in-memory map): copies it only when it matches, so a wrong secret
    /// costs no copy.
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::store::{KeyMatch, KeyRecord, Owner};
    /// let record = KeyRecord::new("Xb3kP9qLm2Ts", KeyHash::of("ak_Xb3kP9qLm2Ts.right"), Owner::org("acme"));
    /// let right = KeyHash::of("ak_Xb3kP9qLm2Ts.right");
    /// assert_eq!(KeyMatch::compare_stored(Some(&record), &right), KeyMatch::Matches(record.clone()));
    /// ```
    pub fn compare_stored(found: Option<&KeyRecord>, presented: &KeyHash) -> Self {
        KeyMatchRef::compare(found, presented).to_owned()
    }

    /// The match, its record lent.
    pub fn lend(&self) -> KeyMatchRef<'_> {
        match self {
            KeyMatch::Matches(record) => KeyMatchRef::Matches(record),
            KeyMatch::Differs => KeyMatchRef::Differs,
            KeyMatch::Unknown => KeyMatchRef::Unknown,
            KeyMatch::OtherVersion(record) => KeyMatchRef::OtherVersion(record),
        }
    }

    /// Compares `presented` with a stored hash read on its own, and decodes
    /// the rest of the record with `decode` only when they match: a store
    /// that reads a row can refuse a forged token before parsing the row's
    /// scopes. `stored` is `None` when no key has the id.
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::store::{KeyMatch, KeyRecord, Owner, StoreError};
    /// let stored = KeyHash::of("ak_Xb3kP9qLm2Ts.right");
    /// let decode = || -> Result<KeyRecord, StoreError> {
    ///     Ok(KeyRecord::new("Xb3kP9qLm2Ts", stored, Owner::org("acme")))
    /// };
    /// let forged = KeyHash::of("ak_Xb3kP9qLm2Ts.forged");
    /// assert_eq!(KeyMatch::compare_then(Some(&stored), &forged, decode).unwrap(), KeyMatch::Differs);
    /// ```
    pub fn compare_then<E>(
        stored: Option<&KeyHash>,
        presented: &KeyHash,
        decode: impl FnOnce() -> Result<KeyRecord, E>,
    ) -> Result<Self, E> {
        let matches = hash_matches(stored, presented);
        Ok(match stored {
            Some(_) if matches => KeyMatch::Matches(decode()?),
            Some(stored) if stored.version() != presented.version() => {
                KeyMatch::OtherVersion(decode()?)
            }
            Some(_) => KeyMatch::Differs,
            None => KeyMatch::Unknown,
        })
    }
}

/// The one comparison of a presented hash with a stored one (or with the
/// dummy hash when there is none): constant time either way.
fn hash_matches(stored: Option<&KeyHash>, presented: &KeyHash) -> bool {
    match stored {
        Some(stored) => stored.matches(presented),
        None => {
            std::hint::black_box(DUMMY_HASH.matches(presented));
            false
        }
    }
}

/// A store could not answer. The request it was asked for gets a 503.
///
/// The message names the failure, never a key's secret (stores never see
/// one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time.
    #[error("the key store did not answer in time")]
    Timeout,
    /// The backend failed (connection lost, query error, …).
    #[error("the key store failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
    /// Store code panicked; the panic's message is kept for the log.
    #[error("the key store panicked: {0}")]
    Panicked(String),
}

impl StoreError {
    /// Wraps a backend error.
    ///
    /// ```
    /// use tower_keyauth::store::StoreError;
    /// let error = StoreError::backend(std::io::Error::other("connection refused"));
    /// assert_eq!(error.to_string(), "the key store failed");
    /// ```
    pub fn backend(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::Backend(error.into())
    }
}

/// Settings shared by the bundled stores: how keys are minted, how many an
/// owner may hold, and how often `last_used_at` is written.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::{KeyFormat, MemoryStore};
/// use tower_keyauth::store::{KeyPolicy, StoreOptions};
///
/// let store = MemoryStore::with_options(
///     StoreOptions::default()
///         .policy(KeyPolicy::AtMost(10))
///         .last_used_interval(Duration::from_secs(300)),
/// );
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// The format of minted keys; give the layer the same one.
    pub format: KeyFormat,
    /// The default [`KeyPolicy`] of [`issue`](crate::KeyLifecycle::issue).
    pub policy: KeyPolicy,
    /// At most one `last_used_at` write per key per this interval; `None`
    /// turns tracking off.
    ///
    /// Time is cut into windows of this length (counted from the Unix
    /// epoch), and the first use of a key in a window is the one written.
    /// On the request path, tracking takes no lock: a key already noted in
    /// the current window costs comparisons of times and, most often, two
    /// atomic loads, in a table of up to 131 072 slots (1 MiB allocated per
    /// store with tracking on). The part of it in use grows with the keys
    /// in use in a window (64 KiB for a few thousand, 256 KiB for 10⁴, all
    /// of it from about 3 × 10⁴), so that even 10⁵ rarely collide; a key
    /// that does is written a little more often, never less.
    ///
    /// The SQL stores queue the first use of each key in a window for their
    /// background writer, which runs once per interval: at most 16 384
    /// pending uses between two writes (about 768 KiB, allocated with the
    /// store), plus, after a failed write, at most as many kept for the next
    /// attempt (about 640 KiB), whatever the number of keys (ids longer
    /// than 23 bytes add their text, shared with the record). A use that
    /// finds the queue full is not marked noted, so the key is noted again
    /// by a later request, and it wakes the writer at once: nothing is lost
    /// for a key in steady use. [`MemoryStore`] writes its map at once and
    /// queues nothing.
    pub last_used_interval: Option<Duration>,
    /// Where issuing, rotating and revoking read the time (set with
    /// [`clock`](Self::clock)).
    pub(crate) clock: SharedClock,
    /// What issued and rotated keys are hashed with (set with
    /// [`peppers`](Self::peppers)).
    pub(crate) peppers: Peppers,
}

/// The default interval between two `last_used_at` writes of one key.
pub const DEFAULT_LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            format: KeyFormat::default(),
            policy: KeyPolicy::default(),
            last_used_interval: Some(DEFAULT_LAST_USED_INTERVAL),
            clock: SharedClock::default(),
            peppers: Peppers::none(),
        }
    }
}

impl StoreOptions {
    /// Mints keys in `format`.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// Applies `policy` to every issue that does not bring its own.
    pub fn policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Writes `last_used_at` at most once per key per `interval` (default
    /// one minute).
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = Some(interval);
        self
    }

    /// Does not track `last_used_at`.
    pub fn without_last_used(mut self) -> Self {
        self.last_used_interval = None;
        self
    }

    /// Reads the time for creation, expiry, grace periods and revocation
    /// records from `clock` (default [`SystemClock`](crate::clock::SystemClock)),
    /// for tests that must not wait, or to simulate an instance whose clock
    /// is off.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = SharedClock::new(clock);
        self
    }

    /// Hashes issued and rotated keys under the current version of
    /// `peppers`, and verifies keys of every version they know (default
    /// [`Peppers::none`]: plain SHA-256). The layer over this store takes
    /// the same peppers from it. See [`pepper`](crate::pepper).
    ///
    /// ```
    /// use tower_keyauth::MemoryStore;
    /// use tower_keyauth::pepper::Peppers;
    /// use tower_keyauth::store::StoreOptions;
    ///
    /// let options = StoreOptions::default().peppers(Peppers::new(1, [42u8; 32]).unwrap());
    /// assert!(format!("{options:?}").contains("Peppers { current: 1, earlier: [] }"));
    /// let store = MemoryStore::with_options(options);
    /// # let _ = store;
    /// ```
    pub fn peppers(mut self, peppers: Peppers) -> Self {
        self.peppers = peppers;
        self
    }

    /// The time now, on this store's clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }
}

/// A change made elsewhere (another instance, another process) that a cache
/// must forget, as `PostgresStore::listen_for_invalidations` announces them
/// (feature `postgres`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// The key changed: revoked, rotated, or newly issued.
    Key(KeyId),
    /// The user's membership of the organization changed.
    Membership {
        /// The user.
        user: UserId,
        /// The organization.
        org: OrgId,
    },
    /// Changes may have been missed (a lost connection): forget everything.
    Everything,
}

/// Something that forgets what an [`Invalidation`] names, such as a cache.
///
/// ```
/// use async_trait::async_trait;
/// use tower_keyauth::store::{Invalidate, Invalidation};
///
/// struct Log;
///
/// #[async_trait]
/// impl Invalidate for Log {
///     async fn invalidate(&self, change: Invalidation) {
///         println!("forget {change:?}");
///     }
/// }
/// ```
#[async_trait]
pub trait Invalidate: Send + Sync + 'static {
    /// Forgets what `change` names.
    async fn invalidate(&self, change: Invalidation);
}
