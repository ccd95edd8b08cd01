//! [`CachedStore`]: a cache in front of any [`KeyStore`] (feature `cache`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::clock::{Clock, SharedClock};
use crate::hash::KeyHash;
use crate::ids::{KeyId, OrgId, UserId};
use crate::pepper::Peppers;
use crate::record::{KeyRecord, Membership, Owner};
use crate::store::answer_cache::{AnswerCache, Limits};
use crate::store::lifecycle::{
    IssuedKey, KeyLifecycle, KeyListing, KeyPage, KeySummary, LifecycleError, NewKey, PageRequest,
    Rotation,
};
use crate::store::{
    CreditSpend, Invalidate, Invalidation, KeyMatchRef, KeyStore, StoreError, note_use,
};

/// How long answers are kept, how many, in how much memory, and on which
/// clock.
///
/// Found keys and "no such key" answers are bounded apart: made-up ids fill
/// only their own, smaller share ([`negative_capacity`](Self::negative_capacity)),
/// so a flood of them never pushes a valid key out.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::store::CacheOptions;
/// let options = CacheOptions::default()
///     .positive_ttl(Duration::from_secs(60))
///     .negative_ttl(Duration::from_secs(5))
///     .capacity(50_000)
///     .negative_capacity(5_000)
///     .max_bytes(32 << 20);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheOptions {
    /// How long a found key (or membership) is kept. A revocation made
    /// through another instance, without invalidations, is seen within it.
    pub positive_ttl: Duration,
    /// How long "no such key" is kept: short, but long enough that a flood
    /// of made-up ids with valid checksums costs one lookup each per TTL.
    pub negative_ttl: Duration,
    /// The most found keys kept (and, separately, the most memberships).
    pub capacity: u64,
    /// The most "no such key" answers kept (and, separately, "no such
    /// membership"), apart from [`capacity`](Self::capacity): made-up ids
    /// evict only each other.
    pub negative_capacity: u64,
    /// The memory budget of the found keys (and, separately, of the
    /// memberships), in bytes. Each answer counts for its record and for
    /// what the cache spends on it, counted high enough to hold under
    /// churn: about 630 bytes for a record with short strings (up to 23
    /// bytes each) and one or two scopes; longer names and more scopes
    /// count for their length. Whichever of this and
    /// [`capacity`](Self::capacity) is reached first bounds the cache: the
    /// default 64 MiB holds the default 100 000 such keys, and a few
    /// records with long scope lists cannot grow it past the budget. The
    /// "no such key" answers are bounded by their count
    /// ([`negative_capacity`](Self::negative_capacity)), at about 630 bytes
    /// each (ids longer than 23 bytes add twice their length).
    pub max_bytes: u64,
    /// Where the cache reads the time to age its answers (set with
    /// [`clock`](Self::clock)).
    pub(crate) clock: SharedClock,
}

impl Default for CacheOptions {
    /// 30 s for found keys, 5 s for missing ones; 100 000 found keys within
    /// 64 MiB, and 10 000 missing ones; aged on
    /// [`CoarseClock`](crate::clock::CoarseClock).
    fn default() -> Self {
        Self {
            positive_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            capacity: 100_000,
            negative_capacity: 10_000,
            max_bytes: 64 << 20,
            clock: SharedClock::coarse(),
        }
    }
}

impl CacheOptions {
    /// Sets [`positive_ttl`](Self::positive_ttl).
    pub fn positive_ttl(mut self, ttl: Duration) -> Self {
        self.positive_ttl = ttl;
        self
    }

    /// Sets [`negative_ttl`](Self::negative_ttl).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Sets [`capacity`](Self::capacity).
    pub fn capacity(mut self, entries: u64) -> Self {
        self.capacity = entries;
        self
    }

    /// Sets [`negative_capacity`](Self::negative_capacity).
    pub fn negative_capacity(mut self, entries: u64) -> Self {
        self.negative_capacity = entries;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Ages cached answers on `clock` (default
    /// [`CoarseClock`](crate::clock::CoarseClock), read on every cache hit:
    /// the system clock to within a kernel tick). An answer is kept while
    /// the clock shows less than its TTL since it was stored; if the clock
    /// goes back before that moment, the answer counts as expired, so no
    /// jump of the clock keeps an answer longer than its TTL.
    ///
    /// A test can age answers without waiting by giving a clock it moves:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::{Duration, SystemTime};
    /// use tower_keyauth::store::CacheOptions;
    ///
    /// let skipped = Arc::new(AtomicU64::new(0));
    /// let clock = {
    ///     let skipped = Arc::clone(&skipped);
    ///     move || SystemTime::now() + Duration::from_secs(skipped.load(Ordering::SeqCst))
    /// };
    /// let options = CacheOptions::default().clock(clock);
    /// skipped.fetch_add(31, Ordering::SeqCst); // every positive answer has expired
    /// # let _ = options;
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = SharedClock::new(clock);
        self
    }
}

impl CacheOptions {
    fn limits(&self) -> Limits {
        Limits {
            entries: self.capacity,
            bytes: self.max_bytes,
            missing_entries: self.negative_capacity,
            found_ttl: self.positive_ttl,
            missing_ttl: self.negative_ttl,
        }
    }
}

/// Caches the answers of a [`KeyStore`]: keys by id (found or not) and
/// memberships. Concurrent misses for one id make one store call; store
/// errors are never cached (each one is a 503, and the next request asks
/// again). A lookup that was under way when its key was invalidated does not
/// put its stale answer back.
///
/// When full, it keeps the keys in use: a key seen once leaves before a key
/// used again (S3-FIFO), so a scan of new ids flushes none of them, and under
/// skewed traffic it hits at least as often as an LRU of the same size. Found
/// keys are bounded by [`CacheOptions::capacity`] and
/// [`CacheOptions::max_bytes`]; "no such key" answers by their own, smaller
/// [`CacheOptions::negative_capacity`], so a flood of made-up ids evicts no
/// valid key. [`CachedStore::stats`] tells what it holds.
///
/// Revoking, rotating or issuing through the cache invalidates what it
/// changes at once. Changes made through another instance are seen within
/// [`CacheOptions::positive_ttl`], or at once when the store announces them
/// (`PostgresStore::listen_for_invalidations` with
/// [`CachedStore::invalidator`]).
///
/// TTLs are measured on [`CacheOptions::clock`], by default the coarse
/// system clock (read on every hit, it costs 4 ns where an exact reading
/// costs 25–40). A test ages cached answers by giving a clock it moves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};
/// use tower_keyauth::store::CachedStore;
///
/// let store = CachedStore::new(MemoryStore::new());
/// let issued = store.issue(NewKey::org("acme")).await.unwrap();
/// let layer = KeyAuthLayer::new(store.clone());
/// store.revoke(&issued.record.id).await.unwrap(); // the cache forgets the key at once
/// # let _ = layer;
/// # }
/// ```
pub struct CachedStore<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    store: S,
    keys: AnswerCache<KeyId, KeyRecord>,
    memberships: AnswerCache<(UserId, OrgId), Membership>,
    options: CacheOptions,
}

impl<S> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: KeyStore> CachedStore<S> {
    /// A cache with the default [`CacheOptions`] in front of `store`.
    pub fn new(store: S) -> Self {
        Self::with_options(store, CacheOptions::default())
    }

    /// A cache with `options` in front of `store`.
    pub fn with_options(store: S, options: CacheOptions) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                keys: AnswerCache::new(options.limits(), options.clock.clone()),
                memberships: AnswerCache::new(options.limits(), options.clock.clone()),
                options,
            }),
        }
    }

    /// The store behind the cache.
    pub fn get_ref(&self) -> &S {
        &self.shared.store
    }

    /// The options the cache was built with.
    pub fn options(&self) -> &CacheOptions {
        &self.shared.options
    }

    /// Forgets one key. A lookup of it under way still answers its own
    /// requests, but its answer is not kept.
    pub fn invalidate_key(&self, id: &KeyId) {
        self.shared.keys.invalidate(id);
    }

    /// Forgets one membership.
    pub fn invalidate_membership(&self, user: &UserId, org: &OrgId) {
        self.shared
            .memberships
            .invalidate(&(user.clone(), org.clone()));
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.shared.keys.clear();
        self.shared.memberships.clear();
    }

    /// A handle that forgets what it is told, for a store's announcements of
    /// changes made elsewhere.
    pub fn invalidator(&self) -> CacheInvalidator<S> {
        CacheInvalidator(self.clone())
    }

    /// Forgets every cached key of `owner`, after a change that may have
    /// revoked some of them (a single-active-key issue).
    async fn invalidate_owner(&self, owner: &Owner) -> Result<(), LifecycleError>
    where
        S: KeyLifecycle,
    {
        for key in self.shared.store.list(owner).await? {
            self.invalidate_key(&key.id);
        }
        Ok(())
    }
}

impl<S> CachedStore<S> {
    /// How many keys are cached (found or not).
    pub fn cached_keys(&self) -> usize {
        let keys = self.shared.keys.len();
        keys.found + keys.missing
    }

    /// What the cache holds now.
    ///
    /// ```
    /// use tower_keyauth::MemoryStore;
    /// use tower_keyauth::store::CachedStore;
    /// let stats = CachedStore::new(MemoryStore::new()).stats();
    /// assert_eq!(stats.found_keys, 0);
    /// ```
    pub fn stats(&self) -> CacheStats {
        let (keys, memberships) = (self.shared.keys.len(), self.shared.memberships.len());
        CacheStats {
            found_keys: keys.found,
            missing_keys: keys.missing,
            found_key_bytes: keys.found_bytes,
            memberships: memberships.found + memberships.missing,
        }
    }
}

impl<S> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("store", &std::any::type_name::<S>())
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish()
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for CachedStore<S> {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let store = &self.shared.store;
        self.shared
            .keys
            .get_or_load(id, || store.find_key(id))
            .await
            .map_err(shared_error)
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        let store = &self.shared.store;
        self.shared
            .memberships
            .get_or_load(&(user.clone(), org.clone()), || store.membership(user, org))
            .await
            .map_err(shared_error)
    }

    /// Always the store's: credits are never cached.
    async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
        self.shared.store.spend_credits(id, cost).await
    }

    /// A cache hit answers without waiting; a miss goes through
    /// [`find_key`](KeyStore::find_key), where concurrent misses coalesce.
    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        self.shared.keys.get(id).map(Ok)
    }

    /// A cache hit lends the cached record, under its shard's read lock.
    fn with_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
        examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<SystemTime>,
    ) -> Option<Result<(), StoreError>> {
        self.shared.keys.with(id, |cached| {
            let found = cached?.as_ref();
            if let (Some(at), Some(record)) =
                (examine(KeyMatchRef::compare(found, presented)), found)
            {
                note_use(&self.shared.store, record, at);
            }
            Some(Ok(()))
        })
    }

    fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        self.shared.store.record_use(record, at);
    }

    fn peppers(&self) -> Peppers {
        self.shared.store.peppers()
    }

    /// The store's re-hash, then the key forgotten whatever it answered:
    /// either the hash changed here, or another instance changed it
    /// already, and the cached copy is stale both ways.
    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        let replaced = self.shared.store.rehash(id, from, to).await;
        self.shared.keys.invalidate(id);
        replaced
    }
}

/// Many waiters may share one failed lookup; each gets the same error.
fn shared_error(error: Arc<StoreError>) -> StoreError {
    match Arc::try_unwrap(error) {
        Ok(error) => error,
        Err(shared) => StoreError::Backend(Box::new(SharedStoreError(shared))),
    }
}

/// A store error that several waiters share.
#[derive(Debug)]
struct SharedStoreError(Arc<StoreError>);

impl fmt::Display for SharedStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SharedStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

#[async_trait]
impl<S: KeyLifecycle> KeyLifecycle for CachedStore<S> {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        let owner = new_key.owner.clone();
        let issued = self.shared.store.issue(new_key).await?;
        // A policy may have revoked the owner's other keys. The key exists
        // now, so its token must reach the caller whatever happens here: if
        // the owner's keys cannot be listed, forget every cached key.
        if let Err(error) = self.invalidate_owner(&owner).await {
            tracing::warn!(error = %error, "could not list the owner's keys after an issue; forgetting every cached key");
            self.invalidate_all();
        }
        Ok(issued)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError> {
        self.shared.store.list(owner).await
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        self.shared.store.list_in_org(org).await
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        let result = self.shared.store.revoke(id).await;
        self.invalidate_key(id);
        result
    }

    async fn list_page(
        &self,
        listing: &KeyListing,
        page: &PageRequest,
    ) -> Result<KeyPage, LifecycleError> {
        self.shared.store.list_page(listing, page).await
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError> {
        let issued = self.shared.store.rotate_with(id, rotation).await;
        self.invalidate_key(id);
        let issued = issued?;
        self.invalidate_key(&issued.record.id);
        Ok(issued)
    }

    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError> {
        let result = self
            .shared
            .store
            .set_membership(user, org, membership)
            .await;
        self.invalidate_membership(user, org);
        result
    }
}

/// What a [`CachedStore`] holds, from [`CachedStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Keys cached as found.
    pub found_keys: usize,
    /// Ids cached as "no such key".
    pub missing_keys: usize,
    /// The memory the found keys are counted for, against
    /// [`CacheOptions::max_bytes`].
    pub found_key_bytes: usize,
    /// Memberships cached, found or not.
    pub memberships: usize,
}

/// Forgets what a store announces; from [`CachedStore::invalidator`].
pub struct CacheInvalidator<S>(CachedStore<S>);

impl<S> Clone for CacheInvalidator<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> fmt::Debug for CacheInvalidator<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheInvalidator").field(&self.0).finish()
    }
}

#[async_trait]
impl<S: KeyStore> Invalidate for CacheInvalidator<S> {
    async fn invalidate(&self, change: Invalidation) {
        let cache = &self.0;
        match change {
            Invalidation::Key(id) => cache.invalidate_key(&id),
            Invalidation::Membership { user, org } => cache.invalidate_membership(&user, &org),
            _ => cache.invalidate_all(),
        }
    }
}

#[async_trait]
impl<S: KeyStore> Invalidate for CachedStore<S> {
    async fn invalidate(&self, change: Invalidation) {
        self.invalidator().invalidate(change).await;
    }
}
