//! The cache behind [`CachedStore`](crate::store::CachedStore): sharded maps with a
//! time to live per entry, a capacity bound, and one load per key however
//! many callers miss at once.
//!
//! Purpose-built rather than borrowed because authentication reads it on
//! every request: a hit is a shard's read lock and one map lookup. And
//! because of one race general caches leave open: a load that started before
//! an invalidation must not put its (now stale) answer back afterwards.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::store::StoreError;

/// What a load produced, shared with everyone who waited for it.
pub(crate) type Outcome<V> = Result<V, Arc<StoreError>>;

const SHARDS: usize = 16;

type Shard<K, V> = RwLock<HashMap<K, Slot<V>>>;

pub(crate) struct TtlCache<K, V> {
    shards: Box<[Shard<K, V>]>,
    per_shard: usize,
    ttl: Box<dyn Fn(&V) -> Duration + Send + Sync>,
    /// Ages the entries: read on every hit, so the coarse clock by default.
    clock: SharedClock,
    /// Picks a key's shard. foldhash, not SipHash: the shard's own map
    /// still hashes with SipHash (ids come from clients), and a shard is
    /// picked on every request.
    shard_keys: foldhash::fast::RandomState,
    next_flight: AtomicU64,
}

enum Slot<V> {
    Ready {
        value: V,
        /// When it was stored, and for how long it lives.
        stored: SystemTime,
        ttl: Duration,
    },
    /// A load is under way; its outcome arrives on `outcome`.
    Loading {
        flight: u64,
        outcome: watch::Receiver<Option<Outcome<V>>>,
    },
}

impl<K, V> TtlCache<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// Holds at most `capacity` entries; each lives for `ttl(value)` on
    /// `clock`.
    pub(crate) fn new(
        capacity: u64,
        clock: SharedClock,
        ttl: impl Fn(&V) -> Duration + Send + Sync + 'static,
    ) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        let shards = SHARDS.min(capacity);
        Self {
            shards: (0..shards).map(|_| RwLock::default()).collect(),
            per_shard: capacity / shards,
            ttl: Box::new(ttl),
            clock,
            shard_keys: foldhash::fast::RandomState::default(),
            next_flight: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        let index = (self.shard_keys.hash_one(key) as usize) % self.shards.len();
        &self.shards[index]
    }

    fn read(shard: &Shard<K, V>) -> RwLockReadGuard<'_, HashMap<K, Slot<V>>> {
        shard.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(shard: &Shard<K, V>) -> RwLockWriteGuard<'_, HashMap<K, Slot<V>>> {
        shard.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached value, if there is a live one.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.with(key, |value| value.cloned())
    }

    /// Lends `read` the cached value, if there is a live one, under its
    /// shard's read lock.
    pub(crate) fn with<R>(&self, key: &K, read: impl FnOnce(Option<&V>) -> R) -> R {
        let shard = Self::read(self.shard(key));
        match shard.get(key) {
            Some(slot) if slot.is_fresh_at(self.clock.now()) => read(slot.value()),
            _ => read(None),
        }
    }

    /// The cached value, or the outcome of `load`, run once for all callers
    /// that miss at the same time. Errors are shared with those callers but
    /// never cached.
    pub(crate) async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Outcome<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        let mut load = Some(load);
        loop {
            let (mut outcome, flight) = {
                let mut shard = Self::write(self.shard(key));
                match shard.get(key) {
                    Some(slot @ Slot::Ready { value, .. })
                        if slot.is_fresh_at(self.clock.now()) =>
                    {
                        return Ok(value.clone());
                    }
                    Some(Slot::Loading { outcome, .. }) => (outcome.clone(), None),
                    _ => {
                        let flight = self.next_flight.fetch_add(1, Ordering::Relaxed);
                        let (sender, outcome) = watch::channel(None);
                        shard.insert(
                            key.clone(),
                            Slot::Loading {
                                flight,
                                outcome: outcome.clone(),
                            },
                        );
                        (outcome, Some((flight, sender)))
                    }
                }
            };
            match flight {
                Some((flight, sender)) => {
                    // Whoever misses first loads; a waiter that finds the
                    // load abandoned starts its own (with its own `load`,
                    // which it has not spent yet).
                    let Some(load) = load.take() else {
                        return Err(Arc::new(StoreError::backend(
                            "a cache load was abandoned twice",
                        )));
                    };
                    let mut abandoned = Abandoned {
                        cache: self,
                        key,
                        flight,
                        armed: true,
                    };
                    let result = load().await.map_err(Arc::new);
                    abandoned.armed = false;
                    self.settle(key, flight, &result);
                    sender.send_replace(Some(result.clone()));
                    return result;
                }
                None => match outcome.wait_for(Option::is_some).await {
                    Ok(settled) => {
                        if let Some(result) = settled.as_ref() {
                            return result.clone();
                        }
                    }
                    // The loader was cancelled: try again.
                    Err(_) => continue,
                },
            }
        }
    }

    /// Stores the outcome of `flight`, unless the key was invalidated (or
    /// reloaded) while it ran.
    fn settle(&self, key: &K, flight: u64, result: &Outcome<V>) {
        let mut shard = Self::write(self.shard(key));
        let still_ours =
            matches!(shard.get(key), Some(Slot::Loading { flight: f, .. }) if *f == flight);
        if !still_ours {
            return;
        }
        match result {
            Ok(value) => {
                shard.remove(key);
                let now = self.clock.now();
                if shard.len() >= self.per_shard {
                    evict_one(&mut shard, now);
                }
                shard.insert(
                    key.clone(),
                    Slot::Ready {
                        value: value.clone(),
                        stored: now,
                        ttl: (self.ttl)(value),
                    },
                );
            }
            Err(_) => {
                shard.remove(key);
            }
        }
    }

    /// Forgets `key`. A load under way still answers its waiters, but its
    /// answer is not kept.
    pub(crate) fn invalidate(&self, key: &K) {
        Self::write(self.shard(key)).remove(key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            Self::write(shard).clear();
        }
    }

    /// How many values are cached (loads under way excluded).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                Self::read(shard)
                    .values()
                    .filter(|slot| matches!(slot, Slot::Ready { .. }))
                    .count()
            })
            .sum()
    }
}

impl<V> Slot<V> {
    fn is_fresh_at(&self, now: SystemTime) -> bool {
        matches!(self, Slot::Ready { stored, ttl, .. } if is_fresh(*stored, *ttl, now))
    }

    fn value(&self) -> Option<&V> {
        match self {
            Slot::Ready { value, .. } => Some(value),
            Slot::Loading { .. } => None,
        }
    }
}

/// Whether an entry stored at `stored` is still fresh at `now`: younger
/// than its `ttl`. An entry stored "after" `now` (the clock went back) is
/// not: no jump of the clock keeps an answer longer than its TTL.
fn is_fresh(stored: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(stored).is_ok_and(|age| age < ttl)
}

/// Removes a cached value to make room: an expired one if the first few
/// looked at hold one, else the first. Loads under way are never evicted.
fn evict_one<K: Hash + Eq + Clone, V>(shard: &mut HashMap<K, Slot<V>>, now: SystemTime) {
    let mut victim = None;
    for (key, slot) in shard.iter().take(8) {
        if let Slot::Ready { .. } = slot {
            let expired = !slot.is_fresh_at(now);
            if victim.is_none() || expired {
                victim = Some(key.clone());
            }
            if expired {
                break;
            }
        }
    }
    if let Some(key) = victim {
        shard.remove(&key);
    }
}

/// Clears the loading slot when a loader is dropped before it finished (its
/// request was cancelled), so that waiters retry instead of waiting forever.
struct Abandoned<'a, K: Hash + Eq + Clone, V: Clone> {
    cache: &'a TtlCache<K, V>,
    key: &'a K,
    flight: u64,
    armed: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Abandoned<'_, K, V> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut shard = TtlCache::write(self.cache.shard(self.key));
        if matches!(shard.get(self.key), Some(Slot::Loading { flight, .. }) if *flight == self.flight)
        {
            shard.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Tokio's clock, as wall time: it stands still while tokio's time is
    /// paused, and `tokio::time::advance` moves it.
    fn tokio_clock() -> SharedClock {
        let (wall, start) = (SystemTime::now(), tokio::time::Instant::now());
        SharedClock::new(move || wall + start.elapsed())
    }

    fn cache(capacity: u64) -> Arc<TtlCache<u32, Option<u32>>> {
        Arc::new(TtlCache::new(
            capacity,
            tokio_clock(),
            |value: &Option<u32>| match value {
                Some(_) => Duration::from_millis(200),
                None => Duration::from_millis(50),
            },
        ))
    }

    #[test]
    fn a_clock_that_goes_back_expires_entries() {
        let stored = SystemTime::now();
        let ttl = Duration::from_secs(30);
        assert!(is_fresh(stored, ttl, stored));
        assert!(is_fresh(stored, ttl, stored + Duration::from_secs(29)));
        assert!(!is_fresh(stored, ttl, stored + ttl));
        assert!(!is_fresh(stored, ttl, stored - Duration::from_millis(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn values_live_for_their_own_ttl() {
        let cache = cache(100);
        assert_eq!(cache.get(&1), None);
        assert_eq!(
            cache
                .get_or_load(&1, || async { Ok(Some(10)) })
                .await
                .unwrap(),
            Some(10)
        );
        assert_eq!(
            cache.get_or_load(&2, || async { Ok(None) }).await.unwrap(),
            None
        );
        assert_eq!(cache.get(&1), Some(Some(10)));
        assert_eq!(cache.get(&2), Some(None));
        tokio::time::advance(Duration::from_millis(80)).await;
        assert_eq!(cache.get(&1), Some(Some(10)), "the positive TTL is longer");
        assert_eq!(cache.get(&2), None, "the negative TTL has passed");
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(cache.get(&1), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_load() {
        let cache = cache(100);
        let loads = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load(&7, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(Some(70))
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Some(70));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_but_are_not_kept() {
        let cache = cache(100);
        let failed = cache
            .get_or_load(&1, || async { Err(StoreError::Timeout) })
            .await;
        assert!(matches!(
            failed.as_ref().map_err(|e| &**e),
            Err(StoreError::Timeout)
        ));
        assert_eq!(cache.get(&1), None);
        assert_eq!(
            cache
                .get_or_load(&1, || async { Ok(Some(1)) })
                .await
                .unwrap(),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_is_not_kept() {
        let cache = cache(100);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let loading = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(&1, || async move {
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok(Some(1)) // read before the change
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        cache.invalidate(&1); // the key changed meanwhile
        release_tx.send(()).unwrap();
        assert_eq!(loading.await.unwrap().unwrap(), Some(1));
        assert_eq!(cache.get(&1), None, "the stale answer must not be kept");
        assert_eq!(
            cache
                .get_or_load(&1, || async { Ok(Some(2)) })
                .await
                .unwrap(),
            Some(2)
        );
    }

    // Paused: the sleep below returns as soon as every other task waits.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_load_lets_a_waiter_load_instead() {
        let cache = cache(100);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load(&1, || async move {
                        let _ = started_tx.send(());
                        std::future::pending::<()>().await;
                        Ok(Some(1))
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_or_load(&1, || async { Ok(Some(2)) }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        let answer = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is not left waiting")
            .unwrap()
            .unwrap();
        assert_eq!(answer, Some(2));
    }

    #[tokio::test]
    async fn the_capacity_bounds_the_entries() {
        let cache = cache(64);
        for key in 0..1000 {
            cache
                .get_or_load(&key, || async move { Ok(Some(key)) })
                .await
                .unwrap();
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        assert!(
            cache.len() >= 32,
            "{} entries: eviction is too eager",
            cache.len()
        );
        // The newest is kept.
        assert_eq!(cache.get(&999), Some(Some(999)));
    }

    #[tokio::test]
    async fn clearing_forgets_everything() {
        let cache = cache(100);
        for key in 0..10 {
            cache
                .get_or_load(&key, || async move { Ok(Some(key)) })
                .await
                .unwrap();
        }
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
