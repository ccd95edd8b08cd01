//! [`UsageLimits`]: what a key may use, kept with the key.

use std::fmt;

use crate::limit::RateLimit;

/// The most rate limits one key may have.
pub const MAX_RATE_LIMITS: usize = 4;

/// What a key may use, kept with the key
/// ([`KeyRecord::limits`](crate::store::KeyRecord::limits)): its rate
/// limits.
///
/// The layer enforces them after authenticating the key: the rate limits
/// are charged all or nothing, and a request refused by one charges none
/// (429 `rate_limited` with `Retry-After`). An admitted response of a key
/// with limits carries the `RateLimit-Policy` and `RateLimit` fields of the
/// IETF httpapi draft for its tightest limit.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{RateLimit, UsageLimits};
///
/// let limits = UsageLimits::new()
///     .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
///     .unwrap();
/// assert_eq!(limits.rate_limits().len(), 1);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UsageLimits {
    rate_limits: Vec<RateLimit>,
}

/// Why [`UsageLimits`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLimits {
    /// More than [`MAX_RATE_LIMITS`] rate limits.
    #[error("a key has at most 4 rate limits")]
    TooManyRateLimits,
    /// Two rate limits with the same name, or with the same window.
    #[error("a key's rate limits need distinct names and distinct windows")]
    DuplicateRateLimit,
}

impl UsageLimits {
    /// Limits that limit nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rate limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::limit::RateLimit;
    /// use tower_keyauth::limit::UsageLimits;
    /// let per_minute = RateLimit::per(100, Duration::from_secs(60)).unwrap();
    /// let limits = UsageLimits::new().rate_limit(per_minute.clone()).unwrap();
    /// assert!(limits.rate_limit(per_minute).is_err());
    /// ```
    pub fn rate_limit(mut self, limit: RateLimit) -> Result<Self, InvalidLimits> {
        if self.rate_limits.len() >= MAX_RATE_LIMITS {
            return Err(InvalidLimits::TooManyRateLimits);
        }
        let clashes = self.rate_limits.iter().any(|held| {
            held.window() == limit.window()
                || (held.name().is_some() && held.name() == limit.name())
        });
        if clashes {
            return Err(InvalidLimits::DuplicateRateLimit);
        }
        self.rate_limits.push(limit);
        Ok(self)
    }

    /// The key's rate limits.
    pub fn rate_limits(&self) -> &[RateLimit] {
        &self.rate_limits
    }

    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty()
    }

    /// Heap bytes held, for the cache's accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.rate_limits.capacity() * std::mem::size_of::<RateLimit>()
            + self
                .rate_limits
                .iter()
                .map(|limit| limit.name().map_or(0, str::len))
                .sum::<usize>()
    }
}

impl fmt::Debug for UsageLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageLimits")
            .field("rate_limits", &self.rate_limits)
            .finish()
    }
}
