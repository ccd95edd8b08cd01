//! The failed-attempt throttle: a client address that sent too many refused
//! credentials in a window is answered 429 at once, before its credential
//! is parsed or the store asked, until the window passes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{AuthError, AuthErrorKind};

const SHARDS: usize = 16;

/// Addresses tracked at once, across all shards.
pub(crate) const CAPACITY: usize = 1 << 17;

/// Counts refused credentials per client address (IPv6 by its /64: one
/// host usually holds a whole /64), in fixed windows opened by the first
/// refusal.
pub(crate) struct Throttle {
    limit: u32,
    window: Duration,
    shards: Box<[Mutex<HashMap<IpAddr, Window, foldhash::fast::RandomState>>]>,
    hasher: foldhash::fast::RandomState,
    /// When the last window of a blocked address closes (nanoseconds since
    /// the epoch): before it, addresses are looked up; after it, none can
    /// be blocked and requests pass without a lookup.
    blocked_until: AtomicU64,
}

#[derive(Clone, Copy)]
struct Window {
    refused: u32,
    closes_at: u64,
}

impl Throttle {
    /// Blocks an address after `limit` refused credentials within `window`.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            blocked_until: AtomicU64::new(0),
        }
    }

    /// Whether any address may be blocked at `now`: one atomic load, the
    /// whole cost of the throttle while nobody is blocked.
    pub(crate) fn may_block(&self, now: SystemTime) -> bool {
        nanos(now) < self.blocked_until.load(Ordering::Relaxed)
    }

    /// For a blocked address, how long it stays blocked.
    pub(crate) fn blocked(&self, client: IpAddr, now: SystemTime) -> Option<Duration> {
        let (client, now) = (bucket(client), nanos(now));
        let shard = self.shard(client);
        let windows = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let window = windows.get(&client)?;
        (window.refused >= self.limit && window.closes_at > now)
            .then(|| Duration::from_nanos(window.closes_at - now))
    }

    /// Counts a refused credential from `client`.
    pub(crate) fn refused(&self, client: IpAddr, now: SystemTime) {
        let (client, now) = (bucket(client), nanos(now));
        let shard = self.shard(client);
        let mut windows = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= CAPACITY / SHARDS && !windows.contains_key(&client) {
            windows.retain(|_, window| window.closes_at > now);
            if windows.len() >= CAPACITY / SHARDS {
                // Full of open windows: this address goes uncounted (the
                // throttle protects the store; authentication still holds).
                tracing::warn!("failed-attempt throttle full; an address goes uncounted");
                return;
            }
        }
        let window_nanos = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        let window = windows.entry(client).or_insert(Window {
            refused: 0,
            closes_at: now.saturating_add(window_nanos),
        });
        if window.closes_at <= now {
            *window = Window {
                refused: 0,
                closes_at: now.saturating_add(window_nanos),
            };
        }
        window.refused = window.refused.saturating_add(1);
        if window.refused == self.limit {
            tracing::info!(client = %client, outcome = "rate_limited", "too many refused credentials; the address is blocked for the window");
            self.blocked_until
                .fetch_max(window.closes_at, Ordering::Relaxed);
        }
    }

    fn shard(
        &self,
        client: IpAddr,
    ) -> &Mutex<HashMap<IpAddr, Window, foldhash::fast::RandomState>> {
        &self.shards[(self.hasher.hash_one(client) >> 60) as usize % SHARDS]
    }
}

/// Whether a refusal counts against its address: a credential was sent
/// and found wanting.
pub(crate) fn counts(error: &AuthError) -> bool {
    matches!(
        error.kind(),
        AuthErrorKind::InvalidToken | AuthErrorKind::Revoked | AuthErrorKind::Expired
    )
}

/// The refusal of a blocked address.
pub(crate) fn blocked_refusal(retry_after: Duration) -> AuthError {
    AuthError::too_many_failed_attempts(retry_after)
}

/// IPv4 as it is; IPv6 by its /64.
fn bucket(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

fn nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn an_address_is_blocked_after_the_limit_until_the_window_closes() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(!throttle.may_block(at(0)));
        for _ in 0..2 {
            throttle.refused(client, at(0));
        }
        assert_eq!(throttle.blocked(client, at(1)), None);
        assert!(!throttle.may_block(at(1)));
        throttle.refused(client, at(1));
        assert!(throttle.may_block(at(2)));
        assert_eq!(
            throttle.blocked(client, at(20)),
            Some(Duration::from_secs(40))
        );
        // Another address is not blocked.
        assert_eq!(
            throttle.blocked("198.51.100.8".parse().unwrap(), at(20)),
            None
        );
        assert_eq!(throttle.blocked(client, at(60)), None);
        assert!(!throttle.may_block(at(60)));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        throttle.refused("2001:db8:1:2::1".parse().unwrap(), at(0));
        throttle.refused("2001:db8:1:2:ffff::9".parse().unwrap(), at(0));
        assert!(
            throttle
                .blocked("2001:db8:1:2::77".parse().unwrap(), at(1))
                .is_some()
        );
        assert!(
            throttle
                .blocked("2001:db8:1:3::1".parse().unwrap(), at(1))
                .is_none()
        );
    }
}
