//! Revocation under load: many clients use a key while it is revoked. Once
//! the revocation is visible (at once without a cache, within the TTL with
//! one), no request with the key succeeds. Over real HTTP when it must be
//! visible at once; straight through the service on a paused clock when a
//! cache's TTL must run out first, so that the test need not wait for it.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use common::client::request;
use common::tokio_clock;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_keyauth::store::{CacheOptions, CachedStore};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal};

/// One request: when it was sent, when it was answered, and how. On tokio's
/// clock, which is the real one unless the test pauses it.
#[derive(Debug, Clone, Copy)]
struct Call {
    sent: Instant,
    answered: Instant,
    status: u16,
}

/// Sends one request with the key; answers its status.
type SendOne = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = u16> + Send>> + Send + Sync>;

fn app<S: KeyStore>(store: S) -> Router {
    Router::new()
        .route("/v1/ping", get(|_: Principal| async { "pong" }))
        .layer(KeyAuthLayer::new(store))
}

/// Requests over real HTTP to a server for `store`.
async fn over_http<S: KeyStore>(store: S, token: &str) -> SendOne {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = app(store);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let head: Arc<str> =
        format!("GET /v1/ping HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}").into();
    Arc::new(move || {
        let head = head.clone();
        Box::pin(async move {
            request(addr, &head, b"")
                .await
                .expect("the server answers")
                .status
        })
    })
}

/// Requests straight to the service for `store`, without a socket: what a
/// paused clock needs, as it moves on whenever nothing is left to run.
fn in_process<S: KeyStore>(store: S, token: &str) -> SendOne {
    let app = app(store);
    let authorization: Arc<str> = format!("Bearer {token}").into();
    Arc::new(move || {
        let request = axum::http::Request::get("/v1/ping")
            .header("authorization", &*authorization)
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        Box::pin(async move { app.oneshot(request).await.unwrap().status().as_u16() })
    })
}

/// Runs `clients` loops of `send` until `until`, recording every call; with
/// `pace`, each client waits that long between two calls.
async fn hammer(
    send: SendOne,
    clients: usize,
    until: Instant,
    pace: Option<Duration>,
) -> Vec<Call> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (calls, send) = (calls.clone(), send.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let sent = Instant::now();
                    let status = send().await;
                    calls.lock().await.push(Call {
                        sent,
                        answered: Instant::now(),
                        status,
                    });
                    if let Some(pace) = pace {
                        tokio::time::sleep(pace).await;
                    }
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

/// Lets 16 clients use the key through `send` (each waiting `pace` between
/// calls, if given), revokes it with `revoke` after 400 ms, and checks that
/// no request sent `visible_after` later or after got through.
async fn revoke_under_load<F, Fut>(
    send: SendOne,
    revoke: F,
    visible_after: Duration,
    pace: Option<Duration>,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let until = Instant::now() + Duration::from_millis(800) + visible_after;
    let load = tokio::spawn(hammer(send, 16, until, pace));
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
    let send = over_http(store.clone(), issued.token.expose_secret()).await;
    revoke_under_load(send, revoke, Duration::ZERO, None).await;
}

// Paused: the cache's TTL runs out on a clock that moves whenever every
// client waits between two calls, not on the real one.
#[tokio::test(start_paused = true)]
async fn with_a_cache_no_request_succeeds_once_the_ttl_has_passed() {
    let ttl = Duration::from_millis(300);
    let shared = MemoryStore::new();
    let issued = shared.issue(NewKey::org("acme")).await.unwrap();
    // The serving instance caches; the revocation comes through another one.
    let serving = CachedStore::with_options(
        shared.clone(),
        CacheOptions::default()
            .positive_ttl(ttl)
            .clock(tokio_clock()),
    );
    let revoke = || async { shared.revoke(&issued.record.id).await.unwrap() };
    let send = in_process(serving, issued.token.expose_secret());
    revoke_under_load(send, revoke, ttl, Some(Duration::from_millis(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_the_serving_cache_is_visible_at_once() {
    let store = CachedStore::with_options(
        MemoryStore::new(),
        CacheOptions::default().positive_ttl(Duration::from_secs(3600)),
    );
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let revoke = || async { store.revoke(&issued.record.id).await.unwrap() };
    let send = over_http(store.clone(), issued.token.expose_secret()).await;
    revoke_under_load(send, revoke, Duration::ZERO, None).await;
}
