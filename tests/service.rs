//! The layer as a tower citizen: readiness, the readied instance, bodies of
//! any type, `Send + Sync`, and stores behind `dyn`.

mod common;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};
use tower_keyauth::body::AuthBody;
use tower_keyauth::future::ResponseFuture;
use tower_keyauth::{KeyAuth, KeyAuthLayer, KeyStore, MemoryStore, Principal};

/// A service that is ready only when told so, and that checks that `call`
/// reaches an instance that `poll_ready` readied.
struct Gate {
    open: Arc<AtomicBool>,
    /// Per instance: a clone starts unready, as tower requires.
    readied: bool,
    calls: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        Self {
            open: Arc::new(AtomicBool::new(false)),
            readied: false,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Clone for Gate {
    fn clone(&self) -> Self {
        Self {
            open: self.open.clone(),
            readied: false,
            calls: self.calls.clone(),
        }
    }
}

impl Service<Request<String>> for Gate {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            self.readied = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        assert!(
            self.readied,
            "call reached an instance that poll_ready did not ready"
        );
        self.readied = false;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let org = request
            .extensions()
            .get::<Principal>()
            .map(|p| p.org().to_string())
            .unwrap_or_default();
        ready(Ok(Response::new(org)))
    }
}

fn noop_context() -> Context<'static> {
    Context::from_waker(std::task::Waker::noop())
}

#[tokio::test]
async fn poll_ready_is_forwarded() {
    let gate = Gate::new();
    let mut service = KeyAuthLayer::new(MemoryStore::new()).layer(gate.clone());
    let mut cx = noop_context();
    assert!(service.poll_ready(&mut cx).is_pending());
    gate.open.store(true, Ordering::SeqCst);
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

#[tokio::test]
async fn the_readied_instance_serves_requests_that_wait_for_the_store() {
    let demo = demo().await;
    // The counting store has no synchronous answer: the layer must carry the
    // readied inner service into its future.
    let store = CountingStore::new(demo.store.clone());
    let gate = Gate::new();
    gate.open.store(true, Ordering::SeqCst);
    let mut service = KeyAuthLayer::from_shared_store(store.clone()).layer(gate.clone());
    for _ in 0..3 {
        let request = Request::get("/")
            .header("authorization", bearer(&demo.org_key))
            .body(String::new())
            .unwrap();
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "acme");
    }
    assert_eq!(store.finds(), 3);
    assert_eq!(gate.calls.load(Ordering::SeqCst), 3);

    // The synchronous path uses the readied instance as well.
    let mut service = KeyAuthLayer::new(demo.store).layer(gate.clone());
    let request = Request::get("/")
        .header("authorization", bearer(&demo.org_key))
        .body(String::new())
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refusals_do_not_call_the_inner_service() {
    let gate = Gate::new();
    gate.open.store(true, Ordering::SeqCst);
    let mut service = KeyAuthLayer::new(MemoryStore::new()).layer(gate.clone());
    let request = Request::get("/").body(String::new()).unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(br#"{"error":"missing_credentials""#));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn any_body_type_works_on_both_sides() {
    let demo = demo().await;
    let inner = tower::service_fn(|request: Request<Full<Bytes>>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>(Response::new(Full::new(body)))
    });
    let service = KeyAuthLayer::new(demo.store).layer(inner);
    let request = Request::post("/")
        .header("authorization", bearer(&demo.org_key))
        .body(Full::new(Bytes::from_static(b"echo me")))
        .unwrap();
    let response: Response<AuthBody<Full<Bytes>>> = service.oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "echo me");
}

#[tokio::test]
async fn stores_work_behind_dyn() {
    let demo = demo().await;
    let store: Arc<dyn KeyStore> = Arc::new(demo.store);
    let app = app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK);
    let boxed: Box<dyn KeyStore> = Box::new(MemoryStore::new());
    let _ = KeyAuthLayer::new(boxed);
}

#[test]
fn public_types_are_send_sync_and_the_layer_is_clone() {
    fn send_sync<T: Send + Sync>() {}
    fn clone<T: Clone>() {}
    send_sync::<KeyAuthLayer<MemoryStore>>();
    send_sync::<KeyAuth<axum::Router, MemoryStore>>();
    send_sync::<Principal>();
    send_sync::<tower_keyauth::AuthError>();
    send_sync::<tower_keyauth::store::KeyRecord>();
    send_sync::<tower_keyauth::store::StoreError>();
    send_sync::<tower_keyauth::Extract>();
    send_sync::<tower_keyauth::KeyFormat>();
    send_sync::<tower_keyauth::response::Refusal<'static>>();
    send_sync::<tower_keyauth::axum::PrincipalRejection>();
    clone::<KeyAuthLayer<MemoryStore>>();
    clone::<KeyAuth<axum::Router, MemoryStore>>();

    fn send_future<F: Send>() {}
    send_future::<ResponseFuture<axum::Router, axum::body::Body>>();
}

#[test]
fn debug_output_of_the_layer_names_its_settings() {
    let layer = KeyAuthLayer::new(MemoryStore::new())
        .public("/health/")
        .realm("example");
    let debug = format!("{layer:?}");
    assert!(
        debug.contains("/health/") && debug.contains("example"),
        "{debug}"
    );
}
