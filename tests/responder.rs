//! A replaceable responder shapes every refusal: the key layer's, the scope
//! layer's and the extractors'.

mod common;

use axum::Router;
use axum::handler::Handler;
use axum::routing::get;
use bytes::Bytes;
use common::*;
use http::request::Parts;
use http::{Response, StatusCode};
use tower_keyauth::response::Refusal;
use tower_keyauth::response::Responder;
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, NewKey, Principal, RequireScopes, Scopes};

/// Plain-text refusals in the shape of another API, with the request path.
struct PlainText;

impl Responder for PlainText {
    fn respond(&self, refusal: &Refusal<'_>, request: &Parts) -> Response<Bytes> {
        let error = refusal.error();
        let mut response = Response::new(Bytes::from(format!(
            "{} {}: {}",
            error.status().as_u16(),
            request.uri.path(),
            error.error_code()
        )));
        *response.status_mut() = error.status();
        if let Some(challenge) = refusal.www_authenticate() {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        response
            .headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        response
    }
}

async fn app_with_plain_text() -> (Router, Demo, String) {
    let demo = demo().await;
    let reader = demo
        .store
        .issue(NewKey::org("acme").scopes(Scopes::parse(["objects.read"]).unwrap()))
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    let app = Router::new()
        .route(
            "/write",
            get((|| async { "ok" }).layer(RequireScopes::new("objects.write"))),
        )
        .route(
            "/me",
            get(|p: Principal| async move { p.org().to_string() }),
        )
        .route("/closed", get(|| async { "never" }))
        .layer(
            KeyAuthLayer::new(demo.store.clone())
                .responder(PlainText)
                .public("/me"),
        );
    (app, demo, reader)
}

#[tokio::test]
async fn the_custom_responder_shapes_layer_refusals() {
    let (app, _demo, _) = app_with_plain_text().await;
    let reply = send(&app, get_with("/closed", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text, "401 /closed: missing_credentials");
    assert_eq!(reply.headers["content-type"], "text/plain");
    assert_eq!(reply.challenge().as_deref(), Some(r#"Bearer realm="api""#));
    let reply = send(&app, get_with("/closed", &[("authorization", "Bearer")])).await;
    assert_eq!(reply.text, "400 /closed: invalid_request");
}

#[tokio::test]
async fn the_custom_responder_shapes_scope_and_extractor_refusals() {
    let (app, _demo, reader) = app_with_plain_text().await;
    let reply = get_bearer(&app, "/write", &reader).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.text, "403 /write: insufficient_scope");
    let reply = send(&app, get_with("/me", &[("authorization", "Bearer ak_x.y")])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.text, "401 /me: invalid_token");
}

#[tokio::test]
async fn grpc_callers_keep_the_standard_answer_unless_the_responder_overrides_it() {
    let (app, _demo, _) = app_with_plain_text().await;
    let request = http::Request::post("/closed")
        .header("content-type", "application/grpc")
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["grpc-status"], "16");
    assert!(reply.text.is_empty());

    struct Teapot;
    impl Responder for Teapot {
        fn respond(&self, refusal: &Refusal<'_>, _: &Parts) -> Response<Bytes> {
            tower_keyauth::response::DefaultResponder::json(refusal)
        }
        fn respond_grpc(&self, _: &Refusal<'_>, _: &Parts) -> Response<Bytes> {
            let mut response = Response::new(Bytes::new());
            response
                .headers_mut()
                .insert("grpc-status", "2".parse().unwrap());
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
        }
    }
    let app = common::app(KeyAuthLayer::new(tower_keyauth::MemoryStore::new()).responder(Teapot));
    let request = http::Request::post("/v1/whoami")
        .header("content-type", "application/grpc+proto")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.headers["grpc-status"], "2");
}

#[tokio::test]
async fn a_closure_is_a_responder() {
    let app = app(
        KeyAuthLayer::new(tower_keyauth::MemoryStore::new()).responder(
            |refusal: &Refusal<'_>, _: &Parts| {
                let mut response = Response::new(Bytes::from_static(b"nope"));
                *response.status_mut() = refusal.status();
                response
            },
        ),
    );
    let reply = send(&app, get_with("/v1/whoami", &[])).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::UNAUTHORIZED, "nope")
    );
}
