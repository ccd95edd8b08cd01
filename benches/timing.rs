//! Timing: does refusing a key reveal anything? Compares, in one run:
//!
//! * the layer refusing an unknown id and refusing a wrong secret for a
//!   known id (the dummy compare is meant to make these cost the same);
//! * the layer refusing secrets that differ from the stored one in their
//!   first and in their last character (both with valid checksums, so both
//!   reach the hash comparison);
//! * the constant-time hash comparison itself, for hashes that are equal,
//!   differ in their first byte, or differ in their last byte.
//!
//! `scripts/timing-ratios.py` turns the results into the ratios of
//! BENCHMARKS.md.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::{KeyAuthLayer, KeyFormat};

#[path = "support/mod.rs"]
mod support;
use support::{StoredKeys, Trivial, bearer, seal, ten_thousand_keys, with_secret_changed};

/// Out of line, so every case runs the same machine code.
#[inline(never)]
fn refuse<S>(service: &mut S, authorization: &HeaderValue) -> u16
where
    S: Service<
            Request<String>,
            Response = Response<tower_keyauth::body::AuthBody<String>>,
            Error = Infallible,
        >,
{
    let mut context = Context::from_waker(Waker::noop());
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(AUTHORIZATION, authorization.clone());
    match pin!(service.call(request)).poll(&mut context) {
        Poll::Ready(response) => response.unwrap().status().as_u16(),
        Poll::Pending => panic!("a memory store answers at once"),
    }
}

fn timing(c: &mut Criterion) {
    let format = KeyFormat::default();
    let StoredKeys {
        store,
        known,
        unknown,
    } = ten_thousand_keys(&format);
    assert_eq!(
        seal(&known[..known.len() - 6]),
        known,
        "the checksum is as documented"
    );
    let secret_length = known.len() - 6 - known.find('.').unwrap() - 1;
    let first = with_secret_changed(&known, 0);
    let last = with_secret_changed(&known, secret_length - 1);
    assert!(format.parse(&first).is_ok() && format.parse(&last).is_ok());

    let mut service = KeyAuthLayer::new(store).layer(Trivial);
    let (unknown, first, last) = (bearer(&unknown), bearer(&first), bearer(&last));
    for refused in [&unknown, &first, &last] {
        assert_eq!(refuse(&mut service, refused), 401);
    }

    let mut group = c.benchmark_group("timing");
    group.bench_function("refuse_unknown_id", |b| {
        b.iter(|| refuse(&mut service, &unknown))
    });
    group.bench_function("refuse_wrong_secret_first_char", |b| {
        b.iter(|| refuse(&mut service, &first))
    });
    group.bench_function("refuse_wrong_secret_last_char", |b| {
        b.iter(|| refuse(&mut service, &last))
    });

    let stored = KeyHash::of(&known);
    let mut bytes = *stored.as_bytes();
    let equal = KeyHash::from_bytes(bytes);
    bytes[0] ^= 1;
    let first_byte = KeyHash::from_bytes(bytes);
    bytes[0] ^= 1;
    bytes[31] ^= 1;
    let last_byte = KeyHash::from_bytes(bytes);
    // One out-of-line function for the three cases, so that they run the
    // very same machine code and only the data differs.
    #[inline(never)]
    fn compare(stored: &KeyHash, presented: &KeyHash) -> bool {
        stored.matches(presented)
    }
    group.bench_function("compare_equal", |b| {
        b.iter(|| compare(black_box(&stored), black_box(&equal)))
    });
    group.bench_function("compare_first_byte_differs", |b| {
        b.iter(|| compare(black_box(&stored), black_box(&first_byte)))
    });
    group.bench_function("compare_last_byte_differs", |b| {
        b.iter(|| compare(black_box(&stored), black_box(&last_byte)))
    });
    group.finish();
}

criterion_group!(benches, timing);
criterion_main!(benches);
