//! Debounced `last_used_at` tracking, kept off the request path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ids::KeyId;
use crate::record::KeyRecord;

/// Whether `record` was marked used less than `interval` before `at`, so a
/// new write would come too soon.
pub(crate) fn used_recently(record: &KeyRecord, at: SystemTime, interval: Duration) -> bool {
    record
        .last_used_at
        .is_some_and(|last| at.duration_since(last).map_or(true, |gap| gap < interval))
}

/// Uses waiting to be written. Time is cut into windows of one interval;
/// a key is written at most once per window.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct UsageBuffer {
    interval: Duration,
    state: Mutex<UsageState>,
    /// Which keys were already noted in their current window, so that a key
    /// in steady use skips the lock: one relaxed load per request.
    noted: Box<[AtomicU64]>,
}

/// Slots of the noted-keys filter.
const NOTED_SLOTS: usize = 1024;

#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
struct UsageState {
    pending: HashMap<KeyId, SystemTime>,
    /// The window of each key's last write, for the windows not over yet.
    written: HashMap<KeyId, u64>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl UsageBuffer {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::default(),
            noted: (0..NOTED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    fn window(&self, at: SystemTime) -> u64 {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        let window = since_epoch.as_millis() / self.interval.as_millis().max(1);
        u64::try_from(window).unwrap_or(u64::MAX)
    }

    /// The filter slot of a key and its tag for `window`. The fingerprint
    /// comes from the key's SHA-256 (uniform, and already at hand); bits 1
    /// to 15 hold the window, and bit 0 is set so no tag looks empty.
    fn slot_and_tag(record: &KeyRecord, window: u64) -> (usize, u64) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&record.hash.as_bytes()[..8]);
        let fingerprint = u64::from_le_bytes(first);
        let tag = (fingerprint & !0xffff) | ((window & 0x7fff) << 1) | 1;
        ((fingerprint as usize) % NOTED_SLOTS, tag)
    }

    /// Notes a use, unless the key was already noted in this window. Cheap:
    /// a time comparison, then one atomic load; the lock only once per key
    /// and window.
    pub(crate) fn note(&self, record: &KeyRecord, at: SystemTime) {
        if used_recently(record, at, self.interval) {
            return;
        }
        let window = self.window(at);
        let (slot, tag) = Self::slot_and_tag(record, window);
        // Cached records carry an old `last_used_at`: without this filter
        // every request through a cache would take the lock.
        if self.noted[slot].load(Ordering::Relaxed) == tag {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.written.get(&record.id) != Some(&window) {
            state.pending.entry(record.id.clone()).or_insert(at);
        }
        self.noted[slot].store(tag, Ordering::Relaxed);
    }

    /// Takes the pending uses to write now, and forgets the windows that are
    /// over.
    pub(crate) fn drain(&self, now: SystemTime) -> Vec<(KeyId, SystemTime)> {
        let current = self.window(now);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.written.retain(|_, window| *window >= current);
        let pending: Vec<(KeyId, SystemTime)> = state.pending.drain().collect();
        for (id, at) in &pending {
            let window = self.window(*at);
            state.written.insert(id.clone(), window);
        }
        pending
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
    fn a_key_is_written_at_most_once_per_window() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        // The start of a window.
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 16_000);
        let key = record("a");
        for second in 0..10 {
            buffer.note(&key, t0 + Duration::from_secs(second));
        }
        // The first use of a window is the one written.
        assert_eq!(
            buffer.drain(t0 + Duration::from_secs(10)),
            vec![(key.id.clone(), t0)]
        );
        // Later in the same window, even after the write: nothing new.
        buffer.note(&key, t0 + Duration::from_secs(30));
        assert!(buffer.drain(t0 + Duration::from_secs(40)).is_empty());
        // The next window: one more write.
        buffer.note(&key, t0 + Duration::from_secs(75));
        buffer.note(&key, t0 + Duration::from_secs(90));
        assert_eq!(
            buffer.drain(t0 + Duration::from_secs(100)),
            vec![(key.id.clone(), t0 + Duration::from_secs(75))]
        );
    }

    #[test]
    fn a_key_noted_in_this_window_skips_the_lock() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 100);
        let key = record("a");
        buffer.note(&key, t0);
        // Holding the lock proves the second note never asks for it.
        let guard = buffer.state.lock().unwrap();
        buffer.note(&key, t0 + Duration::from_secs(1));
        drop(guard);
        assert_eq!(buffer.drain(t0 + Duration::from_secs(2)).len(), 1);
    }

    #[test]
    fn a_record_marked_recently_is_skipped_without_locking() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        let now = SystemTime::now();
        buffer.note(
            &record("a").with_last_used_at(now - Duration::from_secs(5)),
            now,
        );
        assert!(buffer.drain(now).is_empty());
        buffer.note(
            &record("a").with_last_used_at(now - Duration::from_secs(61)),
            now,
        );
        assert_eq!(buffer.drain(now).len(), 1);
    }

    #[test]
    fn old_writes_are_forgotten() {
        let buffer = UsageBuffer::new(Duration::from_secs(1));
        let t0 = SystemTime::now();
        for i in 0..100 {
            buffer.note(&record(&format!("k{i}")), t0);
        }
        assert_eq!(buffer.drain(t0).len(), 100);
        assert!(buffer.drain(t0 + Duration::from_secs(2)).is_empty());
        assert!(buffer.state.lock().unwrap().written.is_empty());
    }
}
