//! Faults in the store: errors, hangs and panics. Each refuses the request
//! with 503, the handler is never reached, and the service keeps serving.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::routing::get;
use common::client::request;
use common::*;
use http::StatusCode;
use tokio::time::Instant;
use tower_keyauth::ids::{KeyId, OrgId, UserId};
use tower_keyauth::store::{KeyRecord, Membership, StoreError};
use tower_keyauth::{KeyAuthLayer, KeyStore, MemoryStore, Principal};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Error,
    Hang,
    Panic,
}

/// A store that fails as told for one id (and for every membership), and
/// answers from `inner` otherwise.
struct Faulty {
    inner: MemoryStore,
    bad_id: Option<KeyId>,
    fault: Fault,
    /// Fail synchronously, in `find_key_now`, rather than in `find_key`.
    at_once: bool,
    memberships_fail: bool,
    record_use_panics: bool,
}

impl Faulty {
    fn new(inner: MemoryStore, fault: Fault) -> Self {
        Self {
            inner,
            bad_id: None,
            fault,
            at_once: false,
            memberships_fail: false,
            record_use_panics: false,
        }
    }

    fn fails_for(&self, id: &KeyId) -> bool {
        self.bad_id.as_ref().is_none_or(|bad| bad == id)
    }

    async fn misbehave<T>(&self) -> Result<T, StoreError> {
        match self.fault {
            Fault::Error => Err(StoreError::backend(std::io::Error::other("disk on fire"))),
            Fault::Hang => std::future::pending().await,
            Fault::Panic => panic!("the store fell over"),
        }
    }
}

#[async_trait]
impl KeyStore for Faulty {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        if self.fails_for(id) {
            return self.misbehave().await;
        }
        self.inner.find_key(id).await
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        if self.memberships_fail {
            return self.misbehave().await;
        }
        self.inner.membership(user, org).await
    }

    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        if !self.at_once {
            return None;
        }
        if self.fails_for(id) {
            match self.fault {
                Fault::Panic => panic!("the store fell over at once"),
                Fault::Error => return Some(Err(StoreError::backend("no"))),
                Fault::Hang => return None,
            }
        }
        self.inner.find_key_now(id)
    }

    fn record_use(&self, _record: &KeyRecord, _at: std::time::SystemTime) {
        if self.record_use_panics {
            panic!("the usage buffer fell over");
        }
    }
}

/// A router whose handler counts its calls.
fn counting_app<S: KeyStore>(layer: KeyAuthLayer<S>) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/v1/whoami",
            get(move |principal: Principal| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move { principal.org().to_string() }
            }),
        )
        .layer(layer);
    (app, calls)
}

fn timeout_layer<S: KeyStore>(store: S) -> KeyAuthLayer<S> {
    KeyAuthLayer::new(store).store_timeout(Duration::from_millis(200))
}

// Paused (no I/O here): a hang reaches the store timeout as soon as nothing
// else is left to run, without waiting for it.
#[tokio::test(start_paused = true)]
async fn every_fault_is_a_503_and_never_reaches_the_handler() {
    let demo = demo().await;
    for fault in [Fault::Error, Fault::Hang, Fault::Panic] {
        for at_once in [false, true] {
            let mut store = Faulty::new(demo.store.clone(), fault);
            store.at_once = at_once;
            let (app, calls) = counting_app(timeout_layer(store));
            let started = Instant::now();
            let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{fault:?} at once: {at_once}"
            );
            assert_eq!(reply.error(), "unavailable");
            assert!(
                !reply.text.contains("fell over") && !reply.text.contains("disk"),
                "{}",
                reply.text
            );
            assert_eq!(
                calls.load(Ordering::SeqCst),
                0,
                "{fault:?} passed a request"
            );
            if fault == Fault::Hang {
                let waited = started.elapsed();
                assert!(
                    waited >= Duration::from_millis(190),
                    "gave up after {waited:?}"
                );
                assert!(waited < Duration::from_secs(5), "waited {waited:?}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn faults_in_membership_lookups_are_503_too() {
    let demo = demo().await;
    for fault in [Fault::Error, Fault::Hang, Fault::Panic] {
        let mut store = Faulty::new(demo.store.clone(), fault);
        store.bad_id = Some(KeyId::from("none-of-these"));
        store.memberships_fail = true;
        let (app, calls) = counting_app(timeout_layer(store));
        let reply = send(&app, demo.pat_whoami()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{fault:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn a_panic_while_recording_use_does_not_fail_the_request() {
    let demo = demo().await;
    let mut store = Faulty::new(demo.store.clone(), Fault::Panic);
    store.bad_id = Some(KeyId::from("none-of-these"));
    store.record_use_panics = true;
    let (app, calls) = counting_app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_service_keeps_serving_after_a_fault() {
    let demo = demo().await;
    // A key the store fails on; every other key it serves.
    let doomed = tower_keyauth::KeyFormat::default()
        .mint(tower_keyauth::ids::KeyKind::Organization, None)
        .unwrap();
    let doomed_token = doomed.token.expose_secret();
    for fault in [Fault::Panic, Fault::Hang, Fault::Error] {
        let mut store = Faulty::new(demo.store.clone(), fault);
        store.bad_id = Some(doomed.id.clone());
        let (app, calls) = counting_app(timeout_layer(store));
        // A real server over TCP: a panicking request must not take the
        // connection task, let alone the server, down with it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let head = |token: &str| {
            format!("GET /v1/whoami HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}")
        };
        for _ in 0..3 {
            let refused = request(addr, &head(doomed_token), b"").await.unwrap();
            assert_eq!(refused.status, 503, "{fault:?}");
            let served = request(addr, &head(&demo.org_key), b"").await.unwrap();
            assert_eq!(served.status, 200, "{fault:?}: {}", served.body);
            assert_eq!(served.body, "acme");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
