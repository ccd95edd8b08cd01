//! IP allowlists through a real server on loopback: the client's address
//! comes from the connection, or from `X-Forwarded-For` only behind a
//! trusted proxy; a refused address is 403 before anything is charged.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::client::{RawReply, request};
use common::*;
use tower_keyauth::client_addr::{IpAllowlist, TrustedProxies};
use tower_keyauth::limit::{RateLimit, UsageLimits};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};

/// A key usable only from `networks`, with one request a minute when
/// `one_a_minute`.
async fn key_from(store: &MemoryStore, networks: &[&str], one_a_minute: bool) -> String {
    let mut limits = UsageLimits::new().with_allowed_ips(IpAllowlist::parse(networks).unwrap());
    if one_a_minute {
        limits = limits
            .rate_limit(RateLimit::per(1, Duration::from_secs(60)).unwrap())
            .unwrap();
    }
    let issued = store
        .issue(NewKey::org("acme").limits(limits))
        .await
        .unwrap();
    issued.token.expose_secret().to_owned()
}

/// The test routes behind `layer`, served on loopback with the peer's
/// address in `ConnectInfo`.
async fn serve(layer: KeyAuthLayer<MemoryStore>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(layer).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn whoami(addr: SocketAddr, token: &str, forwarded_for: Option<&str>) -> RawReply {
    let mut head =
        format!("GET /v1/whoami HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}");
    if let Some(chain) = forwarded_for {
        head.push_str(&format!("\r\nx-forwarded-for: {chain}"));
    }
    request(addr, &head, b"").await.unwrap()
}

#[tokio::test]
async fn a_key_works_from_its_allowed_addresses_only() {
    let store = MemoryStore::new();
    let loopback = key_from(&store, &["127.0.0.0/8"], false).await;
    let office = key_from(&store, &["203.0.113.0/24", "2001:db8::/32"], false).await;
    let addr = serve(KeyAuthLayer::new(store)).await;

    assert_eq!(whoami(addr, &loopback, None).await.status, 200);
    let refused = whoami(addr, &office, None).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json(),
        serde_json::json!({
            "error": "forbidden",
            "message": "The API key may not be used from this address."
        })
    );
    assert_eq!(refused.header("www-authenticate"), None);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let store = MemoryStore::new();
    let office = key_from(&store, &["203.0.113.0/24"], false).await;
    let addr = serve(KeyAuthLayer::new(store)).await;
    // The peer (loopback) is no trusted proxy: its claim is not believed.
    for spoof in ["203.0.113.7", "198.51.100.1, 203.0.113.7"] {
        assert_eq!(
            whoami(addr, &office, Some(spoof)).await.status,
            403,
            "{spoof}"
        );
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_rightmost_untrusted_hop() {
    let store = MemoryStore::new();
    let office = key_from(&store, &["203.0.113.0/24"], false).await;
    let layer = KeyAuthLayer::new(store)
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1", "10.0.0.0/8"]).unwrap());
    let addr = serve(layer).await;
    // The proxy appended the client it saw; another trusted hop before it.
    assert_eq!(whoami(addr, &office, Some("203.0.113.7")).await.status, 200);
    assert_eq!(
        whoami(addr, &office, Some("203.0.113.7, 10.1.2.3"))
            .await
            .status,
        200
    );
    // A client that sends its own header cannot choose: the proxy appends
    // the address it saw, and that one decides.
    assert_eq!(
        whoami(addr, &office, Some("203.0.113.7, 198.51.100.1"))
            .await
            .status,
        403
    );
    // No header at all: the trusted proxy itself is the client.
    assert_eq!(whoami(addr, &office, None).await.status, 403);
}

#[tokio::test]
async fn a_refused_address_charges_nothing() {
    let store = MemoryStore::new();
    let office = key_from(&store, &["203.0.113.0/24"], true).await;
    let layer =
        KeyAuthLayer::new(store).trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap());
    let addr = serve(layer).await;
    for _ in 0..3 {
        assert_eq!(
            whoami(addr, &office, Some("198.51.100.1")).await.status,
            403
        );
    }
    // The one request a minute is still there for the allowed address.
    let admitted = whoami(addr, &office, Some("203.0.113.7")).await;
    assert_eq!(admitted.status, 200);
    assert_eq!(admitted.header("ratelimit"), Some("default;r=0;t=60"));
}

#[tokio::test]
async fn without_a_known_address_an_allowlisted_key_is_refused() {
    // `oneshot` through the router: no connection, so no peer address.
    let store = MemoryStore::new();
    let office = key_from(&store, &["0.0.0.0/0", "::/0"], false).await;
    let app = app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", &office).await;
    assert_eq!(reply.status, http::StatusCode::FORBIDDEN);
}

/// `GET path` with `token`, from loopback.
async fn get_path(addr: SocketAddr, path: &str, token: &str) -> RawReply {
    let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}");
    request(addr, &head, b"").await.unwrap()
}

#[tokio::test]
async fn on_a_public_path_a_key_from_a_forbidden_address_identifies_no_one() {
    for slow_store in [false, true] {
        let store = MemoryStore::new();
        let office = key_from(&store, &["203.0.113.0/24"], true).await;
        let loopback = key_from(&store, &["127.0.0.0/8"], true).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = if slow_store {
            // The lookup waits: the allowlist is applied when it answers.
            let slow = CountingStore::slow(store, Duration::from_millis(1));
            routes().layer(with_public_paths(KeyAuthLayer::new(slow)))
        } else {
            routes().layer(with_public_paths(KeyAuthLayer::new(store)))
        };
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        // The public path answers, without the key's principal.
        let reply = get_path(addr, "/", &office).await;
        assert_eq!(reply.status, 200, "slow store: {slow_store}");
        assert_eq!(reply.json()["principal"], serde_json::Value::Null);
        // A key allowed here is identified, and a public path charges
        // nothing: its one request a minute is still there.
        for _ in 0..3 {
            let reply = get_path(addr, "/", &loopback).await;
            assert_ne!(reply.json()["principal"], serde_json::Value::Null);
        }
        assert_eq!(whoami(addr, &loopback, None).await.status, 200);
    }
}
