//! What `CachedStore` keeps: hit rates under a skewed (Zipf) workload, a
//! loop twice its capacity, and "the latest keys used again", each beside
//! an exact LRU of the same capacity (and an LRU split into the same 16
//! shards); its heap memory at capacity and under churn against what it
//! counts; and what a flood of made-up ids does to the cached valid keys.
//!
//! ```sh
//! cargo bench --bench cache_policy
//! ```
//!
//! Hit rates are counts, not timings: the same on every run up to the
//! random seeds of the shard hasher. Memory is measured by a counting
//! allocator (`stats_alloc`), heap bytes allocated and not yet freed.

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::{KeyId, OrgId, UserId};
use tower_keyauth::store::{CacheOptions, CachedStore, KeyRecord, Membership, Owner, StoreError};
use tower_keyauth::{KeyStore, MemoryStore, Scopes};

#[path = "../tests/common/workloads.rs"]
mod workloads;
use workloads::{Lru, Rng, lru_hit_rate, zipf_stream};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CAPACITY: usize = 100_000;
const SHARDS: usize = 16;

/// Counts the lookups that reach the store: the cache's misses.
struct Counting {
    inner: MemoryStore,
    finds: AtomicUsize,
}

#[async_trait]
impl KeyStore for Counting {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.finds.fetch_add(1, Ordering::Relaxed);
        self.inner.find_key(id).await
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        self.inner.membership(user, org).await
    }
}

fn key_id(item: u64) -> KeyId {
    KeyId::from(format!("k{item:09}"))
}

/// A record as an issued key looks: a name, a prefix, two scopes.
fn record(item: u64) -> KeyRecord {
    let mut record = KeyRecord::new(
        key_id(item),
        KeyHash::of(&format!("secret {item}")),
        Owner::org(format!("org{}", item % 5_000)),
    );
    record.name = "deploys from CI".into();
    record.prefix = Some("ak".into());
    record.scopes = Scopes::parse(["objects.read", "objects.write"]).unwrap();
    record
}

fn store_of(items: u64) -> Arc<Counting> {
    let inner = MemoryStore::new();
    for item in 0..items {
        inner.insert(record(item));
    }
    Arc::new(Counting {
        inner,
        finds: AtomicUsize::new(0),
    })
}

fn cache(store: &Arc<Counting>, options: CacheOptions) -> CachedStore<Arc<Counting>> {
    CachedStore::with_options(Arc::clone(store), options)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The share of `stream` the cache answers without the store.
fn hit_rate(
    runtime: &tokio::runtime::Runtime,
    cached: &CachedStore<Arc<Counting>>,
    stream: &[u64],
) -> f64 {
    let before = cached.get_ref().finds.load(Ordering::Relaxed);
    runtime.block_on(async {
        for &item in stream {
            cached.find_key(&key_id(item)).await.unwrap();
        }
    });
    let misses = cached.get_ref().finds.load(Ordering::Relaxed) - before;
    1.0 - misses as f64 / stream.len() as f64
}

/// An LRU split into shards by a hash of the item, each with its share of
/// the capacity, as the cache splits its own.
struct ShardedLru(Vec<Lru>);

impl ShardedLru {
    fn new(capacity: usize) -> Self {
        Self((0..SHARDS).map(|_| Lru::new(capacity / SHARDS)).collect())
    }

    fn hit_rate(&mut self, stream: &[u64]) -> f64 {
        let hits = stream
            .iter()
            .filter(|&&item| {
                let shard = (std::hash::BuildHasher::hash_one(
                    &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
                    item,
                ) as usize)
                    % SHARDS;
                self.0[shard].access(item)
            })
            .count();
        hits as f64 / stream.len() as f64
    }
}

/// Heap bytes allocated and not freed. (`stats_alloc` counts a
/// reallocation's growth in `bytes_allocated` too.)
fn live(change: &stats_alloc::Stats) -> isize {
    change.bytes_allocated as isize - change.bytes_deallocated as isize
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn mib(bytes: isize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn skewed(runtime: &tokio::runtime::Runtime) {
    println!("\n## Skewed workload: Zipf over 1 000 000 keys, capacity 100 000");
    println!("| exponent | requests | CachedStore | exact LRU | LRU in 16 shards |");
    println!("|---|---|---|---|---|");
    let store = store_of(1_000_000);
    for exponent in [0.7, 0.9, 1.1] {
        let stream = zipf_stream(1_000_000, exponent, 2_000_000, 11);
        let cached = cache(&store, CacheOptions::default());
        let ours = hit_rate(runtime, &cached, &stream);
        let lru = lru_hit_rate(CAPACITY, &stream);
        let sharded = ShardedLru::new(CAPACITY).hit_rate(&stream);
        println!(
            "| {exponent} | {} | {} | {} | {} |",
            stream.len(),
            percent(ours),
            percent(lru),
            percent(sharded)
        );
        assert!(ours >= lru, "below an LRU at exponent {exponent}");
    }
}

fn latest_again(runtime: &tokio::runtime::Runtime) {
    println!("\n## 200 000 keys used once, then the latest 100 000 again (capacity 100 000)");
    println!("| use | CachedStore | exact LRU | LRU in 16 shards |");
    println!("|---|---|---|---|");
    let store = store_of(200_000);
    let cached = cache(&store, CacheOptions::default());
    let (mut lru, mut sharded) = (Lru::new(CAPACITY), ShardedLru::new(CAPACITY));
    let first: Vec<u64> = (0..200_000).collect();
    let latest: Vec<u64> = (100_000..200_000).collect();
    hit_rate(runtime, &cached, &first);
    first.iter().for_each(|&item| {
        lru.access(item);
    });
    sharded.hit_rate(&first);
    let mut third = 0.0;
    for round in 2..=4 {
        let ours = hit_rate(runtime, &cached, &latest);
        let exact =
            latest.iter().filter(|&&item| lru.access(item)).count() as f64 / latest.len() as f64;
        println!(
            "| {round} | {} | {} | {} |",
            percent(ours),
            percent(exact),
            percent(sharded.hit_rate(&latest))
        );
        if round == 3 {
            third = ours;
        }
    }
    assert!(third >= 0.9, "third use {third}");
}

fn scans(runtime: &tokio::runtime::Runtime) {
    println!("\n## A loop over twice the capacity (200 000 keys, 5 passes)");
    let store = store_of(200_000);
    let cached = cache(&store, CacheOptions::default());
    let stream: Vec<u64> = (0..5).flat_map(|_| 0..200_000).collect();
    let ours = hit_rate(runtime, &cached, &stream);
    let lru = lru_hit_rate(CAPACITY, &stream);
    println!("| | CachedStore | exact LRU |\n|---|---|---|");
    println!("| hit rate | {} | {} |", percent(ours), percent(lru));

    println!("\n## Keys in use during a one-time scan of 1 000 000 other keys");
    // 20 000 keys in steady Zipf use, interleaved one for one with a scan.
    let store = store_of(1_020_000);
    let cached = cache(&store, CacheOptions::default());
    let hot = zipf_stream(20_000, 0.9, 1_000_000, 5);
    let warm: Vec<u64> = hot.iter().copied().take(200_000).collect();
    hit_rate(runtime, &cached, &warm);
    let mut lru = Lru::new(CAPACITY);
    warm.iter().for_each(|&item| {
        lru.access(item);
    });
    let (mut ours_hits, mut lru_hits) = (0usize, 0usize);
    runtime.block_on(async {
        for (index, &item) in hot.iter().enumerate() {
            let scanned = 20_000 + index as u64;
            cached.find_key(&key_id(scanned)).await.unwrap();
            lru.access(scanned);
            let before = cached.get_ref().finds.load(Ordering::Relaxed);
            cached.find_key(&key_id(item)).await.unwrap();
            ours_hits += usize::from(cached.get_ref().finds.load(Ordering::Relaxed) == before);
            lru_hits += usize::from(lru.access(item));
        }
    });
    println!("| | CachedStore | exact LRU |\n|---|---|---|");
    println!(
        "| hit rate of the keys in use | {} | {} |",
        percent(ours_hits as f64 / hot.len() as f64),
        percent(lru_hits as f64 / hot.len() as f64)
    );
}

fn memory(runtime: &tokio::runtime::Runtime) {
    println!("\n## Memory (heap allocated and not freed, counting allocator)");
    println!("| state | entries | counted (found_key_bytes) | measured heap |");
    println!("|---|---|---|---|");
    let store = store_of(400_000);
    let mut rng = Rng::new(3);
    let churn: Vec<u64> = (0..2_000_000).map(|_| rng.next_u64() % 400_000).collect();
    let region = Region::new(HEAP);
    let cached = cache(&store, CacheOptions::default());
    let fill: Vec<u64> = (0..CAPACITY as u64).collect();
    hit_rate(runtime, &cached, &fill);
    let report = |state: &str, region: &Region<System>| {
        let change = region.change();
        let heap = live(&change);
        let stats = cached.stats();
        println!(
            "| {state} | {} | {} | {} |",
            stats.found_keys,
            mib(stats.found_key_bytes as isize),
            mib(heap)
        );
        assert!(
            heap <= stats.found_key_bytes as isize + (1 << 20),
            "the cache takes more than it counts"
        );
    };
    report("at capacity (100 000 found keys)", &region);
    hit_rate(runtime, &cached, &churn);
    report("after 2 000 000 uniform uses of 400 000 keys", &region);
    runtime.block_on(async {
        for round in 0..500_000u64 {
            let id = key_id(round % 400_000);
            cached.find_key(&id).await.unwrap();
            cached.invalidate_key(&id);
        }
    });
    hit_rate(runtime, &cached, &churn[..500_000]);
    report("after 500 000 invalidations and reloads", &region);

    println!("\n### Budget: the same records, `max_bytes` 16 MiB");
    let region = Region::new(HEAP);
    let cached = cache(&store, CacheOptions::default().max_bytes(16 << 20));
    hit_rate(runtime, &cached, &churn);
    let change = region.change();
    let heap = live(&change);
    let stats = cached.stats();
    println!(
        "found keys {} (the count bound is 100 000), counted {}, measured heap {}",
        stats.found_keys,
        mib(stats.found_key_bytes as isize),
        mib(heap)
    );
    assert!(stats.found_key_bytes <= 16 << 20);
    assert!(heap <= (16 << 20) + (1 << 20), "over the budget");
}

fn flood(runtime: &tokio::runtime::Runtime) {
    println!("\n## A flood of 100 000 made-up ids against 90 000 cached valid keys");
    let store = store_of(90_000);
    let cached = cache(&store, CacheOptions::default());
    let valid: Vec<u64> = (0..90_000).collect();
    hit_rate(runtime, &cached, &valid);
    let region = Region::new(HEAP);
    let started = Instant::now();
    runtime.block_on(async {
        for made_up in 0..100_000u64 {
            let id = KeyId::from(format!("m{made_up:09}"));
            cached.find_key(&id).await.unwrap();
        }
    });
    let flood_time = started.elapsed();
    let change = region.change();
    let heap = live(&change);
    let kept = hit_rate(runtime, &cached, &valid);
    let stats = cached.stats();
    println!(
        "valid keys still cached: {} ({} hit on re-use); \"no such key\" entries: {} (bound 10 000); \
         heap taken by the flood: {}; flood time {:?} ({:?} per made-up id, MemoryStore behind)",
        stats.found_keys,
        percent(kept),
        stats.missing_keys,
        mib(heap),
        flood_time,
        flood_time / 100_000,
    );
    assert_eq!(kept, 1.0, "a valid key was evicted by the flood");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runtime = runtime();
    let started = Instant::now();
    skewed(&runtime);
    latest_again(&runtime);
    scans(&runtime);
    memory(&runtime);
    flood(&runtime);
    println!("\n(ran in {:?})", started.elapsed().max(Duration::ZERO));
}
