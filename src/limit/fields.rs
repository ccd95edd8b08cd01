//! The `RateLimit-Policy` and `RateLimit` response fields of
//! draft-ietf-httpapi-ratelimit-headers, for the tightest limit of a
//! charged request.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};

use super::{CounterState, RateLimit};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` and `RateLimit` fields of a charged request, for
/// its tightest limit. Boxed: it rides in every admitted request's check.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LimitFields(Box<[HeaderValue; 2]>);

impl LimitFields {
    /// The fields of `limit` (whose `RateLimit-Policy` field is `policy`,
    /// written once) in `state`.
    pub(crate) fn of(limit: &RateLimit, policy: &HeaderValue, state: &CounterState) -> Self {
        use std::io::Write;
        let name = limit.field_name();
        // A name of at most 64 bytes and two numbers: always fits.
        let mut buffer = [0u8; 128];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        let written = write!(
            cursor,
            "{name};r={};t={}",
            state.remaining,
            whole_seconds_up(state.resets_in)
        );
        let end = usize::try_from(cursor.position()).unwrap_or(0);
        debug_assert!(written.is_ok());
        let current = HeaderValue::from_bytes(&buffer[..end]).expect("a token and digits");
        Self(Box::new([policy.clone(), current]))
    }

    /// Adds the fields to `response`.
    pub(crate) fn stamp<B>(&self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY.clone(), self.0[0].clone());
        headers.insert(RATELIMIT.clone(), self.0[1].clone());
    }
}

/// `limit`'s `RateLimit-Policy` field: `<name>;q=<limit>;w=<seconds>`.
pub(crate) fn policy_field(limit: &RateLimit) -> HeaderValue {
    let name = limit.field_name();
    let text = format!("{name};q={};w={}", limit.limit(), limit.window().as_secs());
    // Names are tokens and the rest digits: always a valid value.
    HeaderValue::from_maybe_shared(Bytes::from(text)).expect("a token and digits")
}

impl std::fmt::Debug for LimitFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LimitFields").field(&self.0[1]).finish()
    }
}

/// Seconds, rounded up, as `Retry-After` and the `t` parameter count them.
pub(crate) fn whole_seconds_up(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}
