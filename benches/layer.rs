//! What authentication costs, measured in one run so the figures compare:
//!
//! * `primitives`: parsing a token (with its checksum), CRC32 alone,
//!   SHA-256 of a token, hash-and-compare, one `HashMap` lookup, and the
//!   target's yardstick: one SHA-256 plus one lookup;
//! * `layer`: a trivial service bare, behind tower-http's bearer check, and
//!   behind `KeyAuthLayer` over a `MemoryStore` for a valid key, an unknown
//!   id, a wrong secret, a bad checksum and no credential; a valid key
//!   through a `CachedStore` (a cache hit); and a key refused by
//!   `RequireScopes` for a missing scope;
//! * `routed`: the trivial service bare and behind the layer again, with
//!   requests as axum's router hands them to a route's layers (carrying
//!   `MatchedPath` and `OriginalUri` in their extensions): what a layer
//!   adds on axum's request path, without axum's own cost of a route layer;
//! * `axum`: the same on axum's real request path: a `Router` with one
//!   route, bare and behind the layer (`Router::layer`), so the request
//!   already carries the extensions axum's router inserts (`MatchedPath`,
//!   `OriginalUri`) when the layer sees it.
//!
//! `scripts/bench-ratios.py` turns the results into the ratios of
//! BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tower::Layer;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::store::CachedStore;
use tower_keyauth::{KeyAuthLayer, KeyFormat, RequireScopes};

#[path = "support/mod.rs"]
mod support;
use support::{Trivial, bearer, fill_cache, fixture, serve, serve_routed, yardstick_map};

fn primitives(c: &mut Criterion) {
    let fixture = fixture();
    let format = KeyFormat::default();
    let token = fixture.valid.as_str();
    let stored = KeyHash::of(token);
    let (body, _checksum) = token.split_at(token.len() - 6);

    let (map, probe) = yardstick_map(stored);
    let probe = probe.as_str();

    let mut group = c.benchmark_group("primitives");
    group.bench_function("parse_valid", |b| {
        b.iter(|| format.parse(black_box(token)).is_ok())
    });
    group.bench_function("parse_bad_checksum", |b| {
        b.iter(|| {
            format
                .parse(black_box(fixture.bad_checksum.as_str()))
                .is_ok()
        })
    });
    group.bench_function("crc32", |b| {
        b.iter(|| crc32fast::hash(black_box(body.as_bytes())))
    });
    group.bench_function("sha256", |b| b.iter(|| KeyHash::of(black_box(token))));
    group.bench_function("hash_and_compare", |b| {
        b.iter(|| KeyHash::of(black_box(token)).matches(&stored))
    });
    group.bench_function("hashmap_lookup", |b| {
        b.iter(|| map.contains_key(black_box(probe)))
    });
    group.bench_function("sha256_plus_lookup", |b| {
        b.iter(|| {
            let hash = KeyHash::of(black_box(token));
            map.get(black_box(probe))
                .is_some_and(|found| found.matches(&hash))
        })
    });
    group.finish();
}

fn layer(c: &mut Criterion) {
    let fixture = fixture();
    let mut bare = Trivial;
    #[allow(deprecated)]
    let mut tower_http =
        tower_http::validate_request::ValidateRequestHeaderLayer::bearer(&fixture.valid)
            .layer(Trivial);
    let mut keyauth = KeyAuthLayer::new(fixture.store.clone()).layer(Trivial);
    let mut cached = KeyAuthLayer::new(CachedStore::new(fixture.store.clone())).layer(Trivial);
    let mut scoped = KeyAuthLayer::new(fixture.store.clone())
        .layer(RequireScopes::new("objects.write").layer(Trivial));
    let reader = bearer(&fixture.reader);
    assert_eq!(serve(&mut scoped, Some(&reader)), 403);

    let valid = bearer(&fixture.valid);
    let unknown = bearer(&fixture.unknown);
    let wrong_secret = bearer(&fixture.wrong_secret);
    let bad_checksum = bearer(&fixture.bad_checksum);
    let limited = bearer(&fixture.limited);

    assert_eq!(serve(&mut bare, Some(&valid)), 200);
    assert_eq!(serve(&mut keyauth, Some(&limited)), 200);
    assert_eq!(serve(&mut tower_http, Some(&valid)), 200);
    assert_eq!(serve(&mut keyauth, Some(&valid)), 200);
    for refused in [&unknown, &wrong_secret, &bad_checksum] {
        assert_eq!(serve(&mut keyauth, Some(refused)), 401);
    }
    assert_eq!(serve(&mut keyauth, None), 401);
    fill_cache(&mut cached, &valid);
    assert_eq!(serve(&mut cached, Some(&valid)), 200);

    let mut group = c.benchmark_group("layer");
    group.bench_function("bare", |b| b.iter(|| serve(&mut bare, Some(&valid))));
    group.bench_function("tower_http_bearer", |b| {
        b.iter(|| serve(&mut tower_http, Some(&valid)))
    });
    group.bench_function("keyauth_valid_key", |b| {
        b.iter(|| serve(&mut keyauth, Some(&valid)))
    });
    group.bench_function("keyauth_rate_limited_key", |b| {
        b.iter(|| serve(&mut keyauth, Some(&limited)))
    });
    group.bench_function("keyauth_unknown_id", |b| {
        b.iter(|| serve(&mut keyauth, Some(&unknown)))
    });
    group.bench_function("keyauth_wrong_secret", |b| {
        b.iter(|| serve(&mut keyauth, Some(&wrong_secret)))
    });
    group.bench_function("keyauth_bad_checksum", |b| {
        b.iter(|| serve(&mut keyauth, Some(&bad_checksum)))
    });
    group.bench_function("keyauth_no_credential", |b| {
        b.iter(|| serve(&mut keyauth, None))
    });
    group.bench_function("keyauth_cached_valid_key", |b| {
        b.iter(|| serve(&mut cached, Some(&valid)))
    });
    group.bench_function("keyauth_insufficient_scope", |b| {
        b.iter(|| serve(&mut scoped, Some(&reader)))
    });
    group.finish();
}

fn routed(c: &mut Criterion) {
    let fixture = fixture();
    let matched: Arc<str> = Arc::from("/v1/objects");
    let mut bare = Trivial;
    let mut keyauth = KeyAuthLayer::new(fixture.store.clone()).layer(Trivial);
    let mut cached = KeyAuthLayer::new(CachedStore::new(fixture.store.clone())).layer(Trivial);
    let valid = bearer(&fixture.valid);
    let unknown = bearer(&fixture.unknown);
    let wrong_secret = bearer(&fixture.wrong_secret);

    assert_eq!(serve_routed(&mut keyauth, Some(&valid), &matched), 200);
    assert_eq!(serve_routed(&mut keyauth, Some(&unknown), &matched), 401);
    assert_eq!(
        serve_routed(&mut keyauth, Some(&wrong_secret), &matched),
        401
    );
    fill_cache(&mut cached, &valid);
    assert_eq!(serve_routed(&mut cached, Some(&valid), &matched), 200);

    let mut group = c.benchmark_group("routed");
    group.bench_function("bare", |b| {
        b.iter(|| serve_routed(&mut bare, Some(&valid), &matched))
    });
    group.bench_function("keyauth_valid_key", |b| {
        b.iter(|| serve_routed(&mut keyauth, Some(&valid), &matched))
    });
    group.bench_function("keyauth_unknown_id", |b| {
        b.iter(|| serve_routed(&mut keyauth, Some(&unknown), &matched))
    });
    group.bench_function("keyauth_wrong_secret", |b| {
        b.iter(|| serve_routed(&mut keyauth, Some(&wrong_secret), &matched))
    });
    group.bench_function("keyauth_cached_valid_key", |b| {
        b.iter(|| serve_routed(&mut cached, Some(&valid), &matched))
    });
    group.finish();
}

fn axum_router(c: &mut Criterion) {
    use axum::Router;
    use axum::routing::get;

    let fixture = fixture();
    let route = || Router::new().route("/", get(|| async { "ok" }));
    let mut bare = route();
    let mut keyauth = route().layer(KeyAuthLayer::new(fixture.store.clone()));
    let mut cached = route().layer(KeyAuthLayer::new(CachedStore::new(fixture.store.clone())));
    let valid = bearer(&fixture.valid);
    let unknown = bearer(&fixture.unknown);
    let wrong_secret = bearer(&fixture.wrong_secret);

    assert_eq!(serve(&mut bare, Some(&valid)), 200);
    assert_eq!(serve(&mut keyauth, Some(&valid)), 200);
    assert_eq!(serve(&mut keyauth, Some(&unknown)), 401);
    assert_eq!(serve(&mut keyauth, Some(&wrong_secret)), 401);
    fill_cache(&mut cached, &valid);
    assert_eq!(serve(&mut cached, Some(&valid)), 200);

    let mut group = c.benchmark_group("axum");
    group.bench_function("bare", |b| b.iter(|| serve(&mut bare, Some(&valid))));
    group.bench_function("keyauth_valid_key", |b| {
        b.iter(|| serve(&mut keyauth, Some(&valid)))
    });
    group.bench_function("keyauth_unknown_id", |b| {
        b.iter(|| serve(&mut keyauth, Some(&unknown)))
    });
    group.bench_function("keyauth_wrong_secret", |b| {
        b.iter(|| serve(&mut keyauth, Some(&wrong_secret)))
    });
    group.bench_function("keyauth_cached_valid_key", |b| {
        b.iter(|| serve(&mut cached, Some(&valid)))
    });
    group.finish();
}

criterion_group!(benches, primitives, layer, routed, axum_router);
criterion_main!(benches);
