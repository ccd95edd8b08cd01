//! Public paths and the `Principal` extractors, through a real axum router.

mod common;

use axum::Router;
use axum::routing::get;
use common::*;
use http::StatusCode;
use tower_keyauth::{KeyAuthLayer, MemoryStore, Principal};

#[tokio::test]
async fn public_paths_pass_without_a_credential() {
    let app = app(with_public_paths(KeyAuthLayer::new(MemoryStore::new())));
    for path in ["/", "/health/", "/docs/", "/docs/guide/keys.html"] {
        let reply = send(&app, get_with(path, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    for path in ["/v1/whoami", "/health", "/docs", "/healthz"] {
        let reply = send(&app, get_with(path, &[])).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn a_valid_credential_on_a_public_path_still_yields_a_principal() {
    let demo = demo().await;
    let app = app(with_public_paths(KeyAuthLayer::new(demo.store)));
    let reply = get_bearer(&app, "/", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["principal"]["org"], "acme");
}

#[tokio::test]
async fn an_invalid_credential_on_a_public_path_is_ignored() {
    let demo = demo().await;
    let app = app(with_public_paths(KeyAuthLayer::new(demo.store)));
    for header in [
        bearer("ak_nope.nope"),
        "Bearer".to_owned(),
        bearer(&demo.pat),
    ] {
        let reply = send(&app, get_with("/", &[("authorization", &header)])).await;
        assert_eq!(reply.status, StatusCode::OK, "{header}");
        assert_eq!(reply.json()["principal"], serde_json::Value::Null);
    }
}

#[tokio::test]
async fn a_failing_store_does_not_close_public_paths() {
    let app = app(with_public_paths(KeyAuthLayer::new(FailingStore)));
    let token = tower_keyauth::KeyFormat::default()
        .mint(tower_keyauth::ids::KeyKind::Organization, None)
        .unwrap();
    let reply = get_bearer(&app, "/", token.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["principal"], serde_json::Value::Null);
    let reply = get_bearer(&app, "/v1/whoami", token.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_principal_extractor_on_a_public_path_answers_like_the_layer() {
    let demo = demo().await;
    let app = app(with_public_paths(KeyAuthLayer::new(demo.store)).public("/v1/whoami"));
    let reply = send(&app, get_with("/v1/whoami", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
    assert_eq!(reply.challenge().as_deref(), Some(r#"Bearer realm="api""#));

    let reply = send(
        &app,
        get_with("/v1/whoami", &[("authorization", "Bearer ak_x.y")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");

    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_principal_extractor_without_the_layer_is_a_500_naming_it() {
    let app: Router = Router::new()
        .route(
            "/unguarded",
            get(|principal: Principal| async move { principal.org().to_string() }),
        )
        .route(
            "/maybe",
            get(|principal: Option<Principal>| async move { format!("{}", principal.is_some()) }),
        );
    for path in ["/unguarded", "/maybe"] {
        let reply = send(&app, get_with(path, &[])).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(reply.text.contains("KeyAuthLayer"), "{}", reply.text);
    }
}

#[tokio::test]
async fn public_predicates_open_requests_paths_cannot_describe() {
    let app = app(KeyAuthLayer::new(MemoryStore::new())
        .public_when(|method, _uri| method == http::Method::OPTIONS));
    let request = http::Request::options("/v1/echo")
        .body(axum::body::Body::empty())
        .unwrap();
    // OPTIONS is not routed, so axum answers 405; what matters is that it is
    // not 401.
    assert_ne!(send(&app, request).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, get_with("/v1/echo", &[])).await.status,
        StatusCode::UNAUTHORIZED
    );
}
