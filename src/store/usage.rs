//! Debounced `last_used_at` tracking, kept off the request path.
//!
//! Two parts, neither with a lock on the request path:
//!
//! - [`NotedFilter`]: which keys were already noted in the current window
//!   (time cut into windows of one interval). A key in steady use costs a
//!   few comparisons of times (with the bounds of the current window, kept
//!   per thread) and, most often, two relaxed atomic loads (the table's
//!   size, which stays in every core's cache, and the key's slot); it
//!   writes nothing shared. Both the SQL stores and `MemoryStore` use it.
//! - `UsageBuffer` (SQL stores): a key's first use in a window goes into a
//!   bounded lock-free queue (`crossbeam_queue::ArrayQueue`), which the
//!   store's background writer drains, deduplicates (latest time per key)
//!   and writes in one batch.
//!
//! Why a queue rather than a map sharded by key (many small mutexes taken
//! with `try_lock`): the filter already lets through only about one use per
//! key and window, so the queue is touched rarely, and a push is one
//! compare-and-swap with no hashing, no allocation (ids up to 23 bytes are
//! copied inline; longer ones share their text with the record) and no
//! shard that a burst of keys could fill unevenly. Its capacity bounds the
//! memory outright, where a sharded map would need a bound per shard. The
//! price: the deduplication that a map does on insert happens in the
//! writer, on at most one queue's worth of uses.
//!
//! The former `written` map (each key's last written window, kept so that a
//! filter collision did not cause a second write) is gone: it grew with the
//! keys used per window (about 12 MB at 10⁵ keys, with the pending map).
//! The filter is now large and associative enough that collisions are rare
//! (none at 10⁴ keys in use, about 0.5 % of the keys at 10⁵), and a
//! collision only writes a key once more, never once less.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::record::KeyRecord;

/// Slots in a bucket: 8 tags of 8 bytes, one 64-byte cache line.
const BUCKET_SLOTS: usize = 8;

/// The buckets in use at first, as a power of two: 2¹⁰ buckets, 8 192
/// slots, 64 KiB.
const MIN_BUCKET_BITS: u32 = 10;

/// The most buckets in use, as a power of two: 2¹⁴ buckets, 131 072 slots,
/// 1 MiB, all allocated with the filter.
const MAX_BUCKET_BITS: u32 = 14;

/// Buckets allocated.
const BUCKETS: usize = 1 << MAX_BUCKET_BITS;

/// The filter's memory in bytes, as the docs state it.
#[cfg(test)]
const NOTED_FILTER_BYTES: usize = BUCKETS * std::mem::size_of::<Bucket>();

/// The low bits of a tag that hold its window stamp: 23 bits of the window
/// and a set bit 0, so that no tag looks like an empty slot. A window's
/// number repeats every 2²³ windows (97 days of one-second windows).
const STAMP_MASK: u64 = (1 << 24) - 1;

/// One cache line of tags.
#[repr(align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; BUCKET_SLOTS]);

/// Which keys were already noted in the current window: for most keys in
/// steady use two relaxed atomic loads per request (the table's size, on a
/// line that is only written when the table grows, and the key's slot), no
/// lock, no shared write.
///
/// A set-associative table of buckets of 8 tags, one cache line each. A
/// tag is 40 bits of the key's SHA-256 and the window it was noted in; a
/// tag of an earlier window marks a free slot, so old windows are
/// forgotten without a sweep. Each key has two candidate buckets and a home
/// slot: it is looked for from its home slot in the first bucket, then in
/// the second, and noted in the first slot of an earlier window found in
/// that order (first fit). A key noted at home, the common case, costs one
/// load of its slot; one elsewhere a few more, of the same cache line or of
/// a second.
///
/// Size: 2¹⁴ buckets (131 072 slots of 8 bytes, 1 MiB) are allocated with
/// the filter, but only the first 2¹⁰ (64 KiB) are used at first: what
/// costs is the part a request touches, which competes with the rest of
/// the request for the processor's caches (with 10⁴ keys in use, tracking
/// added about 100 ns to a request spread over the whole megabyte, against
/// 10 to 50 over 128 KiB). The part in use doubles once more than 1/256 of
/// its slots have collided (a key finding both its buckets full of this
/// window's keys) since it last grew (see [`collided`](Self::collided) for
/// the window it grew in), up to the whole table, and never shrinks. It
/// settles below about 0.6 keys per slot: 64 KiB for 3 000 keys in use in
/// a window, 256 KiB for 10⁴, the whole table from about 3 × 10⁴; 10⁵ keys
/// in use from the start grow it to the whole table within their first
/// window.
///
/// Collisions: a key that finds both its buckets full takes the home slot
/// of another, which then passes the filter again on its next use; a key
/// whose buckets change as the table grows passes it once more too. With
/// 10⁴ keys in use none occur once the table has grown; with 10⁵ (0.76 of
/// the whole table), about 0.5 % of the keys pass the filter again on each
/// pass over them (tests below). A colliding key is noted a little more
/// often, never less.
pub(crate) struct NotedFilter {
    interval: Duration,
    /// The interval in milliseconds, at least 1: the length of a window.
    interval_millis: u64,
    /// The buckets in use, as a power of two.
    bucket_bits: AtomicU32,
    /// The collisions since the table last grew, in the windows after the
    /// one it grew in. Written on collisions only, as are the next two.
    collisions: AtomicU32,
    /// The collisions in the window the table last grew in.
    crowded: AtomicU32,
    /// The window after the one the table last grew in.
    counting_from: AtomicU64,
    buckets: Box<[Bucket]>,
}

impl fmt::Debug for NotedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotedFilter")
            .field("interval", &self.interval)
            .field("slots", &(self.buckets.len() * BUCKET_SLOTS))
            .field("slots_in_use", &(self.buckets_in_use() * BUCKET_SLOTS))
            .finish()
    }
}

/// A window's bounds as times, so that a use within them compares times
/// instead of computing with them: `SystemTime::duration_since` is a call
/// (13 ns on the benchmark machine), and the window and the record's last
/// use would take one each, against under 1 ns for the comparisons.
#[derive(Debug, Clone, Copy)]
struct WindowBounds {
    /// The interval of the filter that computed them.
    interval: Duration,
    window: u64,
    /// The window's first instant.
    start: SystemTime,
    /// The next window's first instant.
    end: SystemTime,
    /// A use since then is less than an interval before any time of the
    /// window.
    recent_from: SystemTime,
    /// A use before then is more than an interval before any time of the
    /// window.
    stale_before: SystemTime,
}

impl WindowBounds {
    /// Whether a key last used at `last` was used less than an interval
    /// before a time of the window; `None` if that depends on the time.
    #[inline]
    fn used_recently(&self, last: SystemTime) -> Option<bool> {
        if last >= self.recent_from {
            Some(true)
        } else if last < self.stale_before {
            Some(false)
        } else {
            None
        }
    }
}

thread_local! {
    /// The bounds of the window this thread last noted a use in.
    static LAST_BOUNDS: Cell<Option<WindowBounds>> = const { Cell::new(None) };
}

/// Where a key may be noted in a table of `2^bits` buckets, and who it is
/// there.
#[derive(Clone, Copy)]
struct Place {
    first: usize,
    second: usize,
    home: usize,
    /// The key's 40 bits of a tag, in the tag's high bits.
    identity: u64,
}

impl Place {
    /// From the key's SHA-256 (uniform, and already at hand): bytes 0 to 7
    /// choose the buckets (the low `bits` of bits 0 to 13 and 14 to 27)
    /// and the home slot (bits 28 to 30), bytes 8 to 15 give the identity,
    /// so that two keys share a tag only if they share 50 bits or more.
    /// When the table doubles, a key keeps each bucket whose new bit is 0.
    fn of(record: &KeyRecord, bits: u32) -> Self {
        let bytes = record.hash.as_bytes();
        let word = |at: usize| {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(eight)
        };
        let (placement, identity) = (word(0), word(8));
        let mask = (1 << bits) - 1;
        Self {
            first: (placement as usize) & mask,
            second: ((placement >> MAX_BUCKET_BITS) as usize) & mask,
            home: ((placement >> 28) as usize) % BUCKET_SLOTS,
            identity: identity & !STAMP_MASK,
        }
    }

    fn tag(&self, window: u64) -> u64 {
        self.identity | ((window << 1) & STAMP_MASK) | 1
    }
}

/// A key not yet noted in its window, and the slot that will note it.
#[must_use]
pub(crate) struct Unnoted<'a> {
    slot: &'a AtomicU64,
    tag: u64,
    window: u64,
}

impl Unnoted<'_> {
    /// The window of the use.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// Notes the key for its window. Another key noted in the same slot at
    /// the same moment may overwrite it; that key, or this one, is then
    /// noted again by a later use.
    pub(crate) fn mark(self) {
        self.slot.store(self.tag, Ordering::Relaxed);
    }
}

impl NotedFilter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            interval_millis: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            bucket_bits: AtomicU32::new(MIN_BUCKET_BITS),
            collisions: AtomicU32::new(0),
            crowded: AtomicU32::new(0),
            counting_from: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
        }
    }

    /// How many buckets are in use.
    fn buckets_in_use(&self) -> usize {
        1 << self.bucket_bits.load(Ordering::Relaxed)
    }

    pub(crate) fn window(&self, at: SystemTime) -> u64 {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        // In 64 bits: milliseconds since 1970 fit for 584 million years, and
        // a 128-bit division is a call. (Once per window and thread: see
        // `bounds`.)
        let millis = since_epoch
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since_epoch.subsec_millis()));
        millis / self.interval_millis
    }

    /// The bounds of the window of `at`, from this thread's last ones if
    /// `at` falls in them (the common case: a window is long, and requests
    /// many), else computed and kept. `None` if they cannot be represented
    /// (before 1970, or near the end of time): then each use computes.
    #[inline]
    fn bounds(&self, at: SystemTime) -> Option<WindowBounds> {
        if let Some(bounds) = LAST_BOUNDS.with(Cell::get) {
            if bounds.interval == self.interval && bounds.start <= at && at < bounds.end {
                return Some(bounds);
            }
        }
        let bounds = self.bounds_of(at)?;
        LAST_BOUNDS.with(|last| last.set(Some(bounds)));
        Some(bounds)
    }

    #[cold]
    fn bounds_of(&self, at: SystemTime) -> Option<WindowBounds> {
        let window = self.window(at);
        let length = Duration::from_millis(self.interval_millis);
        let start = UNIX_EPOCH.checked_add(Duration::from_millis(
            window.checked_mul(self.interval_millis)?,
        ))?;
        let end = start.checked_add(length)?;
        let bounds = WindowBounds {
            interval: self.interval,
            window,
            start,
            end,
            recent_from: end.checked_sub(self.interval)?,
            stale_before: start.checked_sub(self.interval)?,
        };
        (start <= at && at < end).then_some(bounds)
    }

    /// The window of `at` if this use of `record` is the first to note in
    /// it, and `None` if it can be skipped: the record itself says it was
    /// used less than an interval ago, or the key was already noted in this
    /// window (a cached record carries an old `last_used_at`, so its own
    /// time is not enough). Marks the key noted.
    pub(crate) fn first_use_in_window(&self, record: &KeyRecord, at: SystemTime) -> Option<u64> {
        let unnoted = self.check(record, at)?;
        let window = unnoted.window();
        unnoted.mark();
        Some(window)
    }

    /// Like [`first_use_in_window`](Self::first_use_in_window), without
    /// marking: the caller marks once the use is safely kept.
    pub(crate) fn check(&self, record: &KeyRecord, at: SystemTime) -> Option<Unnoted<'_>> {
        let bounds = self.bounds(at);
        let used_recently = record
            .last_used_at
            .is_some_and(|last| self.used_recently(last, at, bounds));
        if used_recently {
            return None;
        }
        let window = match bounds {
            Some(bounds) => bounds.window,
            None => self.window(at),
        };
        let bits = self.bucket_bits.load(Ordering::Relaxed);
        self.find(Place::of(record, bits), bits, window)
    }

    /// Whether `last` is less than an interval before `at` (or after it),
    /// by comparing times with the bounds of `at`'s window when they decide.
    #[inline]
    fn used_recently(
        &self,
        last: SystemTime,
        at: SystemTime,
        bounds: Option<WindowBounds>,
    ) -> bool {
        match bounds.and_then(|bounds| bounds.used_recently(last)) {
            Some(recently) => recently,
            None => at
                .duration_since(last)
                .map_or(true, |gap| gap < self.interval),
        }
    }

    /// `None` if the key at `place` (in a table of `2^bits` buckets) is
    /// noted in `window`; otherwise the slot to note it in: the first one
    /// holding an earlier window, from the home slot of the first bucket
    /// on, else (both buckets full of this window's keys: a collision) the
    /// home slot of the first bucket.
    #[inline]
    fn find(&self, place: Place, bits: u32, window: u64) -> Option<Unnoted<'_>> {
        let tag = place.tag(window);
        let mut free = None;
        for bucket in [place.first, place.second] {
            let slots = &self.buckets[bucket].0;
            for step in 0..BUCKET_SLOTS {
                let slot = &slots[(place.home + step) % BUCKET_SLOTS];
                let held = slot.load(Ordering::Relaxed);
                if held == tag {
                    return None;
                }
                if free.is_none() && (held ^ tag) & STAMP_MASK != 0 {
                    free = Some(slot);
                }
            }
        }
        let slot = match free {
            Some(slot) => slot,
            None => {
                self.collided(window, bits);
                &self.buckets[place.first].0[place.home]
            }
        };
        Some(Unnoted { slot, tag, window })
    }

    /// Counts a collision in `window`, in a table of `2^bits` buckets, and
    /// doubles the buckets in use once more than 1/256 of their slots have
    /// collided since the table last grew. The window the table grew in
    /// counts apart, against 1/16 of the slots: the keys that moved left
    /// tags of that window where they were, which crowd the table until it
    /// ends; only a table still far too small for the keys in use (as at
    /// the start of a process with many) grows again within it.
    #[cold]
    fn collided(&self, window: u64, bits: u32) {
        if bits >= MAX_BUCKET_BITS {
            return;
        }
        let slots = (BUCKET_SLOTS as u64) << bits;
        let (counter, threshold) = if window < self.counting_from.load(Ordering::Relaxed) {
            (&self.crowded, slots / 16)
        } else {
            (&self.collisions, slots / 256)
        };
        let count = counter.fetch_add(1, Ordering::Relaxed) + 1;
        // Once per size: a thread that saw the old size does not grow the
        // new one.
        if u64::from(count) > threshold
            && self
                .bucket_bits
                .compare_exchange(bits, bits + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.counting_from
                .store(window.saturating_add(1), Ordering::Relaxed);
            self.collisions.store(0, Ordering::Relaxed);
            self.crowded.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use buffer::UsageBuffer;

/// The uses waiting for a SQL store's writer.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod buffer {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, SystemTime};

    use crossbeam_queue::ArrayQueue;
    use tokio::sync::{Mutex, Notify};

    use super::NotedFilter;
    use crate::ids::KeyId;
    use crate::record::KeyRecord;
    use crate::store::StoreError;

    /// Uses the queue holds at most: 10⁴ keys used in one interval fit in
    /// one batch. Beyond, the writer is woken as soon as the queue is full.
    pub(crate) const PENDING_USES: usize = 1 << 14;

    /// Uses waiting to be written by a background task: at most one write
    /// per key and window (a little more for the rare keys the filter
    /// collides on), in bounded memory.
    ///
    /// On the request path: the [filter](NotedFilter), then, for a key's
    /// first use in a window, one push onto a bounded lock-free queue. A use
    /// that finds the queue full is not marked noted, so a later use of
    /// that key is noted again, and it wakes the writer at once (not at its
    /// next tick) so that the queue drains: nothing is lost for a key in
    /// steady use, whatever the number of keys.
    ///
    /// Memory: the queue, allocated once, holds at most [`PENDING_USES`]
    /// uses of 48 bytes (768 KiB); the writer's batch, being written or
    /// kept after a failed write for the next flush, at most as many of 40
    /// bytes (640 KiB): a batch takes from the queue only what the uses
    /// kept for retry leave room for. Ids longer than 23 bytes (minted ones
    /// are 12) add their text, shared with the record they came from.
    pub(crate) struct UsageBuffer {
        noted: NotedFilter,
        queue: ArrayQueue<(KeyId, SystemTime)>,
        /// Set by the first use that finds the queue full, cleared when the
        /// writer drains it: one wake-up per overflow, not one per use.
        overflowed: AtomicBool,
        wake: Arc<Notify>,
        /// The uses of the last failed write, deduplicated, for the next
        /// flush. Its lock also makes flushes take turns; the request path
        /// never takes it.
        failed: Mutex<Vec<(KeyId, SystemTime)>>,
    }

    impl std::fmt::Debug for UsageBuffer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("UsageBuffer")
                .field("noted", &self.noted)
                .field("queued", &self.queue.len())
                .field("capacity", &self.queue.capacity())
                .finish_non_exhaustive()
        }
    }

    impl UsageBuffer {
        pub(crate) fn new(interval: Duration) -> Self {
            Self::with_capacity(interval, PENDING_USES)
        }

        pub(super) fn with_capacity(interval: Duration, capacity: usize) -> Self {
            Self {
                noted: NotedFilter::new(interval),
                queue: ArrayQueue::new(capacity),
                overflowed: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
                failed: Mutex::new(Vec::new()),
            }
        }

        pub(crate) fn interval(&self) -> Duration {
            self.noted.interval
        }

        /// Notified when a use finds the queue full: the writer should
        /// drain it without waiting for its tick.
        pub(crate) fn overflow_signal(&self) -> Arc<Notify> {
            Arc::clone(&self.wake)
        }

        /// Notes a use, unless the key was already noted in this window.
        /// Cheap: comparisons of times, then two atomic loads for a key
        /// already noted (see [`NotedFilter`]); a push onto the queue once
        /// per key and window.
        pub(crate) fn note(&self, record: &KeyRecord, at: SystemTime) {
            let Some(unnoted) = self.noted.check(record, at) else {
                return;
            };
            match self.queue.push((record.id.clone(), at)) {
                // Marked only once the use is kept.
                Ok(()) => unnoted.mark(),
                Err(_) => self.overflow(),
            }
        }

        #[cold]
        fn overflow(&self) {
            // A load first: uses that find the flag set write nothing.
            if !self.overflowed.load(Ordering::Relaxed)
                && !self.overflowed.swap(true, Ordering::Relaxed)
            {
                self.wake.notify_one();
            }
        }

        /// The next batch to write: `retry` (a failed batch), then queued
        /// uses while there is room, at most the queue's capacity in all;
        /// the latest time per key, in order of id.
        pub(super) fn take(&self, mut batch: Vec<(KeyId, SystemTime)>) -> Vec<(KeyId, SystemTime)> {
            self.overflowed.store(false, Ordering::Relaxed);
            let room = self.queue.capacity().saturating_sub(batch.len());
            // At most `room` pops, even if uses keep coming.
            batch.extend(std::iter::from_fn(|| self.queue.pop()).take(room));
            // Latest first within a key, then one per key.
            batch.sort_unstable_by(|(a, at_a), (b, at_b)| a.cmp(b).then(at_b.cmp(at_a)));
            batch.dedup_by(|later, kept| later.0 == kept.0);
            batch
        }

        /// Writes the uses waiting (those of a failed write first) with
        /// `write`; if that fails, they are kept for the next flush.
        /// Returns how many were written.
        pub(crate) async fn flush(
            &self,
            write: impl AsyncFnOnce(&[(KeyId, SystemTime)]) -> Result<(), StoreError>,
        ) -> Result<usize, StoreError> {
            let mut failed = self.failed.lock().await;
            let uses = self.take(std::mem::take(&mut *failed));
            if uses.is_empty() {
                return Ok(0);
            }
            match write(&uses).await {
                Ok(()) => Ok(uses.len()),
                Err(error) => {
                    *failed = uses;
                    Err(error)
                }
            }
        }

        #[cfg(test)]
        pub(crate) fn queued(&self) -> usize {
            self.queue.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::KeyHash;
    use crate::record::Owner;

    fn record(id: &str) -> KeyRecord {
        KeyRecord::new(id, KeyHash::of(id), Owner::org("acme"))
    }

    #[test]
    fn the_filter_is_a_mebibyte_of_cache_lines() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
        assert_eq!(NOTED_FILTER_BYTES, 1 << 20);
    }

    #[test]
    fn a_key_is_noted_once_per_window_and_again_in_the_next() {
        let filter = NotedFilter::new(Duration::from_secs(60));
        let t0 = UNIX_EPOCH + Duration::from_secs(60 * 16_000);
        let key = record("a");
        assert_eq!(filter.first_use_in_window(&key, t0), Some(16_000));
        assert!(
            filter
                .first_use_in_window(&key, t0 + Duration::from_secs(59))
                .is_none()
        );
        assert_eq!(
            filter.first_use_in_window(&key, t0 + Duration::from_secs(60)),
            Some(16_001)
        );
        // A key unmarked stays unnoted.
        let other = record("b");
        assert!(filter.check(&other, t0).is_some());
        assert!(filter.check(&other, t0).is_some());
    }

    #[test]
    fn window_bounds_agree_with_computing_each_time() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move |below: u64| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
        };
        for interval in [
            Duration::from_micros(500),
            Duration::from_millis(1),
            Duration::from_micros(1_500),
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_millis(61_500),
        ] {
            let filter = NotedFilter::new(interval);
            let micros = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap().as_micros();
            let mut at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            for _ in 0..2_000 {
                // Mostly within a window, sometimes across, sometimes back.
                at = match random(10) {
                    0 => at + interval * 3,
                    1 => at - interval / 2,
                    _ => at + interval / 7,
                };
                let bounds = filter.bounds(at).expect("representable");
                assert_eq!(bounds.window, filter.window(at), "at {}", micros(at));
                assert!(bounds.start <= at && at < bounds.end);
                // Last uses around every edge the bounds draw.
                let span = u64::try_from(interval.as_micros() * 3).unwrap();
                let last = at - interval * 2 + Duration::from_micros(random(span));
                for last in [
                    last,
                    bounds.recent_from,
                    bounds.stale_before,
                    at - interval,
                    at,
                ] {
                    for nudge in [-1i64, 0, 1] {
                        let last = if nudge < 0 {
                            last - Duration::from_nanos(1)
                        } else {
                            last + Duration::from_nanos(nudge.unsigned_abs())
                        };
                        let exact = at.duration_since(last).map_or(true, |gap| gap < interval);
                        assert_eq!(
                            filter.used_recently(last, at, Some(bounds)),
                            exact,
                            "interval {interval:?}, at {}, last {}",
                            micros(at),
                            micros(last)
                        );
                    }
                }
            }
        }
        // Before 1970, nothing is kept: each use computes.
        let filter = NotedFilter::new(Duration::from_secs(1));
        assert!(filter.bounds(UNIX_EPOCH - Duration::from_secs(5)).is_none());
        assert!(
            filter
                .check(&record("a"), UNIX_EPOCH - Duration::from_secs(5))
                .is_some()
        );
    }

    /// `keys` in steady use: how many pass the filter again on each of six
    /// passes over them after the first of a window, and the buckets in use
    /// at the end. Three windows of `warm_up` passes each come first, for
    /// the table to grow.
    fn collisions(keys: usize, warm_up: usize) -> (Vec<usize>, usize) {
        let filter = NotedFilter::new(Duration::from_secs(60));
        let records: Vec<KeyRecord> = (0..keys).map(|i| record(&format!("k{i}"))).collect();
        let pass = |at| {
            records
                .iter()
                .filter(|key| filter.first_use_in_window(key, at).is_some())
                .count()
        };
        let t0 = UNIX_EPOCH + Duration::from_secs(60 * 1_000);
        for window in 0..3 {
            for _ in 0..warm_up {
                pass(t0 + Duration::from_secs(60 * window));
            }
        }
        let at = t0 + Duration::from_secs(60 * 3);
        assert_eq!(pass(at), keys, "every key is new in the window");
        let again = (0..6).map(|_| pass(at)).collect();
        (again, filter.buckets_in_use())
    }

    #[test]
    fn a_thousand_keys_fit_in_the_first_buckets() {
        assert_eq!(collisions(1_000, 0), (vec![0; 6], 1 << MIN_BUCKET_BITS));
    }

    #[test]
    fn ten_thousand_keys_grow_the_table_a_little_then_never_collide() {
        // Once the table has grown (a few keys collide until then), none.
        let (again, buckets) = collisions(10_000, 40);
        assert_eq!(again, [0; 6]);
        assert!(buckets <= 1 << 12, "{buckets} buckets");
    }

    #[test]
    fn many_keys_at_once_grow_the_table_within_the_window() {
        let filter = NotedFilter::new(Duration::from_secs(60));
        let at = UNIX_EPOCH + Duration::from_secs(60 * 1_000);
        for i in 0..100_000 {
            let _ = filter.first_use_in_window(&record(&format!("k{i}")), at);
        }
        assert_eq!(filter.buckets_in_use(), 1 << MAX_BUCKET_BITS);
    }

    #[test]
    fn the_table_settles_at_the_size_of_the_keys_in_use() {
        for (keys, buckets) in [(3_000, 1 << 10), (7_000, 1 << 11), (10_000, 1 << 12)] {
            let (again, settled) = collisions(keys, 10);
            assert_eq!(again, [0; 6], "{keys} keys");
            assert_eq!(settled, buckets, "{keys} keys");
        }
    }

    #[test]
    fn a_hundred_thousand_keys_rarely_collide() {
        let (again, buckets) = collisions(100_000, 2);
        assert_eq!(buckets, 1 << MAX_BUCKET_BITS);
        // About 0.5 % once settled (1.4 % on the first pass after the
        // first); the bound leaves room for the hash.
        for (pass, again) in again.iter().enumerate() {
            assert!(
                *again < 2_000,
                "{again} of 10⁵ keys noted again, pass {pass}"
            );
        }
    }

    #[test]
    fn slots_of_an_earlier_window_are_reused() {
        let filter = NotedFilter::new(Duration::from_secs(1));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        // Far more keys over the windows than the filter has slots, each
        // window's fewer than a tenth of them.
        for window in 0..20 {
            let at = t0 + Duration::from_secs(window);
            let keys: Vec<KeyRecord> = (0..10_000)
                .map(|i| record(&format!("w{window}-{i}")))
                .collect();
            for key in &keys {
                assert!(filter.first_use_in_window(key, at).is_some());
            }
            let again = keys
                .iter()
                .filter(|key| filter.first_use_in_window(key, at).is_some())
                .count();
            // The first windows grow the table (to its size for 10⁴ keys);
            // until then a few keys collide, and those it moves are noted
            // again once.
            if window >= 10 {
                assert_eq!(again, 0, "window {window}");
            }
            // Were earlier windows' tags not free, 2 × 10⁵ keys would have
            // filled the whole table.
            assert!(filter.buckets_in_use() <= 1 << 12);
        }
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    mod buffer {
        use std::collections::{HashMap, HashSet};
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, Ordering};

        use super::*;
        use crate::ids::KeyId;
        use crate::store::StoreError;

        fn drain(buffer: &UsageBuffer) -> Vec<(KeyId, SystemTime)> {
            buffer.take(Vec::new())
        }

        #[test]
        fn a_key_is_written_at_most_once_per_window() {
            let buffer = UsageBuffer::new(Duration::from_secs(60));
            // The start of a window.
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 16_000);
            let key = record("a");
            for second in 0..10 {
                buffer.note(&key, t0 + Duration::from_secs(second));
            }
            // The first use of a window is the one written.
            assert_eq!(drain(&buffer), vec![(key.id.clone(), t0)]);
            // Later in the same window, even after the write: nothing new.
            buffer.note(&key, t0 + Duration::from_secs(30));
            assert!(drain(&buffer).is_empty());
            // The next window: one more write.
            buffer.note(&key, t0 + Duration::from_secs(75));
            buffer.note(&key, t0 + Duration::from_secs(90));
            assert_eq!(
                drain(&buffer),
                vec![(key.id.clone(), t0 + Duration::from_secs(75))]
            );
        }

        #[test]
        fn a_key_noted_in_this_window_is_not_queued_again() {
            let buffer = UsageBuffer::new(Duration::from_secs(60));
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 100);
            let key = record("a");
            buffer.note(&key, t0);
            for second in 1..50 {
                buffer.note(&key, t0 + Duration::from_secs(second));
            }
            assert_eq!(buffer.queued(), 1);
            assert_eq!(drain(&buffer).len(), 1);
        }

        #[test]
        fn a_record_marked_recently_is_skipped() {
            let buffer = UsageBuffer::new(Duration::from_secs(60));
            let now = SystemTime::now();
            buffer.note(
                &record("a").with_last_used_at(now - Duration::from_secs(5)),
                now,
            );
            assert!(drain(&buffer).is_empty());
            buffer.note(
                &record("a").with_last_used_at(now - Duration::from_secs(61)),
                now,
            );
            assert_eq!(drain(&buffer).len(), 1);
        }

        #[test]
        fn a_batch_keeps_the_latest_use_of_each_key_in_order_of_id() {
            let buffer = UsageBuffer::new(Duration::from_secs(60));
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 100);
            // Two notes of one key reach the queue when the filter lets
            // both through (a collision, or two threads at once); the
            // records differ only to get past the filter here.
            buffer.note(&record("b"), t0 + Duration::from_secs(3));
            buffer.note(&record("a"), t0);
            let earlier = KeyRecord::new("b", KeyHash::of("b2"), Owner::org("acme"));
            buffer.note(&earlier, t0 + Duration::from_secs(1));
            assert_eq!(buffer.queued(), 3);
            assert_eq!(
                drain(&buffer),
                vec![
                    (KeyId::from("a"), t0),
                    (KeyId::from("b"), t0 + Duration::from_secs(3)),
                ]
            );
        }

        #[tokio::test]
        async fn a_failed_flush_keeps_its_uses() {
            let buffer = UsageBuffer::new(Duration::from_secs(60));
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 500);
            buffer.note(&record("a"), t0);
            let failed = buffer
                .flush(async |_: &[(KeyId, SystemTime)]| Err(StoreError::Timeout))
                .await;
            assert!(failed.is_err());
            // Retried at the next flush, with what came since.
            buffer.note(&record("b"), t0 + Duration::from_secs(1));
            let written = buffer.flush(async |uses: &[(KeyId, SystemTime)]| {
                assert_eq!(
                    uses,
                    [
                        (KeyId::from("a"), t0),
                        (KeyId::from("b"), t0 + Duration::from_secs(1))
                    ]
                );
                Ok(())
            });
            assert_eq!(written.await.unwrap(), 2);
            assert_eq!(
                buffer
                    .flush(async |_: &[(KeyId, SystemTime)]| Ok(()))
                    .await
                    .unwrap(),
                0
            );
        }

        #[test]
        fn old_windows_are_forgotten() {
            let buffer = UsageBuffer::new(Duration::from_secs(1));
            let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
            let keys: Vec<KeyRecord> = (0..100).map(|i| record(&format!("k{i}"))).collect();
            for key in &keys {
                buffer.note(key, t0);
            }
            assert_eq!(drain(&buffer).len(), 100);
            for key in &keys {
                buffer.note(key, t0);
            }
            assert!(drain(&buffer).is_empty());
            // Two windows on, each key is written again.
            let later = t0 + Duration::from_secs(2);
            for key in &keys {
                buffer.note(key, later);
            }
            assert_eq!(drain(&buffer).len(), 100);
        }

        #[test]
        fn pending_uses_are_bounded_and_overflowed_keys_come_back() {
            const CAPACITY: usize = 16;
            let buffer = UsageBuffer::with_capacity(Duration::from_secs(60), CAPACITY);
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 100);
            let keys: Vec<KeyRecord> = (0..10 * CAPACITY)
                .map(|i| record(&format!("k{i}")))
                .collect();
            let mut written: HashMap<KeyId, usize> = HashMap::new();
            // Every key in steady use: each round uses them all, then the
            // writer drains.
            for round in 0..10 {
                for key in &keys {
                    buffer.note(key, t0 + Duration::from_secs(round));
                }
                assert_eq!(buffer.queued(), CAPACITY, "round {round}");
                let batch = drain(&buffer);
                assert_eq!(batch.len(), CAPACITY);
                for (id, _) in batch {
                    *written.entry(id).or_default() += 1;
                }
            }
            assert_eq!(written.len(), keys.len(), "every key written");
            assert!(written.values().all(|&times| times == 1), "{written:?}");
            for key in &keys {
                buffer.note(key, t0 + Duration::from_secs(30));
            }
            assert_eq!(buffer.queued(), 0, "all noted in this window");
        }

        #[tokio::test]
        async fn a_failed_batch_and_the_queue_hold_at_most_twice_the_capacity() {
            const CAPACITY: usize = 8;
            let buffer = UsageBuffer::with_capacity(Duration::from_secs(60), CAPACITY);
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 100);
            let keys: Vec<KeyRecord> = (0..4 * CAPACITY)
                .map(|i| record(&format!("k{i:02}")))
                .collect();
            let fail = async |uses: &[(KeyId, SystemTime)]| {
                assert!(uses.len() <= CAPACITY);
                Err(StoreError::Timeout)
            };
            for key in &keys {
                buffer.note(key, t0);
            }
            assert!(buffer.flush(fail).await.is_err());
            for key in &keys {
                buffer.note(key, t0);
            }
            assert_eq!(buffer.queued(), CAPACITY);
            // The failed batch leaves no room: the queue waits.
            assert!(buffer.flush(fail).await.is_err());
            assert_eq!(buffer.queued(), CAPACITY);
            let mut written = Vec::new();
            for _ in 0..2 {
                let uses = buffer
                    .flush(async |uses: &[(KeyId, SystemTime)]| {
                        written.extend(uses.iter().map(|(id, _)| id.clone()));
                        Ok(())
                    })
                    .await;
                assert_eq!(uses.unwrap(), CAPACITY);
            }
            let expected: Vec<KeyId> = keys[..2 * CAPACITY].iter().map(|k| k.id.clone()).collect();
            assert_eq!(written, expected);
        }

        #[tokio::test]
        async fn a_full_queue_wakes_the_writer_once() {
            let buffer = UsageBuffer::with_capacity(Duration::from_secs(60), 2);
            let signal = buffer.overflow_signal();
            let t0 = UNIX_EPOCH + Duration::from_secs(60 * 100);
            for i in 0..2 {
                buffer.note(&record(&format!("k{i}")), t0);
            }
            let woken = signal.notified();
            tokio::pin!(woken);
            assert!(futures_poll(woken.as_mut()).is_pending());
            for i in 2..10 {
                buffer.note(&record(&format!("k{i}")), t0);
            }
            assert!(futures_poll(woken.as_mut()).is_ready());
            // Once per overflow: the flag stays set until a drain.
            let again = signal.notified();
            tokio::pin!(again);
            buffer.note(&record("k11"), t0);
            assert!(futures_poll(again.as_mut()).is_pending());
            drain(&buffer);
            buffer.note(&record("k12"), t0);
            buffer.note(&record("k13"), t0);
            buffer.note(&record("k14"), t0);
            assert!(futures_poll(again.as_mut()).is_ready());
        }

        fn futures_poll<F: std::future::Future>(
            future: std::pin::Pin<&mut F>,
        ) -> std::task::Poll<F::Output> {
            future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        }

        #[test]
        fn threads_noting_at_once_lose_no_key_in_steady_use() {
            const THREADS: usize = 8;
            const KEYS: usize = 2_000;
            // A queue far smaller than the keys, so that it overflows.
            let buffer = UsageBuffer::with_capacity(Duration::from_secs(3600), 64);
            let at = UNIX_EPOCH + Duration::from_secs(3600 * 100);
            let keys: Vec<KeyRecord> = (0..KEYS).map(|i| record(&format!("k{i}"))).collect();
            let written = Mutex::new(HashSet::new());
            let done = AtomicBool::new(false);
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let (buffer, keys, done) = (&buffer, &keys, &done);
                    scope.spawn(move || {
                        // Each thread cycles over every key, from its own
                        // starting point, until the writer has them all.
                        let start = thread * KEYS / THREADS;
                        while !done.load(Ordering::Relaxed) {
                            for i in 0..KEYS {
                                buffer.note(&keys[(start + i) % KEYS], at);
                            }
                        }
                    });
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let batch = drain(&buffer);
                    assert!(batch.len() <= 64);
                    let mut written = written.lock().unwrap();
                    written.extend(batch.into_iter().map(|(id, _)| id));
                    if written.len() == KEYS || std::time::Instant::now() > deadline {
                        break;
                    }
                    drop(written);
                    std::thread::yield_now();
                }
                done.store(true, Ordering::Relaxed);
            });
            assert_eq!(written.into_inner().unwrap().len(), KEYS);
        }
    }
}
