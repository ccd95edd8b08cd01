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
//! * with peppers (version 2 current, 1 earlier), for keys stored under
//!   each version (0: plain SHA-256, 1, 2): the layer accepting the key,
//!   and refusing a wrong secret for it, next to an unknown id. A key of
//!   another version than the current one costs a second hash (and a
//!   second lookup), only when its id exists (see `tower_keyauth::pepper`).
//!
//! `scripts/timing-ratios.py` turns the results into the ratios of
//! BENCHMARKS.md.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::KeyId;
use tower_keyauth::pepper::Peppers;
use tower_keyauth::store::{KeyMatchRef, KeyRecord, StoreError, StoreOptions};
use tower_keyauth::{KeyAuthLayer, KeyFormat, KeyLifecycle, KeyStore, MemoryStore, NewKey};

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

/// A `MemoryStore` that never re-hashes, so that a key of an earlier
/// version stays there for every iteration.
#[derive(Clone)]
struct NoRehash(MemoryStore);

#[async_trait]
impl KeyStore for NoRehash {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.0.find_key(id).await
    }

    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        self.0.find_key_now(id)
    }

    fn with_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
        examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<std::time::SystemTime>,
    ) -> Option<Result<(), StoreError>> {
        self.0.with_key_matching_now(id, presented, examine)
    }

    fn peppers(&self) -> Peppers {
        self.0.peppers()
    }
}

/// Drives a future that never waits (a `MemoryStore` call) to its end.
fn at_once<T>(future: impl Future<Output = T>) -> T {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("a memory store answers at once"),
    }
}

fn peppered(c: &mut Criterion) {
    let peppers = Peppers::new(2, [2u8; 32])
        .unwrap()
        .earlier(1, [1u8; 32])
        .unwrap();
    let memory = MemoryStore::with_options(
        StoreOptions::default()
            .peppers(peppers.clone())
            .without_last_used(),
    );
    let format = KeyFormat::default();
    let mut keys = Vec::new();
    for version in [0, 1, 2] {
        let issued = at_once(memory.issue(NewKey::org("acme"))).unwrap();
        let token = issued.token.expose_secret().to_owned();
        let old = peppers.hash_with(version, &token).unwrap();
        assert!(at_once(memory.rehash(&issued.record.id, &issued.record.hash, &old)).unwrap());
        let wrong = with_secret_changed(&token, 0);
        assert!(format.parse(&wrong).is_ok());
        keys.push((version, bearer(&token), bearer(&wrong)));
    }
    let unknown = bearer(&with_secret_changed(
        &seal(&format!("ak_{}.{}", "Z".repeat(12), "A".repeat(28))),
        0,
    ));
    let mut service = KeyAuthLayer::new(NoRehash(memory)).layer(Trivial);
    assert_eq!(refuse(&mut service, &unknown), 401);
    let mut group = c.benchmark_group("timing_peppered");
    group.bench_function("refuse_unknown_id", |b| {
        b.iter(|| refuse(&mut service, &unknown))
    });
    for (version, right, wrong) in &keys {
        assert_eq!(refuse(&mut service, right), 200, "v{version}");
        assert_eq!(refuse(&mut service, wrong), 401, "v{version}");
        group.bench_function(format!("accept_v{version}"), |b| {
            b.iter(|| refuse(&mut service, right))
        });
        group.bench_function(format!("refuse_wrong_secret_v{version}"), |b| {
            b.iter(|| refuse(&mut service, wrong))
        });
    }
    group.finish();
}

criterion_group!(benches, timing, peppered);
criterion_main!(benches);
