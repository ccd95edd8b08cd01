//! The failed-attempt throttle through a real server: after N refused
//! credentials from one address in a window, that address is answered 429
//! before its credential is parsed or the store asked; other addresses are
//! not affected. And through the layer alone, under a flood: a client
//! rotating through more IPv6 /64s than the throttle holds is blocked by
//! its /48.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::client::{RawReply, request};
use common::*;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_keyauth::client_addr::{PeerAddr, TrustedProxies};
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

#[tokio::test]
async fn ipv6_clients_count_by_their_64_and_a_blocked_64_leaves_its_48_alone() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let valid = valid.token.expose_secret().to_owned();
    let typo = with_typo(&valid);
    let layer = KeyAuthLayer::new(CountingStore::new(store))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap())
        .failed_attempts(2, Duration::from_secs(60));
    let addr = serve(layer).await;
    for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        assert_eq!(whoami(addr, &typo, host).await.status, 401);
    }
    // Another host of the /64 is blocked.
    assert_eq!(whoami(addr, &valid, "2001:db8:1:2::99").await.status, 429);
    // Its neighbours in the /48 are not: networks count only while the
    // throttle is full of open windows, under a flood.
    assert_eq!(whoami(addr, &valid, "2001:db8:1:3::1").await.status, 200);
    assert_eq!(whoami(addr, &valid, "2001:db8:1:ffff::1").await.status, 200);
}

#[tokio::test]
async fn a_client_rotating_through_its_64s_is_blocked_by_its_48() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let valid = valid.token.expose_secret().to_owned();
    let typo = with_typo(&valid);
    let mut service = KeyAuthLayer::new(store)
        .failed_attempts(3, Duration::from_secs(60))
        .layer(service_fn(|_: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let host =
        |net48: u16, net64: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net48, net64, 0, 0, 0, 1));
    // A client with a /44 sends one refused key from each /64 of its /48s
    // in turn: more /64s than the throttle holds (131 072).
    let (mut refused, mut blocked) = (0, None);
    'flood: for net48 in 0xa0..0xa4 {
        for net64 in 0..=u16::MAX {
            match send(&mut service, &typo, host(net48, net64)).await {
                401 => refused += 1,
                429 => {
                    blocked = Some((net48, net64));
                    break 'flood;
                }
                other => panic!("{other}"),
            }
        }
    }
    // Once the throttle is full, its new /64s count against their /48,
    // blocked after three.
    let (net48, net64) = blocked.expect("the flood was never blocked");
    assert!(refused <= 131_072 + 3, "{refused} refused keys");
    assert_eq!(send(&mut service, &typo, host(net48, net64 + 1)).await, 429);
    assert_eq!(
        send(&mut service, &valid, host(net48, net64 + 2)).await,
        429
    );
    // Another /48 is served as ever.
    assert_eq!(send(&mut service, &valid, host(0xff, 1)).await, 200);
}

/// Sends `token` from `client` straight through the layer (no server, no
/// router: a flood of requests in little time); the status.
async fn send<S, B>(service: &mut S, token: &str, client: IpAddr) -> u16
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    request.extensions_mut().insert(PeerAddr(client));
    let ready = service.ready().await.unwrap();
    ready.call(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn bad_keys_sent_to_a_public_path_do_not_count() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let valid = valid.token.expose_secret().to_owned();
    let wrong_secret = with_typo(&valid);
    let layer = KeyAuthLayer::new(CountingStore::new(store))
        .trusted_proxies(TrustedProxies::parse(["127.0.0.1"]).unwrap())
        .failed_attempts(3, Duration::from_secs(60));
    let addr = serve(with_public_paths(layer)).await;
    // A health poller with a stale key: answered, never refused.
    for _ in 0..5 {
        let head = format!(
            "GET /health/ HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {wrong_secret}\r\nx-forwarded-for: 198.51.100.9"
        );
        assert_eq!(request(addr, &head, b"").await.unwrap().status, 200);
    }
    assert_eq!(whoami(addr, &valid, "198.51.100.9").await.status, 200);
}
