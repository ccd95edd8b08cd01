//! The `RateLimit-Policy` and `RateLimit` response fields of
//! draft-ietf-httpapi-ratelimit-headers, for the tightest limit of a
//! charged request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};

use super::{CounterState, RateLimit};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The `RateLimit-Policy` and `RateLimit` fields of a charged request, for
/// its tightest limit.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LimitFields(Arc<[HeaderValue; 2]>);

impl LimitFields {
    pub(crate) fn of(limit: &RateLimit, state: &CounterState) -> Self {
        let name = limit.name().unwrap_or("default");
        let policy = format!("{name};q={};w={}", limit.limit(), limit.window().as_secs());
        let current = format!(
            "{name};r={};t={}",
            state.remaining,
            whole_seconds_up(state.resets_in)
        );
        Self(Arc::new([header_value(policy), header_value(current)]))
    }

    /// Adds the fields to `response`.
    pub(crate) fn stamp<B>(&self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY.clone(), self.0[0].clone());
        headers.insert(RATELIMIT.clone(), self.0[1].clone());
    }
}

impl std::fmt::Debug for LimitFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LimitFields").field(&self.0[1]).finish()
    }
}

fn header_value(text: String) -> HeaderValue {
    // Names are tokens and the rest digits: always a valid value.
    HeaderValue::from_maybe_shared(Bytes::from(text)).expect("a token and digits")
}

/// Seconds, rounded up, as `Retry-After` and the `t` parameter count them.
pub(crate) fn whole_seconds_up(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}
