//! The failed-attempt throttle through a real server: after N refused
//! credentials from one address in a window, that address is answered 429
//! before its credential is parsed or the store asked; other addresses are
//! not affected.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::client::{RawReply, request};
use common::*;
use tower_keyauth::client_addr::TrustedProxies;
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};

async fn serve(layer: KeyAuthLayer<Arc<CountingStore<MemoryStore>>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(layer).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// `GET /v1/whoami` with `token`, from `client` (told by the trusted
/// proxy on loopback).
async fn whoami(addr: SocketAddr, token: &str, client: &str) -> RawReply {
    let head = format!(
        "GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nx-forwarded-for: {client}"
    );
    request(addr, &head, b"").await.unwrap()
}

#[tokio::test]
async fn an_address_with_too_many_refused_keys_is_answered_429_without_a_lookup() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let valid = valid.token.expose_secret().to_owned();
    let other = store.issue(NewKey::org("acme")).await.unwrap();
    // A bad checksum: refused before any lookup, and counted.
    let wrong_secret = with_typo(other.token.expose_secret());
    let counting = CountingStore::new(store);
    let layer = KeyAuthLayer::new(Arc::clone(&counting))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap())
        .failed_attempts(3, Duration::from_secs(60));
    let addr = serve(layer).await;

    for _ in 0..3 {
        let refused = whoami(addr, &wrong_secret, "198.51.100.7").await;
        assert_eq!(refused.status, 401);
    }
    let finds = counting.finds();
    // Blocked: even a valid key waits, and the store is not asked.
    let blocked = whoami(addr, &valid, "198.51.100.7").await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert_eq!(blocked.json()["error"], "rate_limited");
    assert_eq!(
        blocked.json()["message"],
        "Too many invalid API keys from this address. Try again later."
    );
    let retry_after: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        counting.finds(),
        finds,
        "a blocked address reached the store"
    );
    // Another address is served as ever.
    assert_eq!(whoami(addr, &valid, "198.51.100.8").await.status, 200);
}

#[tokio::test]
async fn valid_keys_and_missing_keys_do_not_count() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let valid = valid.token.expose_secret().to_owned();
    let layer = KeyAuthLayer::new(CountingStore::new(store))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap())
        .failed_attempts(2, Duration::from_secs(60));
    let addr = serve(layer).await;
    for _ in 0..5 {
        assert_eq!(whoami(addr, &valid, "198.51.100.9").await.status, 200);
        let head = "GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\nx-forwarded-for: 198.51.100.9";
        assert_eq!(request(addr, head, b"").await.unwrap().status, 401);
    }
    assert_eq!(whoami(addr, &valid, "198.51.100.9").await.status, 200);
}

#[tokio::test]
async fn off_by_default() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let typo = with_typo(valid.token.expose_secret());
    let layer = KeyAuthLayer::new(CountingStore::new(store))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap());
    let addr = serve(layer).await;
    for _ in 0..100 {
        assert_eq!(whoami(addr, &typo, "198.51.100.10").await.status, 401);
    }
    assert_eq!(
        whoami(addr, valid.token.expose_secret(), "198.51.100.10")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn refusals_decided_by_the_store_count_too() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    // Well formed, with a good checksum, but unknown here: the store is
    // asked (asynchronously, through the counting store) and refuses.
    let unknown = MemoryStore::new().issue(NewKey::org("acme")).await.unwrap();
    let counting = CountingStore::new(store);
    let layer = KeyAuthLayer::new(Arc::clone(&counting))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap())
        .failed_attempts(3, Duration::from_secs(60));
    let addr = serve(layer).await;
    for _ in 0..3 {
        assert_eq!(
            whoami(addr, unknown.token.expose_secret(), "203.0.113.50")
                .await
                .status,
            401
        );
    }
    assert_eq!(counting.finds(), 3);
    assert_eq!(
        whoami(addr, valid.token.expose_secret(), "203.0.113.50")
            .await
            .status,
        429
    );
    assert_eq!(counting.finds(), 3);
}
