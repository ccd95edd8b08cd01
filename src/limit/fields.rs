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
        // `<name>;r=<remaining>;t=<seconds>`: a name of at most 64 bytes
        // and two numbers of at most 20 digits always fit. Written by hand:
        // `fmt` machinery cost more than the rest of the field together.
        let mut buffer = [0u8; 128];
        let mut end = 0;
        for piece in [
            limit.field_name().as_bytes(),
            b";r=",
            digits(u64::from(state.remaining), &mut [0; 20]),
            b";t=",
            digits(whole_seconds_up(state.resets_in), &mut [0; 20]),
        ] {
            buffer[end..end + piece.len()].copy_from_slice(piece);
            end += piece.len();
        }
        let current = HeaderValue::from_bytes(&buffer[..end]).expect("a token and digits");
        Self(Box::new([policy.clone(), current]))
    }

    /// Adds the fields to `response`. Taken by value: a field built for
    /// this response moves into it, where a copy would share its bytes at
    /// the cost of an allocation.
    pub(crate) fn stamp<B>(self, response: &mut Response<B>) {
        let [policy, current] = *self.0;
        let headers = response.headers_mut();
        headers.insert(RATELIMIT_POLICY.clone(), policy);
        headers.insert(RATELIMIT.clone(), current);
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

/// `n` in decimal, written at the end of `scratch`.
fn digits(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut start = scratch.len();
    loop {
        start -= 1;
        scratch[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &scratch[start..];
        }
    }
}

/// Seconds, rounded up, as `Retry-After` and the `t` parameter count them.
pub(crate) fn whole_seconds_up(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 4_294_967_295, u64::MAX] {
            assert_eq!(digits(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_current_field_names_the_limit_and_its_state() {
        let limit = RateLimit::per(100, Duration::from_secs(60))
            .unwrap()
            .named("minute")
            .unwrap();
        let state = CounterState {
            counter: 0,
            remaining: 42,
            resets_in: Duration::from_millis(1_500),
        };
        let fields = LimitFields::of(&limit, &policy_field(&limit), &state);
        assert_eq!(fields.0[0], "minute;q=100;w=60");
        assert_eq!(fields.0[1], "minute;r=42;t=2");
    }
}
