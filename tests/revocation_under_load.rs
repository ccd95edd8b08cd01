//! Revocation under load: many clients use a key over real HTTP while it is
//! revoked. Once the revocation is visible (at once without a cache, within
//! the TTL with one), no request with the key succeeds.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::client::request;
use tokio::sync::Mutex;
use tower_keyauth::store::{CacheOptions, CachedStore};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal};

/// One request: when it was sent, when it was answered, and how.
#[derive(Debug, Clone, Copy)]
struct Call {
    sent: Instant,
    answered: Instant,
    status: u16,
}

async fn serve<S: KeyStore>(store: S) -> SocketAddr {
    let app = Router::new()
        .route("/v1/ping", get(|_: Principal| async { "pong" }))
        .layer(KeyAuthLayer::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs `clients` loops of requests with `token` until `stop`, recording
/// every call.
async fn hammer(addr: SocketAddr, token: String, clients: usize, until: Instant) -> Vec<Call> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (calls, token) = (calls.clone(), token.clone());
            tokio::spawn(async move {
                let head =
                    format!("GET /v1/ping HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}");
                while Instant::now() < until {
                    let sent = Instant::now();
                    let reply = request(addr, &head, b"").await.expect("the server answers");
                    calls.lock().await.push(Call {
                        sent,
                        answered: Instant::now(),
                        status: reply.status,
                    });
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(calls).unwrap().into_inner()
}

fn check(calls: &[Call], revoked: Instant, visible_after: Duration) {
    let succeeded_before = calls
        .iter()
        .filter(|c| c.answered < revoked && c.status == 200)
        .count();
    assert!(
        succeeded_before > 20,
        "the key was not in use before the revocation"
    );
    let deadline = revoked + visible_after;
    let late: Vec<&Call> = calls
        .iter()
        .filter(|c| c.sent >= deadline && c.status != 401)
        .collect();
    assert!(
        late.is_empty(),
        "{} requests after the revocation was visible got through: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let refused_after = calls.iter().filter(|c| c.sent >= deadline).count();
    assert!(
        refused_after > 20,
        "too few requests after the revocation ({refused_after})"
    );
    assert!(
        calls.iter().all(|c| c.status == 200 || c.status == 401),
        "unexpected statuses"
    );
}

/// Serves `serving`, lets 16 clients use `token`, revokes it with `revoke`
/// after 400 ms, and checks that no request sent `visible_after` later or
/// after got through.
async fn revoke_under_load<S, F, Fut>(serving: S, token: &str, revoke: F, visible_after: Duration)
where
    S: KeyStore,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let addr = serve(serving).await;
    let until = Instant::now() + Duration::from_millis(800) + visible_after;
    let load = tokio::spawn(hammer(addr, token.to_owned(), 16, until));
    tokio::time::sleep(Duration::from_millis(400)).await;
    revoke().await;
    let revoked = Instant::now();
    check(&load.await.unwrap(), revoked, visible_after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cache_no_request_succeeds_once_revoked() {
    let store = MemoryStore::new();
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let revoke = || async { store.revoke(&issued.record.id).await.unwrap() };
    revoke_under_load(
        store.clone(),
        issued.token.expose_secret(),
        revoke,
        Duration::ZERO,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cache_no_request_succeeds_once_the_ttl_has_passed() {
    let ttl = Duration::from_millis(300);
    let shared = MemoryStore::new();
    let issued = shared.issue(NewKey::org("acme")).await.unwrap();
    // The serving instance caches; the revocation comes through another one.
    let serving =
        CachedStore::with_options(shared.clone(), CacheOptions::default().positive_ttl(ttl));
    let revoke = || async { shared.revoke(&issued.record.id).await.unwrap() };
    revoke_under_load(serving, issued.token.expose_secret(), revoke, ttl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_the_serving_cache_is_visible_at_once() {
    let store = CachedStore::with_options(
        MemoryStore::new(),
        CacheOptions::default().positive_ttl(Duration::from_secs(3600)),
    );
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let revoke = || async { store.revoke(&issued.record.id).await.unwrap() };
    revoke_under_load(
        store.clone(),
        issued.token.expose_secret(),
        revoke,
        Duration::ZERO,
    )
    .await;
}
