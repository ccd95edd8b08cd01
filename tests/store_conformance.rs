//! The conformance suite, run against every bundled store: MemoryStore,
//! SqliteStore, PostgresStore (on the server named by
//! `KEYAUTH_TEST_POSTGRES_URL`, which CI starts), and CachedStore in front
//! of MemoryStore and of SqliteStore.
//!
//! A custom harness (libtest-mimic), so that without that server the
//! PostgreSQL cases show as ignored, with the reason, and are counted as
//! such in the summary instead of passing.

mod common;
// Here alone, so that an unlisted case is dead code (see the module).
#[path = "common/conformance.rs"]
mod conformance;

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::{TempDir, fresh_postgres_schema, needs_postgres, require_postgres_url};
use conformance::{Harness, trials};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::{KeyId, OrgId, UserId};
use tower_keyauth::store::{
    CacheOptions, CachedStore, CreditSpend, Invalidate, Invalidation, IssuedKey, KeyMatch,
    KeyRecord, KeySummary, LifecycleError, Membership, Owner, PostgresStore, Rotation, SqliteStore,
    StoreError, StoreOptions,
};
use tower_keyauth::{KeyLifecycle, KeyStore, MemoryStore, NewKey};

/// Memory: "another instance" is a clone sharing the same map.
struct MemoryHarness {
    store: tokio::sync::OnceCell<MemoryStore>,
}

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryStore;

    async fn fresh() -> Self {
        Self {
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn open(&self, options: StoreOptions) -> MemoryStore {
        self.store
            .get_or_init(|| async { MemoryStore::with_options(options) })
            .await
            .clone()
    }

    async fn last_used_at(store: &MemoryStore, id: &KeyId) -> Option<SystemTime> {
        store.find_key(id).await.unwrap().unwrap().last_used_at
    }
}

/// SQLite: a database file in a fresh temp directory.
struct SqliteHarness {
    dir: TempDir,
}

#[async_trait]
impl Harness for SqliteHarness {
    type Store = SqliteStore;

    async fn fresh() -> Self {
        Self {
            dir: TempDir::new("sqlite"),
        }
    }

    async fn open(&self, options: StoreOptions) -> SqliteStore {
        let url = format!("sqlite://{}", self.dir.join("keys.db").display());
        SqliteStore::connect_with(&url, options).await.unwrap()
    }

    async fn last_used_at(store: &SqliteStore, id: &KeyId) -> Option<SystemTime> {
        store.flush_last_used().await.unwrap();
        store.find_key(id).await.unwrap().unwrap().last_used_at
    }
}

/// PostgreSQL: a fresh schema on the test server.
struct PostgresHarness {
    connect: sqlx::postgres::PgConnectOptions,
}

#[async_trait]
impl Harness for PostgresHarness {
    type Store = PostgresStore;

    async fn fresh() -> Self {
        Self {
            connect: fresh_postgres_schema(&require_postgres_url()).await,
        }
    }

    async fn open(&self, options: StoreOptions) -> PostgresStore {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(self.connect.clone())
            .await
            .unwrap();
        PostgresStore::from_pool(pool, options).await.unwrap()
    }

    async fn last_used_at(store: &PostgresStore, id: &KeyId) -> Option<SystemTime> {
        store.flush_last_used().await.unwrap();
        store.find_key(id).await.unwrap().unwrap().last_used_at
    }
}

/// A `CachedStore` in front of each instance of `H`'s store, every answer
/// kept an hour, so that no case passes because an entry ran out.
///
/// A cache cannot see a change made through another instance before its
/// TTL ends unless the store announces it: PostgresStore does (LISTEN/NOTIFY,
/// `listen_for_invalidations`), MemoryStore and SqliteStore have no such
/// channel. The cases where a second instance must see a revocation at once
/// (`a_second_instance_sees_revocations`,
/// `revocation_holds_whatever_the_clocks_say`) hold for a cache only so
/// wired, so the harness wires it: each instance's store announces its
/// changes to the other instances' caches through their
/// `CachedStore::invalidator`, before the change returns. An instance's own
/// cache hears nothing from it, so what the cache forgets after its own
/// changes is still its own doing.
///
/// Last-used times are read past the cache (`Harness::last_used_at`): the
/// cases that check them (`last_used_is_written_at_most_once_per_interval`,
/// `refused_requests_are_not_counted_as_use`) are about what is written,
/// and a cache's copy of a record predates the write.
struct CachedHarness<H> {
    inner: H,
    caches: Arc<Caches>,
}

/// The invalidators of every instance's cache, by instance.
type Caches = Mutex<Vec<Arc<dyn Invalidate>>>;

#[async_trait]
impl<H: Harness> Harness for CachedHarness<H> {
    type Store = CachedStore<Announcing<H::Store>>;

    async fn fresh() -> Self {
        Self {
            inner: H::fresh().await,
            caches: Arc::default(),
        }
    }

    async fn open(&self, options: StoreOptions) -> Self::Store {
        let store = self.inner.open(options).await;
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = CachedStore::with_options(
            Announcing {
                store,
                instance: caches.len(),
                caches: Arc::downgrade(&self.caches),
            },
            CacheOptions::default()
                .positive_ttl(Duration::from_secs(3600))
                .negative_ttl(Duration::from_secs(3600)),
        );
        caches.push(Arc::new(cached.invalidator()));
        cached
    }

    /// Past the cache (see the trait).
    async fn last_used_at(store: &Self::Store, id: &KeyId) -> Option<SystemTime> {
        H::last_used_at(&store.get_ref().store, id).await
    }
}

/// A store that tells the other instances' caches what it changed, as
/// PostgresStore's announcements do (but before the change returns).
struct Announcing<S> {
    store: S,
    instance: usize,
    caches: Weak<Caches>,
}

impl<S> Announcing<S> {
    async fn announce(&self, changes: impl IntoIterator<Item = Invalidation>) {
        let others: Vec<_> = match self.caches.upgrade() {
            Some(caches) => caches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .enumerate()
                .filter(|(instance, _)| *instance != self.instance)
                .map(|(_, cache)| cache.clone())
                .collect(),
            None => return,
        };
        for change in changes {
            for cache in &others {
                cache.invalidate(change.clone()).await;
            }
        }
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for Announcing<S> {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.store.find_key(id).await
    }

    async fn find_key_matching(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Result<KeyMatch, StoreError> {
        self.store.find_key_matching(id, presented).await
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        self.store.membership(user, org).await
    }

    async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
        self.store.spend_credits(id, cost).await
    }

    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        self.store.find_key_now(id)
    }

    fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        self.store.record_use(record, at);
    }

    fn peppers(&self) -> tower_keyauth::pepper::Peppers {
        self.store.peppers()
    }

    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        self.store.rehash(id, from, to).await
    }
}

#[async_trait]
impl<S: KeyLifecycle> KeyLifecycle for Announcing<S> {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        let owner = new_key.owner.clone();
        let issued = self.store.issue(new_key).await?;
        // A policy may have revoked the owner's other keys.
        match self.store.list(&owner).await {
            Ok(keys) => {
                self.announce(keys.into_iter().map(|key| Invalidation::Key(key.id)))
                    .await
            }
            Err(_) => self.announce([Invalidation::Everything]).await,
        }
        Ok(issued)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError> {
        self.store.list(owner).await
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        self.store.list_in_org(org).await
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        self.store.revoke(id).await?;
        self.announce([Invalidation::Key(id.clone())]).await;
        Ok(())
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError> {
        let issued = self.store.rotate_with(id, rotation).await?;
        self.announce([
            Invalidation::Key(id.clone()),
            Invalidation::Key(issued.record.id.clone()),
        ])
        .await;
        Ok(issued)
    }

    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError> {
        self.store.set_membership(user, org, membership).await?;
        self.announce([Invalidation::Membership {
            user: user.clone(),
            org: org.clone(),
        }])
        .await;
        Ok(())
    }
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut all = trials::<MemoryHarness>("memory");
    all.extend(trials::<SqliteHarness>("sqlite"));
    all.extend(trials::<CachedHarness<MemoryHarness>>("cached_memory"));
    all.extend(trials::<CachedHarness<SqliteHarness>>("cached_sqlite"));
    all.extend(
        trials::<PostgresHarness>("postgres")
            .into_iter()
            .map(needs_postgres),
    );
    libtest_mimic::run(&args, all).exit();
}
