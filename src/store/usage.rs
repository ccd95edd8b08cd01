//! Debounced `last_used_at` tracking, kept off the request path.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::ids::KeyId;
use crate::record::KeyRecord;

/// Whether `record` was marked used less than `interval` before `at`, so a
/// new write would come too soon.
pub(crate) fn used_recently(record: &KeyRecord, at: SystemTime, interval: Duration) -> bool {
    record
        .last_used_at
        .is_some_and(|last| at.duration_since(last).map_or(true, |gap| gap < interval))
}

/// Uses waiting to be written. A key enters at most once per interval: its
/// last write is remembered until the interval has passed.
#[derive(Debug)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct UsageBuffer {
    interval: Duration,
    state: Mutex<UsageState>,
}

#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
struct UsageState {
    pending: HashMap<KeyId, SystemTime>,
    written: HashMap<KeyId, SystemTime>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl UsageBuffer {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::default(),
        }
    }

    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Notes a use unless the key was written (or is pending) within the
    /// interval. Cheap: a time comparison, and a map lookup at most.
    pub(crate) fn note(&self, record: &KeyRecord, at: SystemTime) {
        if used_recently(record, at, self.interval) {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let written_recently = state.written.get(&record.id).is_some_and(|&last| {
            at.duration_since(last)
                .map_or(true, |gap| gap < self.interval)
        });
        if !written_recently {
            let pending = state.pending.entry(record.id.clone()).or_insert(at);
            *pending = (*pending).max(at);
        }
    }

    /// Takes the pending uses to write now, and forgets writes older than the
    /// interval.
    pub(crate) fn drain(&self, now: SystemTime) -> Vec<(KeyId, SystemTime)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let interval = self.interval;
        state
            .written
            .retain(|_, last| now.duration_since(*last).map_or(true, |gap| gap < interval));
        let pending: Vec<(KeyId, SystemTime)> = state.pending.drain().collect();
        for (id, at) in &pending {
            state.written.insert(id.clone(), *at);
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
    fn a_key_is_written_at_most_once_per_interval() {
        let buffer = UsageBuffer::new(Duration::from_secs(60));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let key = record("a");
        for second in 0..10 {
            buffer.note(&key, t0 + Duration::from_secs(second));
        }
        assert_eq!(
            buffer.drain(t0 + Duration::from_secs(10)),
            vec![(key.id.clone(), t0 + Duration::from_secs(9))]
        );
        // Within the interval of that write: nothing new.
        buffer.note(&key, t0 + Duration::from_secs(30));
        assert!(buffer.drain(t0 + Duration::from_secs(40)).is_empty());
        // After it: one more write.
        buffer.note(&key, t0 + Duration::from_secs(75));
        assert_eq!(buffer.drain(t0 + Duration::from_secs(80)).len(), 1);
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
