//! The cache behind [`CachedStore`](crate::store::CachedStore): the answers
//! of a store ("this record", or "no such key"), each kept for its TTL, in
//! sharded maps bounded by entries and by bytes, with one load per key
//! however many callers miss at once.
//!
//! Purpose-built rather than borrowed, for three reasons that general caches
//! (`moka`, `quick_cache`) do not meet together:
//!
//! - A hit lends the record under the shard's read lock: no clone and no
//!   shared counter touched on the request path (a cache of `Arc`s would
//!   bump one per request, on a line every core shares for a hot key).
//! - A load that started before an invalidation must not put its (now
//!   stale, perhaps revoked) answer back afterwards, not even for an
//!   instant: the check and the insert happen under one write lock, which a
//!   cache with its own locks cannot offer.
//! - "No such key" answers live apart from found ones, in a smaller FIFO of
//!   their own, so a flood of made-up ids never pushes out a valid key.
//!
//! Found answers are evicted by S3-FIFO (Yang et al., SOSP 2023): a new
//! answer enters a small FIFO; one used again while there moves to the main
//! queue when it reaches the front, the others leave (their fingerprints are
//! remembered for a while, and an answer loaded again soon after goes
//! straight to the main queue); the main queue gives each answer as many
//! second chances as it had uses (up to three) since it last passed the
//! front. A scan of once-used keys thus passes through the small queue
//! without flushing the keys in steady use, and under skewed workloads the
//! hit rate is at least an LRU's (BENCHMARKS.md compares them side by side).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::mem::size_of;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::ids::{KeyId, OrgId, UserId};
use crate::record::{KeyRecord, Membership};
use crate::store::StoreError;

/// What a load produced, shared with everyone who waited for it.
pub(crate) type Outcome<T> = Result<Option<T>, Arc<StoreError>>;

/// The heap memory a cached key or value holds, for the byte budget.
pub(crate) trait HeapSize {
    fn heap_bytes(&self) -> usize;
}

impl HeapSize for KeyId {
    fn heap_bytes(&self) -> usize {
        KeyId::heap_bytes(self)
    }
}

impl HeapSize for (UserId, OrgId) {
    fn heap_bytes(&self) -> usize {
        self.0.heap_bytes() + self.1.heap_bytes()
    }
}

impl HeapSize for KeyRecord {
    fn heap_bytes(&self) -> usize {
        KeyRecord::heap_bytes(self)
    }
}

impl HeapSize for Membership {
    fn heap_bytes(&self) -> usize {
        Membership::heap_bytes(self)
    }
}

/// How much an [`AnswerCache`] holds, and for how long.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// The most found answers.
    pub(crate) entries: u64,
    /// The most bytes found answers may take, as [`weight`] counts them.
    pub(crate) bytes: u64,
    /// The most "not found" answers.
    pub(crate) missing_entries: u64,
    /// How long a found answer is kept.
    pub(crate) found_ttl: Duration,
    /// How long a "not found" answer is kept.
    pub(crate) missing_ttl: Duration,
}

/// The most shards: each has its own lock.
const SHARDS: usize = 16;

/// The fewest entries a shard is given (a smaller cache has fewer shards):
/// eviction picks its victims within a shard, so a shard must be large
/// enough for its recency and frequency to mean something.
const MIN_SHARD_ENTRIES: usize = 1024;

/// The most uses an answer is credited with (each buys one pass through the
/// main queue).
const MAX_USES: u8 = 3;

/// The share of a shard the small queue may hold before it is evicted from
/// first, in tenths.
const SMALL_QUEUE_TENTHS: usize = 1;

pub(crate) struct AnswerCache<K, T> {
    shards: Box<[RwLock<Shard<K, T>>]>,
    limits: Limits,
    /// Per shard.
    shard_limits: ShardLimits,
    /// Ages the entries: read on every hit, so the coarse clock by default.
    clock: SharedClock,
    /// Picks a key's shard and fingerprints it. foldhash, not SipHash: the
    /// shard's own map still hashes with SipHash (ids come from clients),
    /// and a shard is picked on every request.
    shard_keys: foldhash::fast::RandomState,
    next_flight: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct ShardLimits {
    entries: usize,
    bytes: usize,
    missing_entries: usize,
}

struct Shard<K, T> {
    map: HashMap<K, Slot<T>>,
    /// Found answers not yet past the front since they were stored.
    small: Queue<K>,
    /// Found answers used again while in the small queue (or loaded again
    /// soon after they left it).
    main: Queue<K>,
    /// "Not found" answers, oldest first.
    missing: Queue<K>,
    /// Fingerprints of answers that left the small queue unused.
    ghosts: Ghosts,
    /// Tells apart two stays of one key in a queue.
    next_stay: u64,
}

enum Slot<T> {
    Ready(Box<Ready<T>>),
    /// A load is under way; its outcome arrives on `outcome`.
    Loading {
        flight: u64,
        outcome: watch::Receiver<Option<Outcome<T>>>,
    },
}

struct Ready<T> {
    value: Option<T>,
    /// When it was stored.
    stored: SystemTime,
    /// Which queue holds it, and which of its places there is current.
    queue: Which,
    stay: u64,
    /// Its weight, as counted in its queue.
    bytes: usize,
    /// Uses since it last passed the front of its queue, up to
    /// [`MAX_USES`]. Counted under the read lock.
    uses: AtomicU8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Small,
    Main,
    Missing,
}

/// A FIFO of keys with the count and weight of the current entries in it.
/// A key removed from the map leaves its place behind, skipped when it
/// reaches the front (or dropped when the queue is compacted).
struct Queue<K> {
    places: VecDeque<(K, u64)>,
    entries: usize,
    bytes: usize,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Self {
            places: VecDeque::new(),
            entries: 0,
            bytes: 0,
        }
    }
}

/// A bounded FIFO set of fingerprints.
#[derive(Default)]
struct Ghosts {
    order: VecDeque<u64>,
    members: HashSet<u64, foldhash::fast::RandomState>,
}

impl Ghosts {
    fn remember(&mut self, fingerprint: u64, limit: usize) {
        if self.members.insert(fingerprint) {
            self.order.push_back(fingerprint);
        }
        while self.order.len() > limit {
            if let Some(oldest) = self.order.pop_front() {
                self.members.remove(&oldest);
            }
        }
    }

    /// Whether `fingerprint` was remembered (and forgets it).
    fn recall(&mut self, fingerprint: u64) -> bool {
        self.members.remove(&fingerprint)
    }
}

/// The bytes one cached answer is counted for: the heap memory of its key
/// (held twice: in the map and in its queue) and of its value, plus what
/// the cache spends on it, counted high enough to hold under churn:
/// three slots of the map (a table holds up to 8/7 of its entries, rounded
/// up to a power of two, and twice that once removals have made it grow),
/// its box with the allocator's header, three places in a queue (places
/// left behind by removals, and a queue's spare capacity), and a
/// fingerprint remembered after its eviction.
fn weight<K: HeapSize, T: HeapSize>(key: &K, value: &Option<T>) -> usize {
    const GHOST: usize = 48;
    const ALLOCATION_HEADER: usize = 16;
    let bookkeeping = 3 * (size_of::<(K, Slot<T>)>() + 1)
        + size_of::<Ready<T>>()
        + ALLOCATION_HEADER
        + 3 * size_of::<(K, u64)>()
        + GHOST;
    bookkeeping + 2 * key.heap_bytes() + value.as_ref().map_or(0, HeapSize::heap_bytes)
}

impl<K, T> AnswerCache<K, T>
where
    K: Hash + Eq + Clone + HeapSize,
    T: Clone + HeapSize,
{
    /// An empty cache that holds at most what `limits` allow, aged on
    /// `clock`.
    pub(crate) fn new(limits: Limits, clock: SharedClock) -> Self {
        let entries = usize::try_from(limits.entries).unwrap_or(usize::MAX).max(1);
        let shards = (entries / MIN_SHARD_ENTRIES).clamp(1, SHARDS);
        let per_shard = |total: u64| (usize::try_from(total).unwrap_or(usize::MAX) / shards).max(1);
        Self {
            shards: (0..shards)
                .map(|_| {
                    RwLock::new(Shard {
                        map: HashMap::new(),
                        small: Queue::default(),
                        main: Queue::default(),
                        missing: Queue::default(),
                        ghosts: Ghosts::default(),
                        next_stay: 0,
                    })
                })
                .collect(),
            shard_limits: ShardLimits {
                entries: per_shard(limits.entries),
                bytes: per_shard(limits.bytes),
                missing_entries: per_shard(limits.missing_entries),
            },
            limits,
            clock,
            shard_keys: foldhash::fast::RandomState::default(),
            next_flight: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &K) -> (&RwLock<Shard<K, T>>, u64) {
        let fingerprint = self.shard_keys.hash_one(key);
        let index = (fingerprint as usize) % self.shards.len();
        (&self.shards[index], fingerprint)
    }

    fn read(shard: &RwLock<Shard<K, T>>) -> RwLockReadGuard<'_, Shard<K, T>> {
        shard.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(shard: &RwLock<Shard<K, T>>) -> RwLockWriteGuard<'_, Shard<K, T>> {
        shard.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn ttl(&self, value: &Option<T>) -> Duration {
        match value {
            Some(_) => self.limits.found_ttl,
            None => self.limits.missing_ttl,
        }
    }

    /// The cached answer, if there is a live one.
    pub(crate) fn get(&self, key: &K) -> Option<Option<T>> {
        self.with(key, |answer| answer.cloned())
    }

    /// Lends `read` the cached answer, if there is a live one, under its
    /// shard's read lock, and counts the use.
    pub(crate) fn with<R>(&self, key: &K, read: impl FnOnce(Option<&Option<T>>) -> R) -> R {
        let shard = Self::read(self.shard_of(key).0);
        match shard.map.get(key) {
            Some(Slot::Ready(ready)) if self.is_fresh(ready) => {
                ready.count_use();
                read(Some(&ready.value))
            }
            _ => read(None),
        }
    }

    fn is_fresh(&self, ready: &Ready<T>) -> bool {
        is_fresh(ready.stored, self.ttl(&ready.value), self.clock.now())
    }

    /// The cached answer, or the outcome of `load`, run once for all callers
    /// that miss at the same time. Errors are shared with those callers but
    /// never cached.
    pub(crate) async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Outcome<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, StoreError>>,
    {
        let mut load = Some(load);
        loop {
            let (mut outcome, flight) = {
                let mut shard = Self::write(self.shard_of(key).0);
                match shard.map.get(key) {
                    Some(Slot::Ready(ready)) if self.is_fresh(ready) => {
                        ready.count_use();
                        return Ok(ready.value.clone());
                    }
                    Some(Slot::Loading { outcome, .. }) => (outcome.clone(), None),
                    _ => {
                        let flight = self.next_flight.fetch_add(1, Ordering::Relaxed);
                        let (sender, outcome) = watch::channel(None);
                        let loading = Slot::Loading {
                            flight,
                            outcome: outcome.clone(),
                        };
                        if let Some(Slot::Ready(expired)) = shard.map.insert(key.clone(), loading) {
                            shard.forget(&expired);
                        }
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
    /// reloaded) while it ran. Checked and stored under one write lock, so
    /// an invalidation is either seen here or comes after the store.
    fn settle(&self, key: &K, flight: u64, result: &Outcome<T>) {
        let (shard, fingerprint) = self.shard_of(key);
        let mut shard = Self::write(shard);
        let still_ours =
            matches!(shard.map.get(key), Some(Slot::Loading { flight: f, .. }) if *f == flight);
        if !still_ours {
            return;
        }
        shard.map.remove(key);
        let Ok(value) = result else {
            return;
        };
        let bytes = weight(key, value);
        if value.is_some() && bytes > self.shard_limits.bytes {
            return; // larger than a shard may hold: answered, not kept
        }
        let queue = match value {
            None => Which::Missing,
            Some(_) if shard.ghosts.recall(fingerprint) => Which::Main,
            Some(_) => Which::Small,
        };
        // Room first, so that the new answer is never its own victim.
        match queue {
            Which::Missing => shard.evict_missing(self, 1),
            Which::Small | Which::Main => shard.evict_found(self, bytes),
        }
        let stay = shard.next_stay;
        shard.next_stay += 1;
        shard.queue_mut(queue).push(key.clone(), stay, bytes);
        shard.map.insert(
            key.clone(),
            Slot::Ready(Box::new(Ready {
                value: value.clone(),
                stored: self.clock.now(),
                queue,
                stay,
                bytes,
                uses: AtomicU8::new(0),
            })),
        );
        for queue in [Which::Small, Which::Main, Which::Missing] {
            shard.compact(queue);
        }
    }

    /// Forgets `key`. A load under way still answers its waiters, but its
    /// answer is not kept.
    pub(crate) fn invalidate(&self, key: &K) {
        let mut shard = Self::write(self.shard_of(key).0);
        if let Some(Slot::Ready(ready)) = shard.map.remove(key) {
            shard.forget(&ready);
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = Self::write(shard);
            shard.map.clear();
            shard.small = Queue::default();
            shard.main = Queue::default();
            shard.missing = Queue::default();
            shard.ghosts = Ghosts::default();
        }
    }

    /// How many answers are cached, found and not found (loads under way
    /// excluded).
    pub(crate) fn len(&self) -> CachedCount {
        let mut count = CachedCount::default();
        for shard in self.shards.iter() {
            let shard = Self::read(shard);
            count.found += shard.small.entries + shard.main.entries;
            count.missing += shard.missing.entries;
            count.found_bytes += shard.small.bytes + shard.main.bytes;
        }
        count
    }
}

/// What an [`AnswerCache`] holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CachedCount {
    pub(crate) found: usize,
    pub(crate) missing: usize,
    /// The weight of the found answers.
    pub(crate) found_bytes: usize,
}

impl<T> Ready<T> {
    fn count_use(&self) {
        // Read before writing: a key in steady use stops writing the shared
        // line once it has its full credit.
        let uses = self.uses.load(Ordering::Relaxed);
        if uses < MAX_USES {
            self.uses.store(uses + 1, Ordering::Relaxed);
        }
    }
}

impl<K> Queue<K> {
    fn push(&mut self, key: K, stay: u64, bytes: usize) {
        self.places.push_back((key, stay));
        self.entries += 1;
        self.bytes += bytes;
    }

    fn release(&mut self, bytes: usize) {
        self.entries -= 1;
        self.bytes -= bytes;
    }
}

impl<K, T> Shard<K, T>
where
    K: Hash + Eq + Clone + HeapSize,
    T: Clone + HeapSize,
{
    fn queue_mut(&mut self, which: Which) -> &mut Queue<K> {
        match which {
            Which::Small => &mut self.small,
            Which::Main => &mut self.main,
            Which::Missing => &mut self.missing,
        }
    }

    /// Takes a removed answer out of its queue's count (its place is
    /// skipped later).
    fn forget(&mut self, ready: &Ready<T>) {
        self.queue_mut(ready.queue).release(ready.bytes);
    }

    /// The current entry for a place in `which`, if the place is current.
    fn current(&self, which: Which, key: &K, stay: u64) -> Option<&Ready<T>> {
        match self.map.get(key) {
            Some(Slot::Ready(ready)) if ready.queue == which && ready.stay == stay => Some(ready),
            _ => None,
        }
    }

    fn remove_current(&mut self, key: &K) {
        if let Some(Slot::Ready(ready)) = self.map.remove(key) {
            self.forget(&ready);
        }
    }

    /// Evicts found answers until the shard has room, within its entry and
    /// byte limits, for one more of `incoming_bytes`: from the small queue while it holds more than its share (or
    /// the main queue is empty), else from the main queue.
    fn evict_found(&mut self, cache: &AnswerCache<K, T>, incoming_bytes: usize) {
        let limits = cache.shard_limits;
        loop {
            let entries = self.small.entries + self.main.entries + 1;
            let bytes = self.small.bytes + self.main.bytes + incoming_bytes;
            if entries <= limits.entries && bytes <= limits.bytes {
                return;
            }
            let small_over_share = self.small.entries * 10 > limits.entries * SMALL_QUEUE_TENTHS
                || self.small.bytes * 10 > limits.bytes * SMALL_QUEUE_TENTHS;
            let evicted = if self.small.entries > 0 && (small_over_share || self.main.entries == 0)
            {
                self.evict_from_small(cache)
            } else {
                self.evict_from_main(cache)
            };
            if !evicted {
                return; // nothing left to evict (cannot happen while over)
            }
        }
    }

    /// Moves the front of the small queue on: to the main queue if it was
    /// used again, else out (remembering its fingerprint). Returns whether
    /// anything changed.
    fn evict_from_small(&mut self, cache: &AnswerCache<K, T>) -> bool {
        while let Some((key, stay)) = self.small.places.pop_front() {
            let Some(ready) = self.current(Which::Small, &key, stay) else {
                continue; // left behind by a removal
            };
            let (used, bytes, fresh) = (
                ready.uses.load(Ordering::Relaxed) > 0,
                ready.bytes,
                cache.is_fresh(ready),
            );
            if used && fresh {
                let stay = self.next_stay;
                self.next_stay += 1;
                if let Some(Slot::Ready(ready)) = self.map.get_mut(&key) {
                    ready.queue = Which::Main;
                    ready.stay = stay;
                    *ready.uses.get_mut() = 0;
                }
                self.small.release(bytes);
                self.main.push(key, stay, bytes);
                return true;
            }
            if fresh {
                // As many as the shard holds answers: each is counted for one.
                let limit = self.small.entries + self.main.entries;
                self.ghosts.remember(cache.shard_keys.hash_one(&key), limit);
            }
            self.remove_current(&key);
            return true;
        }
        false
    }

    /// Evicts from the main queue: an answer with uses left goes to the back
    /// with one use fewer, the first without leaves.
    fn evict_from_main(&mut self, cache: &AnswerCache<K, T>) -> bool {
        while let Some((key, stay)) = self.main.places.pop_front() {
            let Some(ready) = self.current(Which::Main, &key, stay) else {
                continue;
            };
            let uses = ready.uses.load(Ordering::Relaxed);
            if uses > 0 && cache.is_fresh(ready) {
                ready.uses.store(uses - 1, Ordering::Relaxed);
                self.main.places.push_back((key, stay));
                continue;
            }
            self.remove_current(&key);
            return true;
        }
        false
    }

    /// Evicts the oldest "not found" answers beyond their limit.
    fn evict_missing(&mut self, cache: &AnswerCache<K, T>, incoming: usize) {
        while self.missing.entries + incoming > cache.shard_limits.missing_entries {
            let Some((key, stay)) = self.missing.places.pop_front() else {
                return;
            };
            if self.current(Which::Missing, &key, stay).is_some() {
                self.remove_current(&key);
            }
        }
    }

    /// Drops the places left behind by removals once they outnumber the
    /// current ones, so that however often keys are invalidated and loaded
    /// again, a queue holds at most twice as many places as the shard's
    /// limit allows entries (plus a few).
    fn compact(&mut self, which: Which) {
        let queue = match which {
            Which::Small => &self.small,
            Which::Main => &self.main,
            Which::Missing => &self.missing,
        };
        if queue.places.len() <= 2 * queue.entries + 16 {
            return;
        }
        let mut places = std::mem::take(&mut self.queue_mut(which).places);
        places.retain(|(key, stay)| self.current(which, key, *stay).is_some());
        self.queue_mut(which).places = places;
    }
}

/// Whether an entry stored at `stored` is still fresh at `now`: younger
/// than its `ttl`. An entry stored "after" `now` (the clock went back) is
/// not: no jump of the clock keeps an answer longer than its TTL.
fn is_fresh(stored: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    now.duration_since(stored).is_ok_and(|age| age < ttl)
}

/// Clears the loading slot when a loader is dropped before it finished (its
/// request was cancelled), so that waiters retry instead of waiting forever.
struct Abandoned<'a, K, T>
where
    K: Hash + Eq + Clone + HeapSize,
    T: Clone + HeapSize,
{
    cache: &'a AnswerCache<K, T>,
    key: &'a K,
    flight: u64,
    armed: bool,
}

impl<K, T> Drop for Abandoned<'_, K, T>
where
    K: Hash + Eq + Clone + HeapSize,
    T: Clone + HeapSize,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut shard = AnswerCache::write(self.cache.shard_of(self.key).0);
        if matches!(shard.map.get(self.key), Some(Slot::Loading { flight, .. }) if *flight == self.flight)
        {
            shard.map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    impl HeapSize for u32 {
        fn heap_bytes(&self) -> usize {
            0
        }
    }

    /// Tokio's clock, as wall time: it stands still while tokio's time is
    /// paused, and `tokio::time::advance` moves it.
    fn tokio_clock() -> SharedClock {
        let (wall, start) = (SystemTime::now(), tokio::time::Instant::now());
        SharedClock::new(move || wall + start.elapsed())
    }

    fn limits(entries: u64) -> Limits {
        Limits {
            entries,
            bytes: u64::MAX,
            missing_entries: entries,
            found_ttl: Duration::from_millis(200),
            missing_ttl: Duration::from_millis(50),
        }
    }

    fn cache(entries: u64) -> Arc<AnswerCache<u32, u32>> {
        Arc::new(AnswerCache::new(limits(entries), tokio_clock()))
    }

    /// Loads `key` as found (with itself as its value); whether it was a
    /// hit.
    async fn use_key(cache: &AnswerCache<u32, u32>, key: u32) -> bool {
        let hit = AtomicUsize::new(1);
        cache
            .get_or_load(&key, || async {
                hit.store(0, Ordering::SeqCst);
                Ok(Some(key))
            })
            .await
            .unwrap();
        hit.load(Ordering::SeqCst) == 1
    }

    async fn use_missing(cache: &AnswerCache<u32, u32>, key: u32) {
        cache
            .get_or_load(&key, || async { Ok(None) })
            .await
            .unwrap();
    }

    #[test]
    fn a_record_is_counted_for_what_it_takes() {
        let record = KeyRecord::new(
            "k00000001",
            crate::hash::KeyHash::of("secret"),
            crate::record::Owner::org("acme"),
        );
        let counted = weight(&record.id, &Some(record.clone()));
        // The record itself, inline, and the bookkeeping.
        assert!(counted > size_of::<KeyRecord>() + 300, "{counted}");
        assert!(counted < 1024, "{counted}");
        let many =
            crate::scope::Scopes::parse((0..100).map(|i| format!("scope.number{i:04}"))).unwrap();
        let large = KeyRecord {
            scopes: many,
            ..record
        };
        assert!(weight(&large.id, &Some(large.clone())) > counted + 100 * 24);
        println!(
            "a record is counted for {counted} bytes; size_of KeyRecord {}",
            size_of::<KeyRecord>()
        );
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
        use_missing(&cache, 2).await;
        assert_eq!(cache.get(&1), Some(Some(10)));
        assert_eq!(cache.get(&2), Some(None));
        tokio::time::advance(Duration::from_millis(80)).await;
        assert_eq!(cache.get(&1), Some(Some(10)), "the positive TTL is longer");
        assert_eq!(cache.get(&2), None, "the negative TTL has passed");
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(cache.get(&1), None);
        // An expired answer is replaced, and counted once.
        assert!(!use_key(&cache, 1).await);
        assert_eq!(cache.len().found, 1);
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
        assert!(!use_key(&cache, 1).await);
        assert_eq!(cache.get(&1), Some(Some(1)));
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
        assert_eq!(cache.len(), CachedCount::default());
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
            use_key(&cache, key).await;
        }
        let held = cache.len().found;
        assert!(held <= 64, "{held} entries");
        assert!(held >= 60, "{held} entries: eviction is too eager");
        // The newest is kept.
        assert_eq!(cache.get(&999), Some(Some(999)));
    }

    #[tokio::test]
    async fn keys_in_use_survive_a_scan() {
        // One shard, so that the counts are exact.
        let cache = cache(10);
        for key in 0..5 {
            use_key(&cache, key).await;
            assert!(use_key(&cache, key).await);
        }
        for scanned in 100..1000 {
            use_key(&cache, scanned).await;
            for key in 0..5 {
                assert!(
                    use_key(&cache, key).await,
                    "key {key} was evicted by the scan"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_key_loaded_again_soon_after_its_eviction_is_kept_longer() {
        let cache = cache(10);
        use_key(&cache, 0).await; // used once, then pushed out by a scan
        for scanned in 100..120 {
            use_key(&cache, scanned).await;
        }
        assert!(!use_key(&cache, 0).await);
        // Remembered: it went to the main queue, which the next scan spares
        // while it is used.
        for scanned in 200..300 {
            use_key(&cache, scanned).await;
            assert!(use_key(&cache, 0).await);
        }
    }

    #[tokio::test]
    async fn a_key_back_from_its_eviction_is_not_evicted_by_its_own_insertion() {
        let cache = cache(10);
        use_key(&cache, 0).await; // used once: leaves the small queue unused
        for key in 1..=10 {
            use_key(&cache, key).await;
            use_key(&cache, key).await;
        }
        use_key(&cache, 11).await;
        for key in 2..=10 {
            assert!(use_key(&cache, key).await);
        }
        assert!(!use_key(&cache, 0).await); // remembered: to the main queue
        assert_eq!(cache.get(&0), Some(Some(0)), "kept");
    }

    #[tokio::test]
    async fn missing_answers_never_evict_found_ones() {
        let cache = Arc::new(AnswerCache::<u32, u32>::new(
            Limits {
                missing_entries: 4,
                ..limits(10)
            },
            tokio_clock(),
        ));
        for key in 0..10 {
            use_key(&cache, key).await;
        }
        for unknown in 1000..2000 {
            use_missing(&cache, unknown).await;
        }
        let count = cache.len();
        assert_eq!((count.found, count.missing), (10, 4));
        for key in 0..10 {
            assert!(use_key(&cache, key).await, "key {key} was evicted");
        }
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_the_entries() {
        let one = weight(&0u32, &Some(0u32));
        let cache = Arc::new(AnswerCache::<u32, u32>::new(
            Limits {
                bytes: (one * 5) as u64,
                ..limits(10)
            },
            tokio_clock(),
        ));
        for key in 0..100 {
            use_key(&cache, key).await;
        }
        let count = cache.len();
        assert_eq!(count.found, 5);
        assert_eq!(count.found_bytes, 5 * one);
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_budget_is_answered_not_kept() {
        let cache = Arc::new(AnswerCache::<u32, u32>::new(
            Limits {
                bytes: 1,
                ..limits(10)
            },
            tokio_clock(),
        ));
        assert!(!use_key(&cache, 1).await);
        assert_eq!(cache.len().found, 0);
    }

    #[tokio::test]
    async fn invalidations_do_not_grow_the_queues() {
        let cache = cache(10);
        for round in 0..10_000 {
            use_key(&cache, round % 3).await;
            cache.invalidate(&(round % 3));
        }
        let shard = AnswerCache::read(&cache.shards[0]);
        let places = shard.small.places.len() + shard.main.places.len();
        assert!(places <= 2 * 10 + 16 + 1, "{places} places");
        assert_eq!(cache.len(), CachedCount::default());
    }

    #[tokio::test]
    async fn clearing_forgets_everything() {
        let cache = cache(100);
        for key in 0..10 {
            use_key(&cache, key).await;
            use_missing(&cache, 100 + key).await;
        }
        cache.clear();
        assert_eq!(cache.len(), CachedCount::default());
    }
}
