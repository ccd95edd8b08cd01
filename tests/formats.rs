//! Key formats through the layer: custom prefixes with environments, and
//! opaque legacy keys.

mod common;

use common::*;
use http::StatusCode;
use tower_keyauth::format::Environment;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::store::{KeyRecord, Owner};
use tower_keyauth::{KeyAuthLayer, KeyFormat, KeyLifecycle, MemoryStore, NewKey};

fn andi_format() -> KeyFormat {
    KeyFormat::new()
        .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
        .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test)
}

#[tokio::test]
async fn environment_prefixes_reach_the_principal() {
    let store = MemoryStore::with_format(andi_format());
    let live = store
        .issue(NewKey::workspace("acme", "prod").environment(Environment::Live))
        .await
        .unwrap();
    let test = store
        .issue(NewKey::workspace("acme", "sandbox").environment(Environment::Test))
        .await
        .unwrap();
    assert!(live.token.expose_secret().starts_with("andi_live_"));
    assert!(test.token.expose_secret().starts_with("andi_test_"));

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new()
        .route(
            "/v1/env",
            axum::routing::get(move |principal: tower_keyauth::Principal| {
                record.lock().unwrap().push(principal.environment());
                async { "ok" }
            }),
        )
        .layer(KeyAuthLayer::new(store).format(andi_format()));
    for token in [&live.token, &test.token] {
        let reply = get_bearer(&app, "/v1/env", token.expose_secret()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(Environment::Live), Some(Environment::Test)]
    );
}

#[tokio::test]
async fn a_format_without_the_prefix_refuses_the_key_before_the_store() {
    let store = MemoryStore::with_format(andi_format());
    let live = store
        .issue(NewKey::workspace("acme", "prod").environment(Environment::Live))
        .await
        .unwrap();
    let counting = CountingStore::new(store);
    // The layer still expects the default `ak`/`pat` prefixes.
    let app = app(KeyAuthLayer::from_shared_store(counting.clone()));
    let reply = get_bearer(&app, "/v1/whoami", live.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
    assert_eq!(counting.finds(), 0);
}

#[tokio::test]
async fn a_key_presented_under_the_wrong_kind_of_prefix_is_invalid() {
    // A record whose owner is a user (personal token) but whose token uses
    // the org-key prefix: the prefix promises a kind the record is not.
    let format = KeyFormat::default();
    let minted = format.mint(KeyKind::Organization, None).unwrap();
    let store = MemoryStore::new();
    store.insert(KeyRecord::new(
        minted.id.clone(),
        minted.token.hash(),
        Owner::user("ada"),
    ));
    let app = app(KeyAuthLayer::new(store));
    let reply = send(
        &app,
        get_with(
            "/v1/whoami",
            &[
                ("authorization", &bearer(minted.token.expose_secret())),
                ("x-org-id", "acme"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
}

#[tokio::test]
async fn opaque_legacy_keys_are_found_by_hash_when_enabled() {
    let legacy = "sk-legacy-4f9a0c2b7e1d8a3f5c6b";
    let store = MemoryStore::new();
    store.insert(KeyRecord::for_opaque_token(
        KeyHash::of(legacy),
        Owner::org("acme"),
    ));

    let strict = app(KeyAuthLayer::new(store.clone()));
    let reply = send(
        &strict,
        get_with("/v1/whoami", &[("authorization", &bearer(legacy))]),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "opaque keys are off by default"
    );

    let lenient = app(KeyAuthLayer::new(store).format(KeyFormat::default().accept_opaque()));
    let reply = send(
        &lenient,
        get_with("/v1/whoami", &[("authorization", &bearer(legacy))]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let who = reply.json();
    assert_eq!(who["org"], "acme");
    assert!(who["key_id"].as_str().unwrap().starts_with("opaque-"));
    assert!(!reply.text.contains(legacy));

    let reply = send(
        &lenient,
        get_with(
            "/v1/whoami",
            &[("authorization", &bearer("sk-legacy-wrong"))],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
}
