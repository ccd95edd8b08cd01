//! Rate limits: how many requests a key (or every key of an owner) may make
//! in a window, counted by a [`RateLimiter`] that is exact on one machine
//! ([`MemoryLimiter`]) or across many (`RedisLimiter`, feature `redis`).
//!
//! A limit of N per window counts in **fixed windows that open with the
//! first request** a counter sees and last the window's length: at most N
//! units are admitted in each window, never more, on any number of
//! instances sharing the limiter. After the N-th, a request is refused with
//! the time until the window closes (`Retry-After`). Two windows in a row
//! can admit N at the end of one and N at the start of the next; that is
//! the price of an exact count in constant memory per counter (a sliding
//! log of every request would be exact over any span, and cost memory that
//! grows with N).
//!
//! Several limits are charged **all or nothing**: a request that one limit
//! refuses charges none of them.
//!
//! A key carries its limits ([`UsageLimits`]), and the layer enforces them
//! on each of its requests, counted in the layer's [`RateLimiter`]
//! ([`MemoryLimiter`] unless
//! [`KeyAuthLayer::rate_limiter`](crate::KeyAuthLayer::rate_limiter) says
//! otherwise):
//!
//! ```
//! use std::time::Duration;
//! use tower_keyauth::limit::{CountedPer, Credits, RateLimit, UsageLimits};
//! use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};
//!
//! # tokio_test_block_on(async {
//! let minute = Duration::from_secs(60);
//! let limits = UsageLimits::new()
//!     // 100 a minute for this key…
//!     .rate_limit(RateLimit::per(100, minute).unwrap())
//!     .unwrap()
//!     // …within 5 000 a minute for all of its organization's keys…
//!     .rate_limit(RateLimit::per(5_000, minute).unwrap().counted_per(CountedPer::Organization))
//!     .unwrap()
//!     // …and 10 000 requests in all.
//!     .with_credits(Credits::new(10_000).unwrap());
//! let store = MemoryStore::new();
//! let issued = store.issue(NewKey::org("acme").name("partner").limits(limits)).await.unwrap();
//! assert_eq!(issued.record.limits.unwrap().rate_limits().len(), 2);
//! let layer = KeyAuthLayer::new(store); // enforces them
//! # let _ = layer;
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! The limiter can also be driven by hand:
//!
//! ```
//! use std::time::Duration;
//! use tower_keyauth::limit::{Charge, Counter, MemoryLimiter, RateLimit, RateLimiter};
//!
//! # tokio_test_block_on(async {
//! let five_a_minute = RateLimit::per(5, Duration::from_secs(60)).unwrap();
//! let limiter = MemoryLimiter::new();
//! let counters = [Counter::new("key:k1", &five_a_minute)];
//! for _ in 0..5 {
//!     assert!(matches!(limiter.charge(&counters, 1).await.unwrap(), Charge::Admitted(_)));
//! }
//! let Charge::Limited(state) = limiter.charge(&counters, 1).await.unwrap() else { panic!() };
//! assert!(state.resets_in <= Duration::from_secs(60));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{KeyId, OrgId, UserId, WorkspaceId};

pub(crate) mod fields;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod usage;

pub use fields::{RATELIMIT, RATELIMIT_POLICY};
pub use memory::MemoryLimiter;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::RedisLimiter;
pub use usage::{
    Credits, InvalidLimits, MAX_CREDITS, MAX_RATE_LIMITS, RateLimits, Refill, UsageLimits,
};

/// The most units a limit may allow per window.
pub const MAX_LIMIT: u32 = 1_000_000_000;

/// The longest window: a year and a day.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The longest name of a limit, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The most limits one request may be charged: a key's own and its owner's.
pub const MAX_COUNTERS: usize = 8;

/// At most `limit` units of cost per `window`, optionally named (the name
/// appears in the `RateLimit` response fields; otherwise `default`, or the
/// [`CountedPer`] of a shared limit), counted for the key alone or shared
/// by every key of its organization or workspace ([`counted_per`](Self::counted_per)).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    limit: u32,
    window: Duration,
    name: Option<Arc<str>>,
    per: CountedPer,
}

/// Whose requests one [`RateLimit`] counts: the key's own (the default), or
/// every key of its owner's workspace or organization.
///
/// A shared limit is counted per owner and window: every key of the
/// organization that carries `1000 per 60 s, per organization` draws on one
/// count of 1 000 a minute, and a key carrying a lower limit per minute
/// per organization draws on the same count, refused sooner (never a count
/// of its own, so minting keys with other limits cannot multiply the
/// allowance). Keys issued through the key API inherit
/// their issuer's limits and may not loosen them, so an organization's
/// first key sets the limit for every key made from it. A personal token
/// counts against the organization it acts for (the one its request
/// names). A key without a workspace counts a `per workspace` limit
/// against its whole organization.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{CountedPer, RateLimit};
/// let org_wide = RateLimit::per(1000, Duration::from_secs(60))
///     .unwrap()
///     .counted_per(CountedPer::Organization);
/// assert_eq!(org_wide.counted_for(), CountedPer::Organization);
/// assert_eq!("organization".parse(), Ok(CountedPer::Organization));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CountedPer {
    /// The key's own requests (a rotated key's successor goes on counting
    /// where it stopped).
    #[default]
    Key,
    /// Every key of the principal's workspace (its organization, for a
    /// principal that acts for the whole organization).
    Workspace,
    /// Every key of the principal's organization.
    Organization,
}

impl CountedPer {
    /// `key`, `workspace` or `organization`: the word the key API and the
    /// stored text form use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Workspace => "workspace",
            Self::Organization => "organization",
        }
    }
}

impl fmt::Display for CountedPer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The word is not `key`, `workspace` or `organization`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a rate limit is counted per `key`, `workspace` or `organization`")]
pub struct UnknownCountedPer;

impl std::str::FromStr for CountedPer {
    type Err = UnknownCountedPer;

    fn from_str(word: &str) -> Result<Self, UnknownCountedPer> {
        match word {
            "key" => Ok(Self::Key),
            "workspace" => Ok(Self::Workspace),
            "organization" => Ok(Self::Organization),
            _ => Err(UnknownCountedPer),
        }
    }
}

/// Why a [`RateLimit`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLimit {
    /// The limit is 0 or more than [`MAX_LIMIT`].
    #[error("a rate limit allows between 1 and {MAX_LIMIT} requests per window")]
    Limit,
    /// The window is shorter than a second, not whole seconds, or longer
    /// than [`MAX_WINDOW`].
    #[error("a rate limit's window is a whole number of seconds, from 1 to 31622400")]
    Window,
    /// The name does not start with an ASCII letter, is longer than
    /// [`MAX_NAME_LEN`] or has a character other than ASCII letters,
    /// digits, `-`, `_` and `.`.
    #[error(
        "a rate limit's name has 1 to 64 characters, a letter first, then letters, digits, '-', '_' or '.'"
    )]
    Name,
}

impl RateLimit {
    /// `limit` units per `window` (whole seconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::limit::RateLimit;
    /// let limit = RateLimit::per(100, Duration::from_secs(60)).unwrap();
    /// assert_eq!((limit.limit(), limit.window()), (100, Duration::from_secs(60)));
    /// assert!(RateLimit::per(0, Duration::from_secs(60)).is_err());
    /// assert!(RateLimit::per(1, Duration::from_millis(1500)).is_err());
    /// ```
    pub fn per(limit: u32, window: Duration) -> Result<Self, InvalidLimit> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(InvalidLimit::Limit);
        }
        if window < Duration::from_secs(1) || window > MAX_WINDOW || window.subsec_nanos() != 0 {
            return Err(InvalidLimit::Window);
        }
        Ok(Self {
            limit,
            window,
            name: None,
            per: CountedPer::Key,
        })
    }

    /// Counts the limit for every key of the owner's workspace or
    /// organization instead of the key alone (see [`CountedPer`]).
    pub fn counted_per(mut self, per: CountedPer) -> Self {
        self.per = per;
        self
    }

    /// Whose requests the limit counts.
    pub fn counted_for(&self) -> CountedPer {
        self.per
    }

    /// The name the `RateLimit` response fields give the limit: its own,
    /// or `default` for a key's, `workspace` or `organization` for a shared
    /// one.
    pub(crate) fn field_name(&self) -> &str {
        match (&self.name, self.per) {
            (Some(name), _) => name,
            (None, CountedPer::Key) => "default",
            (None, per) => per.as_str(),
        }
    }

    /// Names the limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::limit::RateLimit;
    /// let burst = RateLimit::per(10, Duration::from_secs(1)).unwrap().named("burst").unwrap();
    /// assert_eq!(burst.name(), Some("burst"));
    /// ```
    pub fn named(mut self, name: &str) -> Result<Self, InvalidLimit> {
        // A structured-field token (RFC 8941 §3.3.4), as the `RateLimit`
        // response fields name it.
        let valid = name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(InvalidLimit::Name);
        }
        self.name = Some(name.into());
        Ok(self)
    }

    /// Units allowed per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The limit's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RateLimit");
        debug
            .field("limit", &self.limit)
            .field("window", &self.window);
        if let Some(name) = &self.name {
            debug.field("name", name);
        }
        if self.per != CountedPer::Key {
            debug.field("per", &self.per);
        }
        debug.finish()
    }
}

/// What a counter counts: one key's requests, every key of one owner, or
/// anything an application names.
///
/// ```
/// use tower_keyauth::ids::KeyId;
/// use tower_keyauth::limit::CounterId;
/// assert_eq!(CounterId::key(&KeyId::new("k1")).to_string(), "key:k1");
/// assert_eq!(CounterId::from("login:alice").to_string(), "login:alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterId(CounterIdRepr);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CounterIdRepr {
    Key(KeyId),
    Org(OrgId),
    Workspace(OrgId, WorkspaceId),
    User(UserId),
    Named(Arc<str>),
}

impl CounterId {
    /// The requests of one key.
    pub fn key(id: &KeyId) -> Self {
        Self(CounterIdRepr::Key(id.clone()))
    }

    /// The requests of every key of an organization.
    pub fn org(org: &OrgId) -> Self {
        Self(CounterIdRepr::Org(org.clone()))
    }

    /// The requests of every key of a workspace.
    pub fn workspace(org: &OrgId, workspace: &WorkspaceId) -> Self {
        Self(CounterIdRepr::Workspace(org.clone(), workspace.clone()))
    }

    /// The requests of every personal token of a user.
    pub fn user(user: &UserId) -> Self {
        Self(CounterIdRepr::User(user.clone()))
    }

    /// Bytes of the name ([`fmt::Display`]), bounded by
    /// [`MAX_COUNTER_ID_LEN`] for a charge to be valid.
    fn fits(&self) -> bool {
        match &self.0 {
            CounterIdRepr::Named(name) => !name.is_empty() && name.len() <= MAX_COUNTER_ID_LEN,
            // Ids are bounded where they are parsed or minted.
            _ => true,
        }
    }
}

impl fmt::Display for CounterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            CounterIdRepr::Key(id) => write!(f, "key:{id}"),
            CounterIdRepr::Org(org) => write!(f, "org:{org}"),
            CounterIdRepr::Workspace(org, workspace) => write!(f, "workspace:{org}/{workspace}"),
            CounterIdRepr::User(user) => write!(f, "user:{user}"),
            CounterIdRepr::Named(name) => f.write_str(name),
        }
    }
}

impl From<&str> for CounterId {
    fn from(name: &str) -> Self {
        Self(CounterIdRepr::Named(name.into()))
    }
}

impl From<String> for CounterId {
    fn from(name: String) -> Self {
        Self(CounterIdRepr::Named(name.into()))
    }
}

/// One counter to charge: what it counts, in which window, and the limit
/// this charge holds it to.
///
/// A counter *is* its id and window: two charges naming the same id and
/// window draw on one count, whatever limits they name, and each is
/// admitted while that count leaves room under its own limit. So keys of
/// one organization sharing a limit per organization share one count even
/// when one of them was issued a lower limit (it is refused sooner; it
/// never gets a count of its own). Equality and hashing follow the
/// identity, not the limit. Its [`Display`](fmt::Display) form,
/// `<id>:<window seconds>` (`key:k1:60`), names it in a shared limiter such
/// as Redis.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{Counter, RateLimit};
/// let minute = |n| RateLimit::per(n, Duration::from_secs(60)).unwrap();
/// assert_eq!(Counter::new("org:acme", &minute(6000)), Counter::new("org:acme", &minute(10)));
/// assert_eq!(Counter::new("org:acme", &minute(6000)).to_string(), "org:acme:60");
/// ```
#[derive(Debug, Clone)]
pub struct Counter {
    /// What the counter counts.
    pub id: CounterId,
    /// Units allowed per window.
    pub limit: u32,
    /// The window's length.
    pub window: Duration,
}

impl Counter {
    /// A counter of `id` under `limit`.
    pub fn new(id: impl Into<CounterId>, limit: &RateLimit) -> Self {
        Self {
            id: id.into(),
            limit: limit.limit,
            window: limit.window,
        }
    }
}

impl PartialEq for Counter {
    /// The same count: the same id and window (whatever the limits).
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.window == other.window
    }
}

impl Eq for Counter {}

impl std::hash::Hash for Counter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.window.hash(state);
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.id, self.window.as_secs())
    }
}

/// What a counter holds after a charge: for the `RateLimit` response
/// fields and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterState {
    /// Which of the charged counters this is (its index).
    pub counter: usize,
    /// Units left in the current window.
    pub remaining: u32,
    /// Until the current window closes.
    pub resets_in: Duration,
}

/// The answer of [`RateLimiter::charge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Every counter was charged. The state is the tightest counter's: the
    /// fewest units left (the soonest reset among equals).
    Admitted(CounterState),
    /// No counter was charged: this counter lacks the units until
    /// `resets_in` (the `Retry-After`). With several refusing, the one
    /// that frees up last.
    Limited(CounterState),
}

/// A rate limiter that failed: the layer then refuses with 503 (unless the
/// application chose to let limits fail open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// The backend failed (connection lost, script error, …).
    #[error("the rate limiter failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
    /// The limiter holds as many counters as it may and none has expired.
    #[error("the rate limiter is full")]
    Full,
    /// The counters asked for are not valid (too many, an id too long, a
    /// zero cost).
    #[error("the rate limiter was asked to charge invalid counters")]
    Invalid,
}

impl LimiterError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }
}

/// Counts requests against [`Counter`]s, exactly: at most `limit` units are
/// admitted per window of each counter, however many callers charge it at
/// once.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Charges `cost` units to every counter, or to none of them.
    ///
    /// At most [`MAX_COUNTERS`] distinct counters, each id at most 256
    /// bytes and each limit and window within a [`RateLimit`]'s bounds, and
    /// a cost of at least 1; otherwise [`LimiterError::Invalid`]. A cost
    /// above a counter's limit is always refused, with the window's length
    /// as `resets_in`.
    async fn charge(&self, counters: &[Counter], cost: u32) -> Result<Charge, LimiterError>;

    /// Charges at once, without waiting, when the limiter can (an
    /// in-process one); `None` sends the layer to [`charge`](Self::charge).
    fn charge_now(&self, counters: &[Counter], cost: u32) -> Option<Result<Charge, LimiterError>> {
        let _ = (counters, cost);
        None
    }

    /// Gives back `cost` units that an admitted [`charge`](Self::charge) of
    /// the same `counters` took at most `charged_ago` ago, because the
    /// request was refused after all (its key's credits were spent): the
    /// layer calls it so that a refused request counts against no limit.
    ///
    /// Only the window the charge fell in gets the units back. A counter
    /// whose window has closed since is left alone (its units went with
    /// it), and so is one whose current window opened less than
    /// `charged_ago` plus [`REFUND_MARGIN`] ago: it may be a later window,
    /// which must never be given units it did not count. That includes the
    /// window the refused request opened itself (the first of its window):
    /// such a request stays counted, which can refuse one request early in
    /// that window but never admits one too many.
    ///
    /// The default gives nothing back: a limiter without refunds counts
    /// such requests as if they had been admitted.
    async fn refund(
        &self,
        counters: &[Counter],
        cost: u32,
        charged_ago: Duration,
    ) -> Result<(), LimiterError> {
        let _ = (counters, cost, charged_ago);
        Ok(())
    }
}

/// How much older than its charge a window must be for a
/// [refund](RateLimiter::refund) to reach it: clocks read coarsely (a few
/// milliseconds) and round trips vary, and a refund that reached a later
/// window would let it admit more than its limit.
pub const REFUND_MARGIN: Duration = Duration::from_millis(20);

#[async_trait]
impl<L: RateLimiter + ?Sized> RateLimiter for Arc<L> {
    async fn charge(&self, counters: &[Counter], cost: u32) -> Result<Charge, LimiterError> {
        (**self).charge(counters, cost).await
    }

    fn charge_now(&self, counters: &[Counter], cost: u32) -> Option<Result<Charge, LimiterError>> {
        (**self).charge_now(counters, cost)
    }

    async fn refund(
        &self,
        counters: &[Counter],
        cost: u32,
        charged_ago: Duration,
    ) -> Result<(), LimiterError> {
        (**self).refund(counters, cost, charged_ago).await
    }
}

/// The longest counter id, in bytes.
pub const MAX_COUNTER_ID_LEN: usize = 256;

/// Whether a charge is well formed (see [`RateLimiter::charge`]): a cost,
/// 1 to [`MAX_COUNTERS`] distinct counters, each within the bounds a
/// [`RateLimit`] has (counters' fields are public, so a hand-built one is
/// checked here).
pub(crate) fn valid_charge(counters: &[Counter], cost: u32) -> bool {
    let each_valid = counters.iter().all(|c| {
        c.id.fits()
            && (1..=MAX_LIMIT).contains(&c.limit)
            && c.window >= Duration::from_secs(1)
            && c.window <= MAX_WINDOW
            && c.window.subsec_nanos() == 0
    });
    let distinct = counters
        .iter()
        .enumerate()
        .all(|(i, c)| counters[..i].iter().all(|earlier| earlier != c));
    cost >= 1 && !counters.is_empty() && counters.len() <= MAX_COUNTERS && each_valid && distinct
}

/// The tightest of the admitted counters' states: fewest left, then
/// soonest reset.
pub(crate) fn tightest(states: impl Iterator<Item = CounterState>) -> Option<CounterState> {
    states.min_by_key(|s| (s.remaining, s.resets_in))
}
