//! [`MemoryLimiter`]: exact rate limits within one process.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hashbrown::HashTable;

use super::{
    Charge, Counter, CounterState, LimiterError, REFUND_MARGIN, RateLimiter, tightest, valid_charge,
};
use crate::clock::{Clock, SharedClock};

/// Shards of the counter table: a charge locks only the shards of its own
/// counters, so requests of different keys rarely wait on each other.
const SHARDS: usize = 64;

/// Rate limits counted in this process: exact for one instance, or for
/// limits that each instance may keep on its own. For limits shared by
/// several instances use `RedisLimiter` (feature `redis`).
///
/// Each counter costs one entry (its id, a count and when its window
/// closes: about 80 bytes plus the id). At most `capacity` counters are
/// held (default 2²⁰, about 100 MB at worst); a counter whose window has
/// closed is removed when its shard needs the room. Only authenticated
/// keys are counted, so the table grows with the keys in use, not with
/// what clients send. A charge that finds its shard full of open windows
/// fails with [`LimiterError::Full`], which the layer answers with 503:
/// raise the capacity if you have that many keys active in one window.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{Charge, Counter, MemoryLimiter, RateLimit, RateLimiter};
///
/// let limiter = MemoryLimiter::new().capacity(10_000);
/// let two_a_second = RateLimit::per(2, Duration::from_secs(1)).unwrap();
/// let counters = [Counter::new("key:k1", &two_a_second)];
/// let charge = limiter.charge_now(&counters, 2).unwrap().unwrap();
/// assert!(matches!(charge, Charge::Admitted(state) if state.remaining == 0));
/// let charge = limiter.charge_now(&counters, 1).unwrap().unwrap();
/// assert!(matches!(charge, Charge::Limited(_)));
/// ```
pub struct MemoryLimiter {
    shards: Arc<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    per_shard: usize,
    clock: SharedClock,
}

/// The windows of one shard, each with its counter's hash: a charge
/// hashes its counter once, for the shard and the table both.
#[derive(Default)]
struct Shard {
    windows: HashTable<Entry>,
}

struct Entry {
    hash: u64,
    counter: Counter,
    window: Window,
}

/// A counter's current window.
#[derive(Clone, Copy)]
struct Window {
    used: u32,
    /// When the window closes, in nanoseconds since the Unix epoch.
    closes_at: u64,
}

impl MemoryLimiter {
    /// Counters held by default, across all shards.
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// An empty limiter holding up to [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY)
    /// counters, on the coarse system clock ([`CoarseClock`](crate::clock::CoarseClock):
    /// windows of whole seconds need no finer one).
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            per_shard: Self::DEFAULT_CAPACITY / SHARDS,
            clock: SharedClock::coarse(),
        }
    }

    /// Holds up to `counters` counters (at least one per shard, 64).
    pub fn capacity(mut self, counters: usize) -> Self {
        self.per_shard = counters.div_ceil(SHARDS).max(1);
        self
    }

    /// Reads the time from `clock` (tests advance it instead of waiting).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = SharedClock::new(clock);
        self
    }

    /// Counters held now, open or not yet removed.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).windows.len())
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counter's hash, which also picks its shard.
    fn hash_of(&self, counter: &Counter) -> u64 {
        self.hasher.hash_one(counter)
    }

    fn charge_at(&self, counters: &[Counter], cost: u32) -> Result<Charge, LimiterError> {
        if !valid_charge(counters, cost) {
            return Err(LimiterError::Invalid);
        }
        let now = nanos_since_epoch(self.clock.now());
        if let [counter] = counters {
            let hash = self.hash_of(counter);
            let mut shard = lock(&self.shards[shard_index(hash)]);
            return shard.charge_one(counter, hash, 0, cost, now, self.per_shard);
        }
        let hashes: Vec<u64> = counters.iter().map(|c| self.hash_of(c)).collect();
        // Lock every shard involved, in ascending order, so that two
        // charges never wait on each other in a cycle.
        let mut order: Vec<usize> = hashes.iter().map(|&hash| shard_index(hash)).collect();
        let shard_of_counter = order.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order
            .iter()
            .map(|&index| lock(&self.shards[index]))
            .collect();
        let guard_of = |counter: usize| {
            order
                .binary_search(&shard_of_counter[counter])
                .expect("every counter's shard is locked")
        };
        // First look: does every counter have the units?
        let mut refused: Option<CounterState> = None;
        for (index, counter) in counters.iter().enumerate() {
            let window = guards[guard_of(index)].current(counter, hashes[index], now);
            if let Some(state) = window.refuses(index, counter, cost, now) {
                if refused.is_none_or(|r| state.resets_in > r.resets_in) {
                    refused = Some(state);
                }
            }
        }
        if let Some(state) = refused {
            return Ok(Charge::Limited(state));
        }
        // Then charge them all; room was checked before anything changes.
        for (index, counter) in counters.iter().enumerate() {
            if !guards[guard_of(index)].has_room(counter, hashes[index], now, self.per_shard) {
                return Err(LimiterError::Full);
            }
        }
        let states = counters.iter().enumerate().map(|(index, counter)| {
            let shard = &mut guards[guard_of(index)];
            let window = shard.current(counter, hashes[index], now).charged(cost);
            shard.put(counter, hashes[index], window);
            window.state(index, counter, now)
        });
        let admitted = tightest(states.collect::<Vec<_>>().into_iter());
        Ok(Charge::Admitted(admitted.expect("at least one counter")))
    }
}

impl Shard {
    fn get(&self, counter: &Counter, hash: u64) -> Option<&Window> {
        self.windows
            .find(hash, |entry| {
                entry.hash == hash && entry.counter == *counter
            })
            .map(|entry| &entry.window)
    }

    fn get_mut(&mut self, counter: &Counter, hash: u64) -> Option<&mut Window> {
        self.windows
            .find_mut(hash, |entry| {
                entry.hash == hash && entry.counter == *counter
            })
            .map(|entry| &mut entry.window)
    }

    fn insert(&mut self, counter: &Counter, hash: u64, window: Window) {
        let entry = Entry {
            hash,
            counter: counter.clone(),
            window,
        };
        self.windows.insert_unique(hash, entry, |entry| entry.hash);
    }

    /// The counter's open window, or a fresh one opening now.
    fn current(&self, counter: &Counter, hash: u64, now: u64) -> Window {
        match self.get(counter, hash) {
            Some(window) if window.closes_at > now => *window,
            _ => Window::opening(counter, now),
        }
    }

    fn charge_one(
        &mut self,
        counter: &Counter,
        hash: u64,
        index: usize,
        cost: u32,
        now: u64,
        per_shard: usize,
    ) -> Result<Charge, LimiterError> {
        // The common case: one lookup, and the window updated in place.
        if let Some(held) = self.get_mut(counter, hash) {
            if held.closes_at <= now {
                *held = Window::opening(counter, now);
            }
            if let Some(state) = held.refuses(index, counter, cost, now) {
                return Ok(Charge::Limited(state));
            }
            *held = held.charged(cost);
            return Ok(Charge::Admitted(held.state(index, counter, now)));
        }
        let window = Window::opening(counter, now);
        if let Some(state) = window.refuses(index, counter, cost, now) {
            return Ok(Charge::Limited(state));
        }
        if !self.has_room(counter, hash, now, per_shard) {
            return Err(LimiterError::Full);
        }
        let window = window.charged(cost);
        self.insert(counter, hash, window);
        Ok(Charge::Admitted(window.state(index, counter, now)))
    }

    /// Whether `counter` is held or can be: removes closed windows when full.
    fn has_room(&mut self, counter: &Counter, hash: u64, now: u64, per_shard: usize) -> bool {
        if self.windows.len() < per_shard || self.get(counter, hash).is_some() {
            return true;
        }
        self.windows.retain(|entry| entry.window.closes_at > now);
        self.windows.len() < per_shard
    }

    fn put(&mut self, counter: &Counter, hash: u64, window: Window) {
        match self.get_mut(counter, hash) {
            Some(held) => *held = window,
            None => self.insert(counter, hash, window),
        }
    }
}

impl Window {
    /// A window of `counter` opening `now`.
    fn opening(counter: &Counter, now: u64) -> Self {
        Window {
            used: 0,
            closes_at: now.saturating_add(nanos(counter.window)),
        }
    }

    fn refuses(
        &self,
        index: usize,
        counter: &Counter,
        cost: u32,
        now: u64,
    ) -> Option<CounterState> {
        let left = counter.limit.saturating_sub(self.used);
        if cost <= left {
            return None;
        }
        // A cost above the whole limit never fits: wait a whole window.
        let resets_in = if cost > counter.limit {
            counter.window
        } else {
            Duration::from_nanos(self.closes_at.saturating_sub(now))
        };
        Some(CounterState {
            counter: index,
            remaining: left,
            resets_in,
        })
    }

    fn charged(self, cost: u32) -> Window {
        Window {
            used: self.used.saturating_add(cost),
            ..self
        }
    }

    fn state(&self, index: usize, counter: &Counter, now: u64) -> CounterState {
        CounterState {
            counter: index,
            remaining: counter.limit.saturating_sub(self.used),
            resets_in: Duration::from_nanos(self.closes_at.saturating_sub(now)),
        }
    }
}

impl MemoryLimiter {
    /// See [`RateLimiter::refund`].
    fn refund_at(&self, counters: &[Counter], cost: u32, charged_ago: Duration) {
        if !valid_charge(counters, cost) {
            return;
        }
        let now = nanos_since_epoch(self.clock.now());
        let at_least_age = nanos(charged_ago.saturating_add(REFUND_MARGIN));
        for counter in counters {
            let hash = self.hash_of(counter);
            let mut shard = lock(&self.shards[shard_index(hash)]);
            let Some(window) = shard.get_mut(counter, hash) else {
                continue;
            };
            let opened_at = window.closes_at.saturating_sub(nanos(counter.window));
            let age = now.saturating_sub(opened_at);
            if window.closes_at > now && age >= at_least_age {
                window.used = window.used.saturating_sub(cost);
            }
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn charge(&self, counters: &[Counter], cost: u32) -> Result<Charge, LimiterError> {
        self.charge_at(counters, cost)
    }

    async fn refund(
        &self,
        counters: &[Counter],
        cost: u32,
        charged_ago: Duration,
    ) -> Result<(), LimiterError> {
        self.refund_at(counters, cost, charged_ago);
        Ok(())
    }

    fn charge_now(&self, counters: &[Counter], cost: u32) -> Option<Result<Charge, LimiterError>> {
        Some(self.charge_at(counters, cost))
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for MemoryLimiter {
    /// A handle to the same counters.
    fn clone(&self) -> Self {
        Self {
            shards: Arc::clone(&self.shards),
            hasher: self.hasher.clone(),
            per_shard: self.per_shard,
            clock: self.clock.clone(),
        }
    }
}

impl fmt::Debug for MemoryLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLimiter")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

/// A poisoned shard is still consistent: a window is written whole, after
/// every check.
/// The shard of a counter whose hash is `hash`: its high bits (the table
/// picks buckets by the low ones).
fn shard_index(hash: u64) -> usize {
    (hash >> 58) as usize % SHARDS
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, nanos)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::limit::RateLimit;

    /// A clock the test moves by hand.
    #[derive(Clone, Default)]
    struct Manual(Arc<AtomicU64>);

    impl Manual {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(nanos(by), Ordering::SeqCst);
        }
    }

    impl Clock for Manual {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH
                + Duration::from_secs(1_800_000_000)
                + Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
    }

    fn limit(n: u32, seconds: u64) -> RateLimit {
        RateLimit::per(n, Duration::from_secs(seconds)).unwrap()
    }

    fn charge(limiter: &MemoryLimiter, counters: &[Counter], cost: u32) -> Charge {
        limiter.charge_now(counters, cost).unwrap().unwrap()
    }

    #[test]
    fn admits_the_limit_then_refuses_until_the_window_closes() {
        let clock = Manual::default();
        let limiter = MemoryLimiter::new().clock(clock.clone());
        let counters = [Counter::new("k", &limit(5, 60))];
        for left in (0..5).rev() {
            let Charge::Admitted(state) = charge(&limiter, &counters, 1) else {
                panic!("refused before the limit")
            };
            assert_eq!(state.remaining, left);
            assert_eq!(state.resets_in, Duration::from_secs(60));
        }
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            charge(&limiter, &counters, 1),
            Charge::Limited(CounterState {
                counter: 0,
                remaining: 0,
                resets_in: Duration::from_secs(40)
            })
        );
        clock.advance(Duration::from_secs(40));
        let Charge::Admitted(state) = charge(&limiter, &counters, 1) else {
            panic!("still refused after the window closed")
        };
        assert_eq!(
            (state.remaining, state.resets_in),
            (4, Duration::from_secs(60))
        );
    }

    #[test]
    fn a_charge_refused_by_one_limit_charges_none() {
        let limiter = MemoryLimiter::new().clock(Manual::default());
        // Different ids land in different shards often enough; the rule
        // holds either way.
        let counters = [
            Counter::new("key:a", &limit(10, 60)),
            Counter::new("owner:a", &limit(3, 60)),
        ];
        for _ in 0..3 {
            assert!(matches!(
                charge(&limiter, &counters, 1),
                Charge::Admitted(_)
            ));
        }
        let Charge::Limited(state) = charge(&limiter, &counters, 1) else {
            panic!("the owner's limit let a fourth through")
        };
        assert_eq!(state.counter, 1);
        // The key's own limit was not charged by the refusal: 7 left.
        let Charge::Admitted(state) = charge(&limiter, &counters[..1], 1) else {
            panic!()
        };
        assert_eq!(state.remaining, 6);
    }

    #[test]
    fn a_refund_reaches_only_the_window_it_was_charged_in() {
        let clock = Manual::default();
        let limiter = MemoryLimiter::new().clock(clock.clone());
        let counters = [Counter::new("k", &limit(5, 60))];
        let remaining = |limiter: &MemoryLimiter| match charge(limiter, &counters, 1) {
            Charge::Admitted(state) => state.remaining + 1,
            Charge::Limited(state) => state.remaining,
        };
        for _ in 0..3 {
            charge(&limiter, &counters, 1);
        }
        clock.advance(Duration::from_secs(1));
        // A charge made just now, in a window a second old: given back.
        block_on(limiter.refund(&counters, 1, Duration::ZERO)).unwrap();
        assert_eq!(remaining(&limiter), 3);
        // A charge made two seconds ago cannot be in a window opened one
        // second ago: nothing given back.
        block_on(limiter.refund(&counters, 1, Duration::from_secs(2))).unwrap();
        assert_eq!(remaining(&limiter), 2);
        // After the window closes, the next one gets nothing either.
        clock.advance(Duration::from_secs(60));
        charge(&limiter, &counters, 1);
        clock.advance(Duration::from_secs(1));
        block_on(limiter.refund(&counters, 1, Duration::from_secs(30))).unwrap();
        assert_eq!(remaining(&limiter), 4);
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn the_tightest_counter_is_reported() {
        let limiter = MemoryLimiter::new().clock(Manual::default());
        let counters = [
            Counter::new("a", &limit(100, 60)),
            Counter::new("b", &limit(10, 1)),
            Counter::new("c", &limit(50, 3600)),
        ];
        let Charge::Admitted(state) = charge(&limiter, &counters, 2) else {
            panic!()
        };
        assert_eq!((state.counter, state.remaining), (1, 8));
    }

    #[test]
    fn a_cost_above_the_limit_never_fits_and_charges_nothing() {
        let limiter = MemoryLimiter::new().clock(Manual::default());
        let counters = [Counter::new("k", &limit(3, 60))];
        let Charge::Limited(state) = charge(&limiter, &counters, 4) else {
            panic!()
        };
        assert_eq!(state.resets_in, Duration::from_secs(60));
        assert!(limiter.is_empty());
    }

    #[test]
    fn invalid_charges_are_errors() {
        let limiter = MemoryLimiter::new();
        let one = [Counter::new("k", &limit(3, 60))];
        assert!(matches!(
            limiter.charge_now(&one, 0),
            Some(Err(LimiterError::Invalid))
        ));
        assert!(matches!(
            limiter.charge_now(&[], 1),
            Some(Err(LimiterError::Invalid))
        ));
        let many: Vec<Counter> = (0..9)
            .map(|i| Counter::new(format!("k{i}"), &limit(3, 60)))
            .collect();
        assert!(matches!(
            limiter.charge_now(&many, 1),
            Some(Err(LimiterError::Invalid))
        ));
        let long = [Counter::new("x".repeat(257), &limit(3, 60))];
        let twice = [
            Counter::new("k", &limit(3, 60)),
            Counter::new("k", &limit(3, 60)),
        ];
        assert!(matches!(
            limiter.charge_now(&twice, 1),
            Some(Err(LimiterError::Invalid))
        ));
        let mut zero_window = Counter::new("k", &limit(3, 60));
        zero_window.window = Duration::ZERO;
        assert!(matches!(
            limiter.charge_now(&[zero_window], 1),
            Some(Err(LimiterError::Invalid))
        ));
        let empty = [Counter::new("", &limit(3, 60))];
        assert!(matches!(
            limiter.charge_now(&empty, 1),
            Some(Err(LimiterError::Invalid))
        ));
        assert!(matches!(
            limiter.charge_now(&long, 1),
            Some(Err(LimiterError::Invalid))
        ));
    }

    #[test]
    fn a_full_table_makes_room_from_closed_windows_and_fails_closed_otherwise() {
        let clock = Manual::default();
        let limiter = MemoryLimiter::new().capacity(64).clock(clock.clone());
        // One counter per shard fits; fill every shard's single slot.
        let mut held = 0;
        let mut full = None;
        for i in 0..10_000 {
            let counters = [Counter::new(format!("k{i}"), &limit(5, 1))];
            match limiter.charge_now(&counters, 1).unwrap() {
                Ok(_) => held += 1,
                Err(LimiterError::Full) => {
                    full = Some(counters);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
        }
        let full = full.expect("the table never filled");
        assert!(held <= 64 && limiter.len() == held);
        // Once the windows close, their room is taken back.
        clock.advance(Duration::from_secs(1));
        assert!(matches!(charge(&limiter, &full, 1), Charge::Admitted(_)));
        assert!(limiter.len() <= held);
    }

    #[test]
    fn concurrent_charges_admit_exactly_the_limit() {
        let limiter = MemoryLimiter::new();
        let counters = [
            Counter::new("key:shared", &limit(100, 60)),
            Counter::new("owner:shared", &limit(1000, 60)),
        ];
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..125 {
                        if let Charge::Admitted(_) = charge(&limiter, &counters, 1) {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 100);
        // The owner's counter was charged exactly as often.
        let Charge::Admitted(state) = charge(&limiter, &counters[1..], 1) else {
            panic!()
        };
        assert_eq!(state.remaining, 1000 - 101);
    }
}
