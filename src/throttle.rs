//! The failed-attempt throttle: a client address that sent too many refused
//! credentials in a window is answered 429 at once, before its credential
//! is parsed or the store asked, until the window passes.
//!
//! # Buckets
//!
//! Refusals are counted in fixed windows, each opened by its bucket's first
//! refusal. A refusal counts in one bucket, the first of these that takes
//! it:
//!
//! 1. its address (IPv6 by its /64: one host usually holds a whole /64),
//!    when the address has a window already, or when its shard of the
//!    address table (131 072 addresses in 16 shards) has room, if need be
//!    once closed windows are swept out;
//! 2. its network, the /24 of IPv4 or the /48 of IPv6 (a site's usual
//!    allocation), when the network has a window already or its shard of
//!    the network table (16 384 networks) has room;
//! 3. the overflow bucket of the network's shard.
//!
//! An address is blocked while its own bucket or its network's has reached
//! the limit in an open window; and while the overflow bucket of its
//! network's shard has, if that is where its refusals would count.
//!
//! # Floods and collateral damage
//!
//! Without buckets 2 and 3, a client rotating through addresses would go
//! uncounted once the table is full: one IPv6 /48 holds 65 536 /64s, a /44
//! a million. With them, the newcomers of a flood count against their
//! network, which is blocked after `limit` of them, and past the network
//! table against an overflow bucket: however many addresses a flood holds,
//! a bucket lets `limit` refusals through per window, and there are at most
//! 147 472 buckets at a time.
//!
//! Neighbours pay for it. While a network is blocked, so are the innocent
//! addresses in it: the rest of a /24 of IPv4 (a company, a carrier-grade
//! NAT) or of a /48. While an overflow bucket is blocked, so is every
//! address it would count, in a sixteenth of the networks: every client
//! there with no open window of its own or of its network, in practice
//! every new client. This happens only under a flood, and only as long as
//! needed: a newcomer counts by network only while its address shard is
//! full of open windows (8 192 addresses refused within a window, in one
//! shard), in the overflow only while its network shard is full of open
//! windows too (1 024 networks); a network or overflow bucket blocks until
//! its window closes, and is then dropped (the tables are swept, or dropped
//! whole once all their windows have closed). The throttle then fails
//! closed, as the layer does elsewhere: the alternative is a throttle that
//! any flood of addresses turns off.
//!
//! # Cost
//!
//! Counting a refusal, or checking an address while someone is blocked,
//! costs a lock and a lookup; two while the address's shard is full or a
//! network is blocked. While nobody is blocked the layer does not check
//! (`may_block`: one atomic load). A full table is swept of its closed
//! windows only once one of them has closed (the table knows its earliest
//! closing), and at most 8 times per window length (`SWEEPS_PER_WINDOW`):
//! however many refusals a flood sends, sweeping a shard costs at most 9
//! passes over its 8 192 windows per window length, never one per refusal.
//! A table whose windows have all closed is dropped whole, so its memory is
//! given back once a flood is over.
//!
//! # Memory
//!
//! At most `CAPACITY` (131 072) address windows and `NETWORK_CAPACITY`
//! (16 384) network windows, plus one overflow window per shard. A map
//! never holds a removed entry (a sweep rebuilds it), so std's `HashMap`
//! (a power-of-two table, filled to 7/8 at most) gives an address shard at
//! most 16 384 slots and a network shard at most 2 048, of 33 bytes on
//! 64-bit targets (a 16-byte key, a 16-byte window, a control byte):
//! 16 × (16 384 + 2 048) × 33 bytes, 9.7 MB (`tests::MEMORY_BOUND`). While a
//! sweep rebuilds a map, or a map grows, its old table is held too: at
//! most 0.5 MB more for each thread doing so at that moment.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::SharedClock;
use crate::error::{AuthError, AuthErrorKind};

const SHARDS: usize = 16;

/// Addresses tracked at once, across all shards.
pub(crate) const CAPACITY: usize = 1 << 17;

/// Networks tracked at once, across all shards: counted only while an
/// address shard is full of open windows.
const NETWORK_CAPACITY: usize = CAPACITY / 8;

const ADDRESSES_PER_SHARD: usize = CAPACITY / SHARDS;
const NETWORKS_PER_SHARD: usize = NETWORK_CAPACITY / SHARDS;

/// How many times per window length a full table may be swept at most.
const SWEEPS_PER_WINDOW: u64 = 8;

/// Counts refused credentials per client address (IPv6 by its /64), and
/// per network while the table of addresses is full, in fixed windows
/// opened by the first refusal.
pub(crate) struct Throttle {
    limit: u32,
    window: Duration,
    /// `window` in nanoseconds.
    window_nanos: u64,
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    /// When the last window of a blocked bucket closes (nanoseconds since
    /// the epoch): before it, addresses are looked up; after it, none can
    /// be blocked and requests pass without a lookup.
    blocked_until: AtomicU64,
    /// The same for networks and overflow buckets: after it, an address
    /// is judged by its own bucket alone.
    networks_blocked_until: AtomicU64,
}

/// One shard: addresses whose key falls in it, and networks whose key
/// does.
#[derive(Default)]
struct Shard {
    addresses: Table,
    networks: Table,
    /// What neither table of the network's shard had room for.
    overflow: Window,
}

/// A map of windows, and when sweeping it may free anything.
struct Table {
    windows: HashMap<Key, Window, foldhash::fast::RandomState>,
    /// No sweep before this (nanoseconds since the epoch): the earliest
    /// `closes_at` in `windows` or earlier (nothing can be freed before
    /// it), and a sweep interval after the last sweep or later.
    next_sweep: u64,
    /// The latest `closes_at` in `windows` or later: from it on, every
    /// window has closed and the map is dropped whole.
    last_close: u64,
    /// Whether the table was full of open windows at its last miss: one
    /// log line when it becomes so, not one per request.
    full: bool,
    #[cfg(test)]
    sweeps: u32,
}

#[derive(Clone, Copy, Default)]
struct Window {
    refused: u32,
    closes_at: u64,
}

/// A bucket: the 128 bits of an IPv6 address, an IPv4 address as
/// IPv4-mapped (`::ffff:a.b.c.d`). The key of an IPv6 /64 or /48 ends in
/// 64 zero bits, a mapped one never does (bits 32 to 47 are set): the two
/// families never share a bucket.
type Key = u128;

impl Throttle {
    /// Blocks an address after `limit` refused credentials within `window`.
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            window_nanos: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            blocked_until: AtomicU64::new(0),
            networks_blocked_until: AtomicU64::new(0),
        }
    }

    /// Whether any address may be blocked at `now`: one atomic load, the
    /// whole cost of the throttle while nobody is blocked.
    pub(crate) fn may_block(&self, now: SystemTime) -> bool {
        nanos(now) < self.blocked_until.load(Ordering::Relaxed)
    }

    /// For a blocked address, how long it stays blocked.
    pub(crate) fn blocked(&self, client: IpAddr, now: SystemTime) -> Option<Duration> {
        let (client, now) = (client.to_canonical(), nanos(now));
        let address = address_key(client);
        // `counted`: whether a refusal would count against the address
        // itself (it has a window, or its shard has room).
        let (own, counted) = {
            let shard = self.lock(address);
            match shard.addresses.windows.get(&address) {
                Some(window) if window.closes_at > now => (self.blocks(window, now), true),
                _ => (None, shard.addresses.has_room(ADDRESSES_PER_SHARD)),
            }
        };
        if now >= self.networks_blocked_until.load(Ordering::Relaxed) {
            return own;
        }
        let network = network_key(client);
        let shard = self.lock(network);
        let wider = match shard.networks.windows.get(&network) {
            Some(window) if window.closes_at > now => self.blocks(window, now),
            // The overflow blocks only what it would count.
            _ if counted || shard.networks.has_room(NETWORKS_PER_SHARD) => None,
            _ => self.blocks(&shard.overflow, now),
        };
        own.max(wider)
    }

    /// Counts `refusal` against its client's address, when it is one the
    /// throttle counts (see [`counts`]); without an address, warns once
    /// that the throttle cannot work.
    pub(crate) fn count_refusal(
        &self,
        refusal: &AuthError,
        client: impl FnOnce() -> Option<IpAddr>,
        clock: &SharedClock,
    ) {
        if !counts(refusal) {
            return;
        }
        match client() {
            Some(client) => self.refused(client, clock.now()),
            None => warn_no_client_address(),
        }
    }

    /// Counts a refused credential from `client`.
    pub(crate) fn refused(&self, client: IpAddr, now: SystemTime) {
        let (client, now) = (client.to_canonical(), nanos(now));
        let address = address_key(client);
        {
            let mut guard = self.lock(address);
            let shard = &mut *guard;
            shard.networks.drop_if_closed(now);
            if let Some(window) =
                shard
                    .addresses
                    .window(address, now, ADDRESSES_PER_SHARD, self.window_nanos)
            {
                if window.count() == self.limit {
                    tracing::info!(client = %Named { key: address, network: false }, outcome = "rate_limited", "too many refused credentials; the address is blocked for the window");
                    self.blocked_until
                        .fetch_max(window.closes_at, Ordering::Relaxed);
                }
                return;
            }
            if shard.addresses.newly_full() {
                tracing::warn!(
                    "failed-attempt throttle: a shard of addresses is full of open windows; its newcomers count by network (/24, /48) until windows close"
                );
            }
        }
        let network = network_key(client);
        let mut guard = self.lock(network);
        let shard = &mut *guard;
        if let Some(window) =
            shard
                .networks
                .window(network, now, NETWORKS_PER_SHARD, self.window_nanos)
        {
            if window.count() == self.limit {
                tracing::info!(network = %Named { key: network, network: true }, outcome = "rate_limited", "too many refused credentials from new addresses of a network while the throttle is full; the network is blocked for the window");
                self.block_networks(window.closes_at);
            }
            return;
        }
        if shard.networks.newly_full() {
            tracing::warn!(
                "failed-attempt throttle: a shard of networks is full of open windows; its newcomers count in its overflow bucket until windows close"
            );
        }
        let overflow = &mut shard.overflow;
        if overflow.closes_at <= now {
            *overflow = Window::opened(now, self.window_nanos);
        }
        if overflow.count() == self.limit {
            tracing::warn!(
                outcome = "rate_limited",
                "failed-attempt throttle: an overflow bucket is blocked; addresses it does not hold are answered 429 in a sixteenth of the networks until its window closes"
            );
            self.block_networks(overflow.closes_at);
        }
    }

    fn block_networks(&self, until: u64) {
        self.networks_blocked_until
            .fetch_max(until, Ordering::Relaxed);
        self.blocked_until.fetch_max(until, Ordering::Relaxed);
    }

    /// How long `window` blocks, if it does.
    fn blocks(&self, window: &Window, now: u64) -> Option<Duration> {
        (window.refused >= self.limit && window.closes_at > now)
            .then(|| Duration::from_nanos(window.closes_at - now))
    }

    fn lock(&self, key: Key) -> MutexGuard<'_, Shard> {
        self.shards[(self.hasher.hash_one(key) >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Table {
    fn default() -> Self {
        Self {
            windows: HashMap::default(),
            next_sweep: u64::MAX,
            last_close: 0,
            full: false,
            #[cfg(test)]
            sweeps: 0,
        }
    }
}

impl Table {
    /// The open window of `key` at `now`, opened if need be; `None` when
    /// the table holds `capacity` windows, not `key`'s, and cannot be
    /// swept yet or is still full after a sweep.
    fn window(
        &mut self,
        key: Key,
        now: u64,
        capacity: usize,
        window_nanos: u64,
    ) -> Option<&mut Window> {
        self.drop_if_closed(now);
        if self.windows.len() >= capacity && !self.windows.contains_key(&key) {
            if now < self.next_sweep {
                return None;
            }
            self.sweep(now, window_nanos);
            if self.windows.len() >= capacity {
                return None;
            }
            self.full = false;
        }
        let window = self.windows.entry(key).or_default();
        if window.closes_at <= now {
            *window = Window::opened(now, window_nanos);
            self.next_sweep = self.next_sweep.min(window.closes_at);
            self.last_close = self.last_close.max(window.closes_at);
        }
        Some(window)
    }

    /// Drops the whole map once every window in it has closed.
    fn drop_if_closed(&mut self, now: u64) {
        if now >= self.last_close && self.windows.capacity() > 0 {
            self.windows = HashMap::with_hasher(self.windows.hasher().clone());
            self.next_sweep = u64::MAX;
            self.full = false;
        }
    }

    /// Removes the windows closed at `now`, into a new map (one without
    /// the removed entries' tombstones, which would make std's map grow
    /// instead of rehashing in place).
    fn sweep(&mut self, now: u64, window_nanos: u64) {
        #[cfg(test)]
        {
            self.sweeps += 1;
        }
        let (mut open, mut earliest) = (0, u64::MAX);
        for window in self.windows.values() {
            if window.closes_at > now {
                open += 1;
                earliest = earliest.min(window.closes_at);
            }
        }
        if open < self.windows.len() {
            let hasher = self.windows.hasher().clone();
            let all = std::mem::replace(
                &mut self.windows,
                HashMap::with_capacity_and_hasher(open, hasher),
            );
            self.windows
                .extend(all.into_iter().filter(|(_, window)| window.closes_at > now));
        }
        let interval = window_nanos / SWEEPS_PER_WINDOW;
        self.next_sweep = earliest.max(now.saturating_add(interval));
    }

    /// Whether a window could be opened without a sweep.
    fn has_room(&self, capacity: usize) -> bool {
        self.windows.len() < capacity
    }

    /// Marks the table full of open windows; whether it just became so.
    fn newly_full(&mut self) -> bool {
        !std::mem::replace(&mut self.full, true)
    }
}

impl Window {
    fn opened(now: u64, window_nanos: u64) -> Self {
        Self {
            refused: 0,
            closes_at: now.saturating_add(window_nanos),
        }
    }

    /// Counts one more refusal; the count.
    fn count(&mut self) -> u32 {
        self.refused = self.refused.saturating_add(1);
        self.refused
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

/// Warns, once per process, that the throttle met a refused credential
/// without a client address to count it against: the server does not hand
/// the layer the peer's address (axum: serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`), so the throttle
/// does nothing.
fn warn_no_client_address() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "failed-attempt throttle: a refused credential came without a client address, so it is not counted; \
             serve the app with its peer addresses (axum: into_make_service_with_connect_info::<SocketAddr>()) \
             or insert a PeerAddr"
        );
    });
}

/// The refusal of a blocked address.
pub(crate) fn blocked_refusal(retry_after: Duration) -> AuthError {
    AuthError::too_many_failed_attempts(retry_after)
}

/// IPv4-mapped IPv6, as keys hold IPv4 addresses.
const MAPPED: u128 = 0xffff << 32;

/// The bucket of a (canonical) address: IPv4 as it is; IPv6 by its /64.
fn address_key(client: IpAddr) -> Key {
    match client {
        IpAddr::V4(v4) => MAPPED | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) & !((1 << 64) - 1),
    }
}

/// The bucket of a (canonical) address's network: IPv4 by its /24, IPv6
/// by its /48.
fn network_key(client: IpAddr) -> Key {
    match client {
        IpAddr::V4(v4) => MAPPED | u128::from(u32::from(v4) & !0xff),
        IpAddr::V6(v6) => u128::from(v6) & !((1 << 80) - 1),
    }
}

/// A bucket, for the log: an address (`198.51.100.7`, `2001:db8:1:2::/64`)
/// or a network (`198.51.100.0/24`, `2001:db8:1::/48`).
struct Named {
    key: Key,
    network: bool,
}

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = Ipv6Addr::from(self.key);
        match (ip.to_ipv4_mapped(), self.network) {
            (Some(v4), false) => write!(f, "{v4}"),
            (Some(v4), true) => write!(f, "{v4}/24"),
            (None, false) => write!(f, "{ip}/64"),
            (None, true) => write!(f, "{ip}/48"),
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
    use std::net::Ipv4Addr;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn at_nanos(nanos: u64) -> SystemTime {
        at(0) + Duration::from_nanos(nanos)
    }

    /// A host in the /64 `net64` of the /48 `2001:db8:<net48>::/48`.
    fn host(net48: u16, net64: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net48, net64, 0, 0, 0, 1))
    }

    /// Every /64 of `2001:db8:a0::/48` to `2001:db8:a2::/48` (196 608,
    /// more than the table holds), the `i`th refused at `when(i)`.
    fn fill(throttle: &Throttle, when: impl Fn(u64) -> SystemTime) {
        let mut i = 0;
        for net48 in 0xa0..0xa3 {
            for net64 in 0..=u16::MAX {
                throttle.refused(host(net48, net64), when(i));
                i += 1;
            }
        }
        assert!(
            throttle.shards.iter().all(|shard| {
                let shard = shard.lock().unwrap();
                shard.addresses.windows.len() == ADDRESSES_PER_SHARD
            }),
            "every shard of addresses is full"
        );
    }

    /// Slots of a table holding `entries` at most, with std's `HashMap`: a
    /// power of two, filled to 7/8 at most.
    const fn slots(entries: usize) -> usize {
        (entries * 8).div_ceil(7).next_power_of_two()
    }

    /// Bytes the throttle's maps hold at most (see the module's doc): every
    /// shard's tables full.
    const MEMORY_BOUND: usize = {
        let slot = size_of::<(Key, Window)>() + 1;
        let address_table = slots(ADDRESSES_PER_SHARD) * slot;
        let network_table = slots(NETWORKS_PER_SHARD) * slot;
        SHARDS * (address_table + network_table)
    };
    /// The old table of an address map being rebuilt or grown.
    const REBUILT: usize = slots(ADDRESSES_PER_SHARD) * (size_of::<(Key, Window)>() + 1);

    // The figures of the module's doc, checked when the tests build.
    const _: () = assert!(MEMORY_BOUND <= 9_750_000);
    const _: () = assert!(REBUILT <= 550_000);

    impl Throttle {
        fn sweeps(&self) -> u32 {
            self.shards
                .iter()
                .map(|shard| {
                    let shard = shard.lock().unwrap();
                    shard.addresses.sweeps + shard.networks.sweeps
                })
                .sum()
        }

        /// The address windows that close after `after`.
        fn addresses_closing_after(&self, after: SystemTime) -> usize {
            let after = nanos(after);
            self.shards
                .iter()
                .map(|shard| {
                    let shard = shard.lock().unwrap();
                    let windows = shard.addresses.windows.values();
                    windows.filter(|window| window.closes_at > after).count()
                })
                .sum()
        }

        fn assert_within_bounds(&self) {
            for shard in &self.shards {
                let shard = shard.lock().unwrap();
                for (table, entries) in [
                    (&shard.addresses, ADDRESSES_PER_SHARD),
                    (&shard.networks, NETWORKS_PER_SHARD),
                ] {
                    assert!(table.windows.len() <= entries);
                    // Never more slots than `MEMORY_BOUND` counts.
                    assert!(table.windows.capacity() <= slots(entries) / 8 * 7);
                }
            }
        }
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

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        throttle.refused("::ffff:198.51.100.7".parse().unwrap(), at(0));
        throttle.refused("198.51.100.7".parse().unwrap(), at(0));
        assert!(
            throttle
                .blocked("198.51.100.7".parse().unwrap(), at(1))
                .is_some()
        );
    }

    #[test]
    fn the_two_families_never_share_a_bucket() {
        let v4 = |ip: &str| IpAddr::V4(ip.parse().unwrap());
        let v6 = |ip: &str| IpAddr::V6(ip.parse().unwrap());
        // The IPv6 prefixes whose bits are nearest to the mapped keys'.
        for six in [v6("::"), v6("::ffff:0:0:0"), v6("0:0:0:ffff::")] {
            for four in [v4("0.0.0.0"), v4("198.51.100.7"), v4("255.255.255.255")] {
                assert_ne!(address_key(six), address_key(four));
                assert_ne!(network_key(six), network_key(four));
            }
        }
        assert_eq!(
            Named {
                key: network_key(v4("198.51.100.7")),
                network: true
            }
            .to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            Named {
                key: address_key(v6("2001:db8:1:2::7")),
                network: false
            }
            .to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            Named {
                key: network_key(v6("2001:db8:1:2::7")),
                network: true
            }
            .to_string(),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn a_flood_of_64s_is_blocked_by_its_48_and_nothing_else_is() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        // An attacker with a /44 fills the table with /64s of three /48s.
        fill(&throttle, |_| at(0));
        // New /64s of a fourth /48 find no room by address; they count
        // against their /48, which is blocked after three.
        let new = |net64| host(0xa3, net64);
        throttle.refused(new(0), at(1));
        throttle.refused(new(1), at(1));
        assert_eq!(throttle.blocked(new(1_000), at(2)), None);
        throttle.refused(new(2), at(2));
        assert!(throttle.may_block(at(3)));
        assert_eq!(
            throttle.blocked(new(1_000), at(3)),
            Some(Duration::from_secs(58))
        );
        assert_eq!(
            throttle.blocked(new(0), at(3)),
            Some(Duration::from_secs(58))
        );
        // Another /48, and an IPv4 address, are not blocked.
        assert_eq!(throttle.blocked(host(0xff, 1), at(3)), None);
        assert_eq!(throttle.blocked(host(0xa4, 0), at(3)), None);
        assert_eq!(
            throttle.blocked("198.51.100.7".parse().unwrap(), at(3)),
            None
        );
        // Until the /48's window closes.
        assert_eq!(throttle.blocked(new(1_000), at(61)), None);
        assert!(!throttle.may_block(at(61)));
    }

    #[test]
    fn a_full_table_is_not_swept_on_every_miss() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        fill(&throttle, |_| at(0));
        // 100 000 refusals from new addresses over 30 seconds, while no
        // window has closed: nothing to free, no sweep.
        for n in 0..100_000u32 {
            let net48 = 0xb0 + u16::try_from(n >> 16).unwrap();
            let when = at_nanos(u64::from(n) * 300_000);
            throttle.refused(host(net48, n as u16), when);
        }
        assert_eq!(throttle.sweeps(), 0);
        throttle.assert_within_bounds();
    }

    #[test]
    fn sweeps_are_rate_limited_while_windows_close_one_by_one() {
        let window = Duration::from_secs(80);
        let throttle = Throttle::new(3, window);
        let nanos = u64::try_from(window.as_nanos()).unwrap();
        // Windows opened one after the other through a whole window, so
        // that from `window` on they close one after the other, faster
        // than the newcomers below arrive.
        fill(&throttle, |i| at_nanos(i * nanos / 196_608));
        for n in 0..100_000u32 {
            let net48 = 0xb0 + u16::try_from(n >> 16).unwrap();
            let when = at_nanos(nanos + u64::from(n) * (nanos / 2 / 100_000));
            throttle.refused(host(net48, n as u16), when);
        }
        // Over half a window: at most 5 sweeps in each of the 16 shards
        // (the network tables are never full here), where sweeping
        // whenever a window has closed would sweep on nearly every miss.
        let sweeps = throttle.sweeps();
        assert!(sweeps <= 16 * 5, "{sweeps} sweeps");
        // And sweeps do free room: newcomers are counted by address.
        let held = throttle.addresses_closing_after(at_nanos(2 * nanos));
        assert!(held >= 30_000, "{held} newcomers held by address");
        throttle.assert_within_bounds();
    }

    #[test]
    fn past_the_network_table_the_overflow_blocks_only_what_it_would_count() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        // 300 000 IPv4 addresses, each of its own /24: more than the
        // addresses and networks the throttle holds together.
        let flood = |n: u32| IpAddr::V4(Ipv4Addr::from(0x4000_0001 + (n << 8)));
        for n in 0..300_000 {
            throttle.refused(flood(n), at(0));
        }
        throttle.assert_within_bounds();
        // A newcomer is blocked: neither it nor its network has a window.
        let newcomer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            throttle.blocked(newcomer, at(1)),
            Some(Duration::from_secs(59))
        );
        // An address held by its own window, under the limit, is not.
        assert_eq!(throttle.blocked(flood(0), at(1)), None);
        // Until the window closes; the tables are then dropped whole.
        assert_eq!(throttle.blocked(newcomer, at(60)), None);
        assert!(!throttle.may_block(at(60)));
        throttle.refused(newcomer, at(60));
        let shard = throttle.lock(address_key(newcomer));
        assert_eq!(shard.addresses.windows.len(), 1);
        assert_eq!(shard.networks.windows.capacity(), 0);
        assert_eq!(shard.addresses.sweeps + shard.networks.sweeps, 0);
    }

    #[test]
    fn memory_stays_bounded_through_floods_that_overlap() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        // Three floods of 200 000 addresses, 40 seconds each: windows
        // close while others are open, tables are swept and refilled.
        for round in 0..3u32 {
            for n in 0..200_000u32 {
                let ip = IpAddr::V4(Ipv4Addr::from((round << 30) | (n << 8) | 1));
                let when = u64::from(round) * 40_000_000_000 + u64::from(n) * 200_000;
                throttle.refused(ip, at_nanos(when));
            }
            throttle.assert_within_bounds();
        }
        assert!(throttle.sweeps() > 0);
    }
}
