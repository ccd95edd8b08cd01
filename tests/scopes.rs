//! Scopes through a real axum router: `RequireScopes` on routes, the
//! handler-side check, and personal tokens limited by membership.

mod common;

use axum::Router;
use axum::handler::Handler;
use axum::routing::get;
use common::*;
use http::StatusCode;
use tower_keyauth::ids::{OrgId, UserId};
use tower_keyauth::store::Membership;
use tower_keyauth::{
    KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey, Principal, RequireScopes, Scopes,
};

async fn ok() -> &'static str {
    "ok"
}

/// One route per requirement.
fn guarded(store: MemoryStore) -> Router {
    Router::new()
        .route("/read", get(ok.layer(RequireScopes::new("objects.read"))))
        .route("/write", get(ok.layer(RequireScopes::new("objects.write"))))
        .route(
            "/deep",
            get(ok.layer(RequireScopes::new("objects.read.archive"))),
        )
        .route("/wildcard", get(ok.layer(RequireScopes::new("objects.*"))))
        .route("/admin", get(ok.layer(RequireScopes::new("admin"))))
        .route(
            "/both",
            get(ok.layer(RequireScopes::all(["objects.read", "workspaces.read"]))),
        )
        .route("/open", get(ok))
        .layer(KeyAuthLayer::new(store).public("/public-read"))
        .route(
            "/public-read",
            get(ok.layer(RequireScopes::new("objects.read"))),
        )
}

async fn key_with(store: &MemoryStore, scopes: &[&str]) -> String {
    let issued = store
        .issue(NewKey::org("acme").scopes(Scopes::parse(scopes).unwrap()))
        .await
        .unwrap();
    issued.token.expose_secret().to_owned()
}

async fn status_of(app: &Router, path: &str, token: &str) -> StatusCode {
    get_bearer(app, path, token).await.status
}

#[tokio::test]
async fn every_scope_rule_holds_on_routes() {
    let store = MemoryStore::new();
    let full = key_with(&store, &["*"]).await;
    let exact = key_with(&store, &["objects.read"]).await;
    let prefix = key_with(&store, &["objects.*"]).await;
    let two = key_with(&store, &["objects.read", "workspaces.read"]).await;
    let none = key_with(&store, &[]).await;
    let app = guarded(store);

    use StatusCode as S;
    let table: [(&str, &str, [S; 7]); 5] = [
        //                          read    write   deep    wildcard admin  both    open
        (
            "full",
            &full,
            [S::OK, S::OK, S::OK, S::OK, S::OK, S::OK, S::OK],
        ),
        (
            "exact",
            &exact,
            [
                S::OK,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::OK,
            ],
        ),
        (
            "prefix",
            &prefix,
            [
                S::OK,
                S::OK,
                S::OK,
                S::OK,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::OK,
            ],
        ),
        (
            "two",
            &two,
            [
                S::OK,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::OK,
                S::OK,
            ],
        ),
        (
            "none",
            &none,
            [
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::FORBIDDEN,
                S::OK,
            ],
        ),
    ];
    let paths = [
        "/read",
        "/write",
        "/deep",
        "/wildcard",
        "/admin",
        "/both",
        "/open",
    ];
    for (name, token, expected) in table {
        for (path, want) in paths.iter().zip(expected) {
            assert_eq!(
                status_of(&app, path, token).await,
                want,
                "key {name} on {path}"
            );
        }
    }
}

#[tokio::test]
async fn the_refusal_names_every_required_scope() {
    let store = MemoryStore::new();
    let exact = key_with(&store, &["objects.read"]).await;
    let app = guarded(store);
    let reply = get_bearer(&app, "/both", &exact).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "insufficient_scope");
    assert_eq!(
        reply.challenge().as_deref(),
        Some(
            r#"Bearer realm="api", error="insufficient_scope", scope="objects.read workspaces.read""#
        )
    );
    assert_eq!(reply.json()["scope"], "objects.read workspaces.read");
}

#[tokio::test]
async fn without_a_principal_the_route_answers_like_the_key_layer() {
    let app = guarded(MemoryStore::new());
    let reply = send(&app, get_with("/read", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
    // Outside the key layer, a scope check is a server misconfiguration.
    let reply = send(&app, get_with("/public-read", &[])).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.text.contains("KeyAuthLayer"));
}

#[tokio::test]
async fn on_a_public_path_a_scope_check_asks_for_a_credential() {
    let store = MemoryStore::new();
    let exact = key_with(&store, &["objects.read"]).await;
    let app = Router::new()
        .route(
            "/catalog",
            get(ok.layer(RequireScopes::new("objects.read"))),
        )
        .layer(KeyAuthLayer::new(store).public("/catalog"));
    let reply = send(&app, get_with("/catalog", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
    assert_eq!(status_of(&app, "/catalog", &exact).await, StatusCode::OK);
}

#[tokio::test]
async fn handlers_can_check_scopes_themselves() {
    let store = MemoryStore::new();
    let exact = key_with(&store, &["objects.read"]).await;
    let app = Router::new()
        .route(
            "/v1/objects/{id}",
            get(|principal: Principal| async move {
                principal.require_scope("objects.read")?;
                if principal.has_scope("objects.write") {
                    return Ok::<_, tower_keyauth::AuthError>("editable");
                }
                Ok("read-only")
            })
            .delete(|principal: Principal| async move {
                principal.require_scope("objects.write")?;
                Ok::<_, tower_keyauth::AuthError>("deleted")
            }),
        )
        .layer(KeyAuthLayer::new(store).realm("objects"));
    let reply = get_bearer(&app, "/v1/objects/1", &exact).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (StatusCode::OK, "read-only")
    );
    let request = http::Request::delete("/v1/objects/1")
        .header("authorization", bearer(&exact))
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.challenge().as_deref(),
        Some(r#"Bearer realm="objects", error="insufficient_scope", scope="objects.write""#)
    );
}

/// A personal token's scopes are its own scopes within its user's
/// membership.
#[tokio::test]
async fn personal_tokens_get_the_intersection_of_token_and_membership() {
    let store = MemoryStore::new();
    let (ada, acme) = (UserId::from("ada"), OrgId::from("acme"));
    store
        .set_membership(
            &ada,
            &acme,
            Some(Membership::new(
                Scopes::parse(["objects.read", "objects.write"]).unwrap(),
            )),
        )
        .await
        .unwrap();
    let cases: [(&[&str], &[&str]); 4] = [
        (&["*"], &["objects.read", "objects.write"]),
        (&["objects.*"], &["objects.read", "objects.write"]),
        (&["objects.read", "keys.read"], &["objects.read"]),
        (&["billing.read"], &[]),
    ];
    let app = app(KeyAuthLayer::new(store.clone()));
    for (token_scopes, effective) in cases {
        let pat = store
            .issue(NewKey::personal("ada").scopes(Scopes::parse(token_scopes).unwrap()))
            .await
            .unwrap();
        let reply = send(
            &app,
            get_with(
                "/v1/whoami",
                &[
                    ("authorization", &bearer(pat.token.expose_secret())),
                    ("x-org-id", "acme"),
                ],
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json()["scopes"],
            serde_json::json!(effective),
            "token {token_scopes:?}"
        );
    }
}

#[tokio::test]
async fn removing_a_membership_takes_effect_on_the_next_request() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store.clone()));
    assert_eq!(send(&app, demo.pat_whoami()).await.status, StatusCode::OK);
    demo.store
        .set_membership(&UserId::from("ada"), &OrgId::from("acme"), None)
        .await
        .unwrap();
    let reply = send(&app, demo.pat_whoami()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "forbidden");
}

#[tokio::test]
async fn personal_tokens_are_refused_by_stores_without_memberships() {
    // `KeyStore::membership` defaults to "not a member".
    struct KeysOnly(MemoryStore);
    #[async_trait::async_trait]
    impl tower_keyauth::KeyStore for KeysOnly {
        async fn find_key(
            &self,
            id: &tower_keyauth::ids::KeyId,
        ) -> Result<Option<tower_keyauth::store::KeyRecord>, tower_keyauth::store::StoreError>
        {
            self.0.find_key(id).await
        }
    }
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(KeysOnly(demo.store.clone())));
    let reply = send(&app, demo.pat_whoami()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}
