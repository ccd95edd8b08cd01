//! [`UsageLimits`]: what a key may use, kept with the key, and its
//! [`RateLimits`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderValue;

use crate::client_addr::IpAllowlist;
use crate::ids::KeyId;
use crate::limit::fields::policy_field;
use crate::limit::{CountedPer, InvalidLimit, RateLimit};

/// The most rate limits one key may have.
pub const MAX_RATE_LIMITS: usize = 4;

/// A key's rate limits: at most [`MAX_RATE_LIMITS`], with distinct
/// windows and distinct names, part of its [`UsageLimits`].
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{RateLimit, RateLimits};
///
/// let limits = RateLimits::new()
///     .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
///     .unwrap();
/// assert_eq!(limits.as_slice().len(), 1);
/// ```
///
/// # Text form
///
/// Limits are written ([`Display`](fmt::Display)) and read back
/// ([`FromStr`]) as comma-separated items in the manner of the IETF
/// `RateLimit-Policy` field: `q=<limit>;w=<window seconds>` for an unnamed
/// limit, `<name>;q=<limit>;w=<window seconds>` for a named one, followed
/// by `;per=workspace` or `;per=organization` for a shared one. The empty
/// text is no limits. Reading refuses more than
/// [`MAX_TEXT_LEN`](Self::MAX_TEXT_LEN) bytes before looking further, and
/// checks every bound that [`RateLimit::per`], [`RateLimit::named`] and
/// [`rate_limit`](Self::rate_limit) check, so a value read is always one
/// that could have been built.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{InvalidLimits, RateLimit, RateLimits};
///
/// let limits = RateLimits::new()
///     .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
///     .unwrap()
///     .rate_limit(RateLimit::per(10, Duration::from_secs(1)).unwrap().named("burst").unwrap())
///     .unwrap();
/// let text = limits.to_string();
/// assert_eq!(text, "q=100;w=60, burst;q=10;w=1");
/// assert_eq!(text.parse::<RateLimits>().unwrap(), limits);
/// assert!("".parse::<RateLimits>().unwrap().is_empty());
/// assert_eq!("q=100".parse::<RateLimits>(), Err(InvalidLimits::Syntax));
/// assert!("q=0;w=60".parse::<RateLimits>().is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    rate_limits: Vec<RateLimit>,
    /// Each limit's `RateLimit-Policy` field, written once: the layer sends
    /// it with every admitted response.
    policy_fields: Vec<HeaderValue>,
}

/// Why [`RateLimits`] or [`UsageLimits`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidLimits {
    /// More than [`MAX_RATE_LIMITS`] rate limits.
    #[error("a key has at most 4 rate limits")]
    TooManyRateLimits,
    /// Two rate limits with the same name, or with the same window counted
    /// for the same (key, workspace or organization).
    #[error(
        "a key's rate limits need distinct names, and distinct windows among those counted per key, per workspace or per organization"
    )]
    DuplicateRateLimit,
    /// A text form longer than [`RateLimits::MAX_TEXT_LEN`] bytes.
    #[error("rate limits are written in at most {max} bytes, not {len}", max = RateLimits::MAX_TEXT_LEN)]
    TooLong {
        /// The length of the text, in bytes.
        len: usize,
    },
    /// A text form that is not comma-separated `[name;]q=N;w=S` items.
    #[error(
        "rate limits are written as comma-separated items `q=<limit>;w=<seconds>` or `<name>;q=<limit>;w=<seconds>`"
    )]
    Syntax,
    /// Credits or a refill amount above [`MAX_CREDITS`], or a refill of
    /// none.
    #[error("credits are a whole number from 0 to 10^15 (a refill's at least 1)")]
    Credits,
    /// A refill interval that is not whole seconds from 1 s to a year and a
    /// day.
    #[error("a refill's interval is a whole number of seconds, from 1 to 31622400")]
    RefillInterval,
    /// A rate limit out of its bounds (see [`RateLimit::per`] and
    /// [`RateLimit::named`]).
    #[error(transparent)]
    RateLimit(#[from] InvalidLimit),
}

impl RateLimits {
    /// The `RateLimit-Policy` field of the limit at `index`.
    pub(crate) fn policy_field(&self, index: usize) -> Option<&HeaderValue> {
        self.policy_fields.get(index)
    }

    /// The longest [text form](Self#text-form), in bytes: more than the
    /// longest valid limits take (4 limits with 64-byte names, the largest
    /// limits and windows, shared per organization: 426 bytes), so that spacing around items still
    /// fits.
    pub const MAX_TEXT_LEN: usize = 512;

    /// No rate limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rate limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::limit::RateLimit;
    /// use tower_keyauth::limit::RateLimits;
    /// let per_minute = RateLimit::per(100, Duration::from_secs(60)).unwrap();
    /// let limits = RateLimits::new().rate_limit(per_minute.clone()).unwrap();
    /// assert!(limits.rate_limit(per_minute).is_err());
    /// ```
    pub fn rate_limit(mut self, limit: RateLimit) -> Result<Self, InvalidLimits> {
        if self.rate_limits.len() >= MAX_RATE_LIMITS {
            return Err(InvalidLimits::TooManyRateLimits);
        }
        let clashes = self.rate_limits.iter().any(|held| {
            (held.window() == limit.window() && held.counted_for() == limit.counted_for())
                || (held.name().is_some() && held.name() == limit.name())
        });
        if clashes {
            return Err(InvalidLimits::DuplicateRateLimit);
        }
        self.policy_fields.push(policy_field(&limit));
        self.rate_limits.push(limit);
        Ok(self)
    }

    /// The rate limits, in the order they were added.
    pub fn as_slice(&self) -> &[RateLimit] {
        &self.rate_limits
    }

    /// Whether there is none.
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
            + self
                .policy_fields
                .iter()
                .map(|field| std::mem::size_of::<HeaderValue>() + field.len())
                .sum::<usize>()
    }
}

/// The text form: `q=100;w=60, burst;q=10;w=1` (see
/// [`RateLimits`](RateLimits#text-form)).
impl fmt::Display for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, limit) in self.rate_limits.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if let Some(name) = limit.name() {
                write!(f, "{name};")?;
            }
            write!(f, "q={};w={}", limit.limit(), limit.window().as_secs())?;
            if limit.counted_for() != CountedPer::Key {
                write!(f, ";per={}", limit.counted_for())?;
            }
        }
        Ok(())
    }
}

/// Reads the text form back (see [`RateLimits`](RateLimits#text-form)).
impl FromStr for RateLimits {
    type Err = InvalidLimits;

    fn from_str(text: &str) -> Result<Self, InvalidLimits> {
        if text.len() > Self::MAX_TEXT_LEN {
            return Err(InvalidLimits::TooLong { len: text.len() });
        }
        let text = trim_spaces(text);
        if text.is_empty() {
            return Ok(Self::new());
        }
        // `rate_limit` refuses a fifth limit, so at most five items are
        // read, whatever the text holds.
        text.split(',').try_fold(Self::new(), |limits, item| {
            limits.rate_limit(rate_limit_from_item(trim_spaces(item))?)
        })
    }
}

/// One item of the text form: `[name;]q=N;w=S`, parameters in any order,
/// each once.
fn rate_limit_from_item(item: &str) -> Result<RateLimit, InvalidLimits> {
    let mut pieces = item.split(';').map(trim_spaces).peekable();
    let name = pieces.next_if(|piece| !piece.contains('='));
    let (mut limit, mut window, mut per) = (None, None, None);
    for piece in pieces {
        let (key, value) = piece.split_once('=').ok_or(InvalidLimits::Syntax)?;
        let slot = match key {
            "q" => &mut limit,
            "w" => &mut window,
            "per" => {
                let counted: CountedPer = value.parse().map_err(|_| InvalidLimits::Syntax)?;
                if per.replace(counted).is_some() {
                    return Err(InvalidLimits::Syntax);
                }
                continue;
            }
            _ => return Err(InvalidLimits::Syntax),
        };
        if slot.replace(integer(value)?).is_some() {
            return Err(InvalidLimits::Syntax);
        }
    }
    let (Some(limit), Some(window)) = (limit, window) else {
        return Err(InvalidLimits::Syntax);
    };
    let limit = u32::try_from(limit).map_err(|_| InvalidLimit::Limit)?;
    let rate_limit =
        RateLimit::per(limit, Duration::from_secs(window))?.counted_per(per.unwrap_or_default());
    Ok(match name {
        Some(name) => rate_limit.named(name)?,
        None => rate_limit,
    })
}

/// A structured-field integer (RFC 8941 §3.3.1) that is not negative: 1
/// to 15 digits.
fn integer(text: &str) -> Result<u64, InvalidLimits> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidLimits::Syntax);
    }
    text.parse().map_err(|_| InvalidLimits::Syntax)
}

/// `text` without the spaces and tabs around it (HTTP's optional
/// whitespace).
fn trim_spaces(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.rate_limits).finish()
    }
}

/// What a key may use, kept with the key
/// ([`KeyRecord::limits`](crate::store::KeyRecord::limits)): its
/// [rate limits](RateLimits), its [credits](Credits) and the
/// [addresses](IpAllowlist) it may be used from.
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
    rate_limits: RateLimits,
    credits: Option<Credits>,
    allowed_ips: Option<IpAllowlist>,
    lineage: Option<KeyId>,
}

/// The most credits a key may hold, or a refill may give: what a signed
/// 64-bit column keeps with room to spare.
pub const MAX_CREDITS: u64 = 1_000_000_000_000_000;

/// A key's usage credits: `remaining` units, spent by each admitted request
/// (its cost, 1 unless the layer's `request_cost` says otherwise), refused
/// with 429 `quota_exhausted` when too few are left. With a [`Refill`], the
/// remaining credits are set back to its amount every interval, counted from
/// when the key was issued.
///
/// The store of record keeps the remaining credits and spends them
/// atomically ([`KeyStore::spend_credits`](crate::KeyStore::spend_credits)):
/// the value here is what the key was issued with, or what a store read.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::limit::{Credits, Refill};
/// let monthly = Credits::new(10_000)
///     .unwrap()
///     .refill(Refill::every(10_000, Duration::from_secs(30 * 86_400)).unwrap());
/// assert_eq!(monthly.remaining(), 10_000);
/// assert!(Credits::new(tower_keyauth::limit::MAX_CREDITS + 1).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    remaining: u64,
    refill: Option<Refill>,
}

/// Sets a key's credits back to `amount` every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    amount: u64,
    interval: Duration,
}

impl Credits {
    /// `remaining` credits (at most [`MAX_CREDITS`]), no refill.
    pub fn new(remaining: u64) -> Result<Self, InvalidLimits> {
        if remaining > MAX_CREDITS {
            return Err(InvalidLimits::Credits);
        }
        Ok(Self {
            remaining,
            refill: None,
        })
    }

    /// Refills them.
    pub fn refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }

    /// Credits left.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The refill, if any.
    pub fn refill_policy(&self) -> Option<Refill> {
        self.refill
    }

    /// The same credits with `remaining` left (as a store read them).
    pub fn with_remaining(mut self, remaining: u64) -> Self {
        self.remaining = remaining.min(MAX_CREDITS);
        self
    }
}

impl Refill {
    /// `amount` credits (1 to [`MAX_CREDITS`]) every `interval` (whole
    /// seconds, 1 s to a year and a day).
    pub fn every(amount: u64, interval: Duration) -> Result<Self, InvalidLimits> {
        if amount == 0 || amount > MAX_CREDITS {
            return Err(InvalidLimits::Credits);
        }
        if interval < Duration::from_secs(1)
            || interval > crate::limit::MAX_WINDOW
            || interval.subsec_nanos() != 0
        {
            return Err(InvalidLimits::RefillInterval);
        }
        Ok(Self { amount, interval })
    }

    /// Credits each refill sets.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Time between refills.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

impl UsageLimits {
    /// Limits that limit nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rate limit (see [`RateLimits::rate_limit`]).
    pub fn rate_limit(mut self, limit: RateLimit) -> Result<Self, InvalidLimits> {
        self.rate_limits = self.rate_limits.rate_limit(limit)?;
        Ok(self)
    }

    /// Sets the rate limits.
    pub fn with_rate_limits(mut self, rate_limits: RateLimits) -> Self {
        self.rate_limits = rate_limits;
        self
    }

    /// The key's rate limits.
    pub fn rate_limits(&self) -> &[RateLimit] {
        self.rate_limits.as_slice()
    }

    /// The rate limits as a whole (with their text form).
    pub fn rate_limit_set(&self) -> &RateLimits {
        &self.rate_limits
    }

    /// Gives the key credits.
    pub fn with_credits(mut self, credits: Credits) -> Self {
        self.credits = Some(credits);
        self
    }

    /// The key's credits, if it has any.
    pub fn credits(&self) -> Option<&Credits> {
        self.credits.as_ref()
    }

    /// Lets the key be used only from addresses in `allowlist` (403
    /// `forbidden` from any other, before anything is charged).
    pub fn with_allowed_ips(mut self, allowlist: IpAllowlist) -> Self {
        self.allowed_ips = Some(allowlist);
        self
    }

    /// The addresses the key may be used from, if it is restricted.
    pub fn allowed_ips(&self) -> Option<&IpAllowlist> {
        self.allowed_ips.as_ref()
    }

    /// The first key of the rotation chain these limits belong to: a
    /// rotated successor keeps its predecessor's limits *and their counts*,
    /// so the layer counts a key's own rate limits under this id (the key's
    /// own id when there is none). Rotation sets it; a store keeps it with
    /// the limits, so rotating a key neither resets its counts nor, during
    /// a grace period, doubles them.
    ///
    /// ```
    /// use tower_keyauth::ids::KeyId;
    /// use tower_keyauth::limit::UsageLimits;
    /// let first = UsageLimits::new();
    /// assert_eq!(first.lineage(), None);
    /// let successor = first.with_lineage(KeyId::new("Xb3kP9qLm2Ts"));
    /// assert_eq!(successor.lineage().map(KeyId::as_str), Some("Xb3kP9qLm2Ts"));
    /// ```
    pub fn lineage(&self) -> Option<&KeyId> {
        self.lineage.as_ref()
    }

    /// Counts these limits under `first_key`, the first key of a rotation
    /// chain (see [`lineage`](Self::lineage)).
    pub fn with_lineage(mut self, first_key: KeyId) -> Self {
        self.lineage = Some(first_key);
        self
    }

    /// The id the limits of key `id` are counted under: its
    /// [`lineage`](Self::lineage), or `id` itself.
    pub fn counted_as<'a>(&'a self, id: &'a KeyId) -> &'a KeyId {
        self.lineage.as_ref().unwrap_or(id)
    }

    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty() && self.credits.is_none() && self.allowed_ips.is_none()
    }

    /// Heap bytes held, for the cache's accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        // An allowlist is shared; its networks are counted at their bound.
        self.rate_limits.heap_bytes()
            + self.allowed_ips.as_ref().map_or(0, |list| list.len() * 40)
            + self.lineage.as_ref().map_or(0, KeyId::heap_bytes)
    }
}

impl fmt::Debug for UsageLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageLimits")
            .field("rate_limits", &self.rate_limits)
            .field("credits", &self.credits)
            .field("allowed_ips", &self.allowed_ips)
            .field("lineage", &self.lineage)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::limit::{MAX_LIMIT, MAX_NAME_LEN, MAX_WINDOW};

    fn limits(items: &[(u32, u64, Option<&str>)]) -> RateLimits {
        items
            .iter()
            .fold(RateLimits::new(), |limits, &(limit, window, name)| {
                let rate_limit = RateLimit::per(limit, Duration::from_secs(window)).unwrap();
                let rate_limit = match name {
                    Some(name) => rate_limit.named(name).unwrap(),
                    None => rate_limit,
                };
                limits.rate_limit(rate_limit).unwrap()
            })
    }

    #[test]
    fn limits_are_written_like_a_ratelimit_policy() {
        assert_eq!(RateLimits::new().to_string(), "");
        assert_eq!(limits(&[(100, 60, None)]).to_string(), "q=100;w=60");
        assert_eq!(
            limits(&[(100, 60, None), (10, 1, Some("burst"))]).to_string(),
            "q=100;w=60, burst;q=10;w=1"
        );
    }

    #[test]
    fn spacing_and_parameter_order_are_free() {
        let expected = limits(&[(100, 60, None), (10, 1, Some("burst"))]);
        for text in [
            "q=100;w=60, burst;q=10;w=1",
            "q=100;w=60,burst;q=10;w=1",
            " \tw=60; q=100 ,\tburst ; w=1;q=10 ",
            "q=0100;w=060, burst;q=10;w=1",
        ] {
            assert_eq!(text.parse::<RateLimits>(), Ok(expected.clone()), "{text:?}");
        }
        assert_eq!(" \t ".parse::<RateLimits>(), Ok(RateLimits::new()));
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            ",",
            "q=100;w=60,",
            ",q=100;w=60",
            "q=100;w=60,,q=1;w=1",
            "q=100",
            "w=60",
            "burst",
            "burst;",
            "q=100;w=60;q=100",
            "q=100;w=60;w=60",
            "q=100;w=60;pk=:abc:",
            "q=100;q2=5;w=60",
            "q=-1;w=60",
            "q=+1;w=60",
            "q=1.5;w=60",
            "q=;w=60",
            "q=1;w=1s",
            "q=1;w=1000000000000000",
            "q=1;burst;w=1",
            "a;b;q=1;w=1",
            "q=1\n;w=1",
            "q = 1;w=1",
        ] {
            assert_eq!(
                text.parse::<RateLimits>(),
                Err(InvalidLimits::Syntax),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bounds_are_checked_as_when_built() {
        let refused = |text: &str| text.parse::<RateLimits>().unwrap_err();
        assert_eq!(
            refused("q=0;w=60"),
            InvalidLimits::RateLimit(InvalidLimit::Limit)
        );
        assert_eq!(
            refused("q=1000000001;w=60"),
            InvalidLimits::RateLimit(InvalidLimit::Limit)
        );
        assert_eq!(
            refused("q=99999999999;w=60"),
            InvalidLimits::RateLimit(InvalidLimit::Limit)
        );
        assert_eq!(
            refused("q=1;w=0"),
            InvalidLimits::RateLimit(InvalidLimit::Window)
        );
        assert_eq!(
            refused(&format!("q=1;w={}", MAX_WINDOW.as_secs() + 1)),
            InvalidLimits::RateLimit(InvalidLimit::Window)
        );
        for name in [
            "1a",
            "-a",
            "a b",
            "caf\u{e9}",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                refused(&format!("{name};q=1;w=1")),
                InvalidLimits::RateLimit(InvalidLimit::Name),
                "{name:?}"
            );
        }
        assert_eq!(
            refused("q=1;w=1, q=2;w=1"),
            InvalidLimits::DuplicateRateLimit
        );
        assert_eq!(
            refused("a;q=1;w=1, a;q=2;w=2"),
            InvalidLimits::DuplicateRateLimit
        );
        assert_eq!(
            refused("q=1;w=1, q=1;w=2, q=1;w=3, q=1;w=4, q=1;w=5"),
            InvalidLimits::TooManyRateLimits
        );
        let limit = format!("q={MAX_LIMIT};w={}", MAX_WINDOW.as_secs());
        assert!(limit.parse::<RateLimits>().is_ok());
    }

    #[test]
    fn the_longest_limits_fit_the_text_bound() {
        let name = |c: char| format!("{c}{}", "x".repeat(MAX_NAME_LEN - 1));
        let longest = (0..4).fold(RateLimits::new(), |limits, i| {
            let window = MAX_WINDOW - Duration::from_secs(i);
            let limit = RateLimit::per(MAX_LIMIT, window)
                .unwrap()
                .named(&name(char::from(b'a' + i as u8)))
                .unwrap()
                .counted_per(CountedPer::Organization);
            limits.rate_limit(limit).unwrap()
        });
        let text = longest.to_string();
        assert_eq!(text.len(), 426);
        assert!(text.len() <= RateLimits::MAX_TEXT_LEN);
        assert_eq!(text.parse::<RateLimits>(), Ok(longest));
    }

    #[test]
    fn overlong_text_is_refused_before_it_is_read() {
        let spaced = format!("{}q=1;w=1", " ".repeat(RateLimits::MAX_TEXT_LEN - 6));
        assert_eq!(spaced.len(), RateLimits::MAX_TEXT_LEN + 1);
        assert_eq!(
            spaced.parse::<RateLimits>(),
            Err(InvalidLimits::TooLong {
                len: RateLimits::MAX_TEXT_LEN + 1
            })
        );
        assert!(spaced[1..].parse::<RateLimits>().is_ok());
    }

    /// Any limits [`RateLimits::rate_limit`] accepts: up to four, some
    /// named, the clashing ones dropped.
    fn any_limits() -> impl Strategy<Value = RateLimits> {
        let one = (
            1..=MAX_LIMIT,
            prop_oneof![1..=120u64, 1..=MAX_WINDOW.as_secs()],
            proptest::option::of("[A-Za-z][A-Za-z0-9._-]{0,63}"),
            prop_oneof![
                Just(CountedPer::Key),
                Just(CountedPer::Workspace),
                Just(CountedPer::Organization)
            ],
        );
        proptest::collection::vec(one, 0..=6).prop_map(|items| {
            items
                .into_iter()
                .fold(RateLimits::new(), |limits, (limit, window, name, per)| {
                    let rate_limit = RateLimit::per(limit, Duration::from_secs(window))
                        .unwrap()
                        .counted_per(per);
                    let rate_limit = match name {
                        Some(name) => rate_limit.named(&name).unwrap(),
                        None => rate_limit,
                    };
                    limits.clone().rate_limit(rate_limit).unwrap_or(limits)
                })
        })
    }

    /// Text that looks like the text form, to get past its first checks.
    fn limits_shaped_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z]{0,3}",
            "[qw]=[0-9]{0,17}",
            "per=(key|workspace|organization|org|)",
            "[qw]=[-+0-9. ]{0,4}",
            "[A-Za-z][A-Za-z0-9._-]{0,70}",
        ];
        let item = proptest::collection::vec(piece, 0..5).prop_map(|pieces| pieces.join(";"));
        proptest::collection::vec(item, 0..7).prop_map(|items| items.join(", "))
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            // CI runs on clean clones: nothing to persist between runs.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn limits_read_back_as_written(limits in any_limits()) {
            let text = limits.to_string();
            prop_assert!(text.len() <= RateLimits::MAX_TEXT_LEN);
            prop_assert_eq!(text.parse::<RateLimits>(), Ok(limits));
        }

        #[test]
        fn any_text_reads_without_panic(text in any::<String>()) {
            let _ = text.parse::<RateLimits>();
        }

        #[test]
        fn limits_shaped_text_reads_as_valid_limits_or_not_at_all(text in limits_shaped_text()) {
            if let Ok(limits) = text.parse::<RateLimits>() {
                // Whatever is read satisfies every bound: it could be built
                // again, limit by limit.
                let rebuilt = limits
                    .as_slice()
                    .iter()
                    .try_fold(RateLimits::new(), |built, limit| {
                        let again = RateLimit::per(limit.limit(), limit.window())?
                            .counted_per(limit.counted_for());
                        let again = match limit.name() {
                            Some(name) => again.named(name)?,
                            None => again,
                        };
                        built.rate_limit(again)
                    });
                prop_assert_eq!(rebuilt, Ok(limits.clone()));
                prop_assert_eq!(limits.to_string().parse::<RateLimits>(), Ok(limits));
            }
        }
    }
}
