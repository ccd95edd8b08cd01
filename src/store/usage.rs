//! Debounced `last_used_at` tracking, kept off the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ids::KeyId;
use crate::record::KeyRecord;
use crate::store::{IdMap, StoreError};

/// Which keys were already noted in the current window (time cut into
/// windows of one interval): one relaxed atomic load per request, no lock,
/// no shared write for a key in steady use.
#[derive(Debug)]
pub(crate) struct NotedFilter {
    interval: Duration,
    /// The interval in milliseconds, at least 1.
    interval_millis: u64,
    slots: Box<[AtomicU64]>,
}

/// Slots of the filter.
const NOTED_SLOTS: usize = 1024;

impl NotedFilter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            interval_millis: u64::try_from(interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            slots: (0..NOTED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    pub(crate) fn window(&self, at: SystemTime) -> u64 {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        // In 64 bits: milliseconds since 1970 fit for 584 million years, and
        // a 128-bit division is a call on the request path.
        let millis = since_epoch
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(since_epoch.subsec_millis()));
        millis / self.interval_millis
    }

    /// The window of `at` if this use of `record` is the first to note in
    /// it, and `None` if it can be skipped: the record itself says it was
    /// used less than an interval ago, or the key was already noted in this
    /// window (a cached record carries an old `last_used_at`, so its own
    /// time is not enough). Marks the key noted.
    pub(crate) fn first_use_in_window(&self, record: &KeyRecord, at: SystemTime) -> Option<u64> {
        let used_recently = record.last_used_at.is_some_and(|last| {
            at.duration_since(last)
                .map_or(true, |gap| gap < self.interval)
        });
        if used_recently {
            return None;
        }
        let window = self.window(at);
        self.mark(record, window).then_some(window)
    }

    /// Whether `record` was not yet noted in `window` (and marks it noted).
    /// Two keys may share a slot; then both are noted a little more often,
    /// never less.
    ///
    /// The fingerprint comes from the key's SHA-256 (uniform, and already at
    /// hand); bits 1 to 15 of the tag hold the window, and bit 0 is set so
    /// that no tag looks like an empty slot.
    fn mark(&self, record: &KeyRecord, window: u64) -> bool {
        let mut first = [0u8; 8];
        first.copy_from_slice(&record.hash.as_bytes()[..8]);
        let fingerprint = u64::from_le_bytes(first);
        let tag = (fingerprint & !0xffff) | ((window & 0x7fff) << 1) | 1;
        let slot = &self.slots[(fingerprint as usize) % NOTED_SLOTS];
        if slot.load(Ordering::Relaxed) == tag {
            return false;
        }
        slot.store(tag, Ordering::Relaxed);
        true
    }
}

/// Uses waiting to be written by a background task: at most one write per
/// key and window.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct UsageBuffer {
    noted: NotedFilter,
    state: Mutex<UsageState>,
}

#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
struct UsageState {
    pending: IdMap<KeyId, SystemTime>,
    /// The window of each key's last write, for the windows not over yet.
    written: IdMap<KeyId, u64>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl UsageBuffer {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            noted: NotedFilter::new(interval),
            state: Mutex::default(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.noted.interval()
    }

    /// Notes a use, unless the key was already noted in this window. Cheap:
    /// a time comparison, then one atomic load; the lock only once per key
    /// and window.
    pub(crate) fn note(&self, record: &KeyRecord, at: SystemTime) {
        // Without the filter every request through a cache would take the
        // lock.
        let Some(window) = self.noted.first_use_in_window(record, at) else {
            return;
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.written.get(&record.id) != Some(&window) {
            state.pending.entry(record.id.clone()).or_insert(at);
        }
    }

    /// Takes the pending uses to write now, and forgets the windows that are
    /// over.
    pub(crate) fn drain(&self, now: SystemTime) -> Vec<(KeyId, SystemTime)> {
        let current = self.noted.window(now);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.written.retain(|_, window| *window >= current);
        let pending: Vec<(KeyId, SystemTime)> = state.pending.drain().collect();
        for (id, at) in &pending {
            let window = self.noted.window(*at);
            state.written.insert(id.clone(), window);
        }
        pending
    }

    /// Puts back uses whose write failed, for the next flush.
    pub(crate) fn restore(&self, uses: Vec<(KeyId, SystemTime)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in uses {
            state.written.remove(&id);
            let pending = state.pending.entry(id).or_insert(at);
            *pending = (*pending).max(at);
        }
    }

    /// Drains the pending uses and writes them with `write`; if that fails,
    /// they are put back for the next flush. Returns how many were written.
    pub(crate) async fn flush(
        &self,
        write: impl AsyncFnOnce(&[(KeyId, SystemTime)]) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let uses = self.drain(SystemTime::now());
        if uses.is_empty() {
            return Ok(0);
        }
        match write(&uses).await {
            Ok(()) => Ok(uses.len()),
            Err(error) => {
                self.restore(uses);
                Err(error)
            }
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
    fn uses_whose_write_failed_are_written_next_time() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(60 * 500);
        buffer.note(&record("a"), t0);
        let failed = buffer.drain(t0 + Duration::from_secs(1));
        assert_eq!(failed.len(), 1);
        buffer.restore(failed);
        assert_eq!(
            buffer.drain(t0 + Duration::from_secs(2)),
            vec![(KeyId::from("a"), t0)]
        );
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_its_uses() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        buffer.note(&record("a"), SystemTime::now());
        let failed = buffer
            .flush(async |_: &[(KeyId, SystemTime)]| Err(StoreError::Timeout))
            .await;
        assert!(failed.is_err());
        let written = buffer.flush(async |uses: &[(KeyId, SystemTime)]| {
            assert_eq!(uses.len(), 1);
            Ok(())
        });
        assert_eq!(written.await.unwrap(), 1);
        assert_eq!(
            buffer
                .flush(async |_: &[(KeyId, SystemTime)]| Ok(()))
                .await
                .unwrap(),
            0
        );
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
