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

/// Handlers may take the rejection and look at it, as with axum's own
/// extractors: the layer's reason on a public path, none without the layer.
#[tokio::test]
async fn the_principal_rejection_is_a_named_error_type() {
    use axum::response::IntoResponse;
    use tower_keyauth::AuthErrorKind;
    use tower_keyauth::axum::PrincipalRejection;

    async fn describe(
        principal: Result<Principal, PrincipalRejection>,
    ) -> axum::response::Response {
        match principal {
            Ok(principal) => principal.org().to_string().into_response(),
            Err(rejection) => {
                let kind = rejection
                    .auth_error()
                    .map(|error| format!("{:?}", error.kind()));
                let text = format!(
                    "{} {} {:?} {}",
                    rejection.status().as_u16(),
                    rejection.is_not_behind_key_auth(),
                    kind,
                    rejection
                );
                let mut response = rejection.into_response();
                response
                    .headers_mut()
                    .insert("x-described", text.parse().unwrap());
                response
            }
        }
    }
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<PrincipalRejection>();

    let guarded = Router::new()
        .route("/described", get(describe))
        .layer(KeyAuthLayer::new(MemoryStore::new()).public("/described"));
    let reply = send(
        &guarded,
        get_with("/described", &[("authorization", "Bearer ak_x.y")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
    assert_eq!(
        reply.headers["x-described"],
        format!(
            "401 false Some(\"{:?}\") The API key is invalid.",
            AuthErrorKind::InvalidToken
        )
    );

    let unguarded: Router = Router::new().route("/described", get(describe));
    let reply = send(&unguarded, get_with("/described", &[])).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.headers["x-described"],
        "500 true None This route needs a Principal but is not behind KeyAuthLayer."
    );
}

/// What the handler reads is who is calling, nothing of the layer: two
/// principals of the same caller are equal however they were made.
#[tokio::test]
async fn the_principal_is_plain_data() {
    fn plain<T: Clone + PartialEq + Eq + std::fmt::Debug + Send + Sync + 'static>() {}
    plain::<Principal>();
    let demo = demo().await;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Principal>::new()));
    let record = seen.clone();
    let app: Router = Router::new()
        .route(
            "/v1/whoami",
            get(move |principal: Principal| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(principal);
                    "ok"
                }
            }),
        )
        .layer(KeyAuthLayer::new(demo.store.clone()).realm("elsewhere"));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &demo.org_key).await.status,
        StatusCode::OK
    );
    let principal = seen.lock().unwrap().pop().unwrap();
    let by_hand = Principal::new(
        principal.key_id().clone(),
        principal.kind(),
        principal.tenant().clone(),
    )
    .with_scopes(principal.scopes().clone())
    .with_source(principal.source().clone());
    let by_hand = match principal.environment() {
        Some(environment) => by_hand.with_environment(environment),
        None => by_hand,
    };
    assert_eq!(principal, by_hand);
}
