//! Workloads for measuring a cache's hit rate, and the LRU it is compared
//! with: shared by `tests/cache.rs` and `benches/cache_policy.rs`.

#![allow(dead_code, unreachable_pub)] // each user takes what it needs

use std::collections::{BTreeMap, HashMap};

/// A small, seeded pseudo-random generator (xorshift64*): the same
/// workload on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws item numbers 0..n, item i with probability proportional to
/// 1 / (i + 1)^exponent: a few items take most of the requests.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(items: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative = Vec::with_capacity(items);
        for rank in 1..=items {
            total += 1.0 / (rank as f64).powf(exponent);
            cumulative.push(total);
        }
        for value in &mut cumulative {
            *value /= total;
        }
        Self { cumulative }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let drawn = rng.next_f64();
        self.cumulative
            .partition_point(|&c| c < drawn)
            .min(self.cumulative.len() - 1)
    }
}

/// An exact least-recently-used cache of item numbers, to compare with.
pub struct Lru {
    capacity: usize,
    stamp_of: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
    clock: u64,
}

impl Lru {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            stamp_of: HashMap::new(),
            by_stamp: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Uses `item`; whether it was cached.
    pub fn access(&mut self, item: u64) -> bool {
        self.clock += 1;
        let hit = match self.stamp_of.insert(item, self.clock) {
            Some(old) => {
                self.by_stamp.remove(&old);
                true
            }
            None => false,
        };
        self.by_stamp.insert(self.clock, item);
        if self.stamp_of.len() > self.capacity {
            if let Some((_, oldest)) = self.by_stamp.pop_first() {
                self.stamp_of.remove(&oldest);
            }
        }
        hit
    }
}

/// A Zipf-distributed stream of `requests` item numbers over `items`.
pub fn zipf_stream(items: usize, exponent: f64, requests: usize, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(items, exponent);
    let mut rng = Rng::new(seed);
    (0..requests)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect()
}

/// The share of `stream` an exact LRU of `capacity` answers from memory.
pub fn lru_hit_rate(capacity: usize, stream: &[u64]) -> f64 {
    let mut lru = Lru::new(capacity);
    let hits = stream.iter().filter(|&&item| lru.access(item)).count();
    hits as f64 / stream.len() as f64
}
