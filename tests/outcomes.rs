//! Every row of the outcome table of DESIGN.md, through a real axum router.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use http::StatusCode;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::store::{KeyRecord, Owner};
use tower_keyauth::{Extract, KeyAuthLayer, KeyFormat, KeyLifecycle, MemoryStore, NewKey, Scopes};

const REALM_CHALLENGE: &str = r#"Bearer realm="api""#;
const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer realm="api", error="invalid_token""#;
const INVALID_REQUEST_CHALLENGE: &str = r#"Bearer realm="api", error="invalid_request""#;

#[tokio::test]
async fn no_credential_is_401_with_a_bare_challenge() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = send(&app, get_with("/v1/whoami", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge().as_deref(), Some(REALM_CHALLENGE));
    assert_eq!(reply.error(), "missing_credentials");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("API key")
    );
    assert_eq!(reply.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_valid_org_key_reaches_the_handler_with_its_principal() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let who = reply.json();
    assert_eq!(who["key_id"], demo.org_key_id.as_str());
    assert_eq!(who["kind"], "organization");
    assert_eq!(who["org"], "acme");
    assert_eq!(who["workspace"], serde_json::Value::Null);
    assert_eq!(who["user"], serde_json::Value::Null);
    assert_eq!(who["scopes"], serde_json::json!(["*"]));
    assert_eq!(who["source"], "bearer");
}

#[tokio::test]
async fn a_workspace_key_names_org_and_workspace() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = get_bearer(&app, "/v1/whoami", &demo.read_key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let who = reply.json();
    assert_eq!(who["kind"], "workspace");
    assert_eq!(who["org"], "acme");
    assert_eq!(who["workspace"], "docs");
    assert_eq!(who["scopes"], serde_json::json!(["objects.read"]));
}

#[tokio::test]
async fn malformed_credentials_are_400_invalid_request() {
    let demo = demo().await;
    let store = CountingStore::new(demo.store.clone());
    let app =
        app(KeyAuthLayer::from_shared_store(store.clone())
            .extract(Extract::bearer_api_key_or_query()));
    let long = format!("Bearer ak_{}", "a".repeat(10 * 1024));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("empty token", vec![("authorization", "Bearer ".into())]),
        ("Bearer alone", vec![("authorization", "Bearer".into())]),
        (
            "tab inside",
            vec![("authorization", "Bearer ak_\tx".into())],
        ),
        (
            "tab as separator",
            vec![("authorization", format!("Bearer\t{}", demo.org_key))],
        ),
        (
            "space inside",
            vec![("authorization", format!("Bearer {} extra", demo.org_key))],
        ),
        ("10 KB header", vec![("authorization", long)]),
        ("empty x-api-key", vec![("x-api-key", "".into())]),
        (
            "two different credentials",
            vec![
                ("authorization", bearer(&demo.org_key)),
                ("x-api-key", demo.read_key.clone()),
            ],
        ),
        (
            "repeated Authorization",
            vec![
                ("authorization", bearer(&demo.org_key)),
                ("authorization", bearer(&demo.org_key)),
            ],
        ),
        (
            "repeated x-api-key",
            vec![
                ("x-api-key", demo.org_key.clone()),
                ("X-API-KEY", demo.org_key.clone()),
            ],
        ),
    ];
    for (case, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = send(&app, get_with("/v1/whoami", &headers)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{case}: {}",
            reply.text
        );
        assert_eq!(reply.error(), "invalid_request", "{case}");
        assert_eq!(
            reply.challenge().as_deref(),
            Some(INVALID_REQUEST_CHALLENGE),
            "{case}"
        );
        assert!(!reply.text.contains(&demo.org_key), "{case} echoed the key");
    }
    assert_eq!(
        store.finds(),
        0,
        "malformed credentials must not reach the store"
    );
}

#[tokio::test]
async fn non_ascii_and_high_bytes_are_400() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_or_api_key()));
    let values: [&[u8]; 3] = [
        "Bearer ak_caf\u{e9}.x".as_bytes(),
        b"Bearer ak_\xff\xfe",
        b"Bearer \x80",
    ];
    for value in values {
        let request = http::Request::get("/v1/whoami")
            .header(
                "authorization",
                http::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{value:?}");
        assert_eq!(reply.error(), "invalid_request");
    }
    let request = http::Request::get("/v1/whoami")
        .header(
            "x-api-key",
            http::HeaderValue::from_bytes("ak_\u{430}bc".as_bytes()).unwrap(),
        )
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::BAD_REQUEST);
}

/// Wrong format, bad checksum, unknown id and wrong secret must be
/// indistinguishable: same status, challenge and body.
#[tokio::test]
async fn the_four_invalid_token_cases_answer_identically() {
    let format = KeyFormat::default();
    let known = format.mint(KeyKind::Organization, None).unwrap();
    let other = format.mint(KeyKind::Organization, None).unwrap();
    let store = MemoryStore::new();
    // The stored hash belongs to another secret: presenting `known` is a
    // known id with a wrong secret.
    store.insert(
        KeyRecord::new(known.id.clone(), other.token.hash(), Owner::org("acme")).with_prefix("ak"),
    );
    let unknown = format.mint(KeyKind::Organization, None).unwrap();
    let good = known.token.expose_secret();
    let bad_checksum = format!(
        "{}{}",
        &good[..good.len() - 1],
        if good.ends_with('A') { 'B' } else { 'A' }
    );

    let counting = CountingStore::new(store);
    let app = app(KeyAuthLayer::from_shared_store(counting.clone()));
    let cases = [
        ("wrong format", "sk_live_abcdef".to_owned(), 0),
        ("bad checksum", bad_checksum, 0),
        ("unknown id", unknown.token.expose_secret().to_owned(), 1),
        ("wrong secret", good.to_owned(), 1),
    ];
    let mut replies = Vec::new();
    for (case, token, store_calls) in cases {
        let before = counting.finds();
        let reply = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(
            counting.finds() - before,
            store_calls,
            "{case}: store calls"
        );
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(reply.error(), "invalid_token", "{case}");
        assert_eq!(
            reply.challenge().as_deref(),
            Some(INVALID_TOKEN_CHALLENGE),
            "{case}"
        );
        replies.push((reply.status, reply.challenge(), reply.text));
    }
    assert!(
        replies.windows(2).all(|pair| pair[0] == pair[1]),
        "{replies:#?}"
    );
}

#[tokio::test]
async fn a_wrong_checksum_never_reaches_the_store() {
    let demo = demo().await;
    let counting = CountingStore::new(demo.store.clone());
    let app = app(KeyAuthLayer::from_shared_store(counting.clone()));
    let key = &demo.org_key;
    for position in [3, key.len() / 2, key.len() - 1] {
        let mut bytes = key.clone().into_bytes();
        bytes[position] = if bytes[position] == b'z' { b'y' } else { b'z' };
        let typo = String::from_utf8(bytes).unwrap();
        let reply = get_bearer(&app, "/v1/whoami", &typo).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error(), "invalid_token");
    }
    assert_eq!(counting.finds(), 0);
    // The untouched key does reach it.
    let reply = get_bearer(&app, "/v1/whoami", key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counting.finds(), 1);
}

#[tokio::test]
async fn revoked_and_expired_keys_say_so_only_after_the_secret_matched() {
    let store = MemoryStore::new();
    let revoked = store.issue(NewKey::org("acme")).await.unwrap();
    store.revoke(&revoked.record.id).await.unwrap();
    let expired = store
        .issue(NewKey::org("acme").expires_at(SystemTime::now() - Duration::from_secs(1)))
        .await
        .unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));

    for (token, word) in [(&revoked.token, "revoked"), (&expired.token, "expired")] {
        let reply = get_bearer(&app, "/v1/whoami", token.expose_secret()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.error(), "invalid_token");
        let challenge = reply.challenge().unwrap();
        assert!(
            challenge.starts_with(INVALID_TOKEN_CHALLENGE),
            "{challenge}"
        );
        assert!(
            challenge.contains("error_description=") && challenge.contains(word),
            "{challenge}"
        );
        assert!(reply.json()["message"].as_str().unwrap().contains(word));
    }

    // The same revoked id with a wrong secret learns nothing more.
    let stranger = KeyFormat::default()
        .mint(KeyKind::Organization, None)
        .unwrap();
    store.insert(
        KeyRecord::new(
            stranger.id.clone(),
            KeyFormat::default()
                .mint(KeyKind::Organization, None)
                .unwrap()
                .token
                .hash(),
            Owner::org("acme"),
        )
        .with_revoked_at(SystemTime::now()),
    );
    let reply = get_bearer(&app, "/v1/whoami", stranger.token.expose_secret()).await;
    assert_eq!(reply.challenge().as_deref(), Some(INVALID_TOKEN_CHALLENGE));
    assert!(!reply.text.contains("revoked"));
}

#[tokio::test]
async fn a_key_that_expires_later_still_works() {
    let store = MemoryStore::new();
    let key = store
        .issue(NewKey::org("acme").expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    let app = app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", key.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store.clone()));
    let request = || get_with("/v1/whoami", &[("authorization", &bearer(&demo.org_key))]);
    assert_eq!(send(&app, request()).await.status, StatusCode::OK);
    demo.store.revoke(&demo.org_key_id).await.unwrap();
    assert_eq!(send(&app, request()).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_personal_token_without_org_header_is_missing_organization() {
    let demo = demo().await;
    let default = app(KeyAuthLayer::new(demo.store.clone()));
    let reply = get_bearer(&default, "/v1/whoami", &demo.pat).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_organization");
    assert_eq!(
        reply.json()["message"],
        "Token is missing organization claim."
    );
    assert_eq!(
        reply.challenge().as_deref(),
        Some(INVALID_REQUEST_CHALLENGE)
    );
    assert_eq!(reply.json()["org_header"], "x-org-id");

    // The body names the header the layer is configured with.
    let named = app(KeyAuthLayer::new(demo.store.clone()).org_header("x-anyreach-org"));
    let reply = get_bearer(&named, "/v1/whoami", &demo.pat).await;
    assert_eq!(reply.error(), "missing_organization");
    assert_eq!(reply.json()["org_header"], "x-anyreach-org");
}

/// The message of a 401 `missing_credentials` refusal, after checking that
/// it keeps the bare RFC 6750 challenge and never repeats `secret`.
fn missing_credentials_message(reply: &Reply, secret: &str) -> String {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(reply.challenge().as_deref(), Some(REALM_CHALLENGE));
    assert_eq!(reply.error(), "missing_credentials");
    assert!(!reply.text.contains(secret), "{}", reply.text);
    reply.json()["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn refusals_for_a_credential_sent_the_wrong_way_say_how_to_send_it() {
    let demo = demo().await;
    let key = demo.org_key.as_str();
    let secret = key.split_once('.').unwrap().1;
    let bearer_only = app(KeyAuthLayer::new(demo.store.clone()));
    let ask = |app: &axum::Router, value: String| {
        let app = app.clone();
        async move { send(&app, get_with("/v1/whoami", &[("authorization", &value)])).await }
    };
    let how = "Send the key as `Authorization: Bearer <key>`.";

    let reply = send(&bearer_only, get_with("/v1/whoami", &[])).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        format!("An API key is required. {how}")
    );
    let reply = ask(&bearer_only, key.to_owned()).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        format!("The Authorization header has no scheme. {how}")
    );
    let reply = ask(&bearer_only, format!("Token {key}")).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        format!("The Token scheme is not accepted. {how}")
    );
    let reply = ask(&bearer_only, "Basic dXNlcjpwYXNz".to_owned()).await;
    assert_eq!(
        missing_credentials_message(&reply, "dXNlcjpwYXNz"),
        format!("Basic credentials are not accepted. {how}")
    );
    let reply = ask(&bearer_only, format!("ApiKey {key}")).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        format!("Only the Bearer scheme is accepted in the Authorization header. {how}")
    );

    // The advice follows the configured policy and names.
    let all =
        app(KeyAuthLayer::new(demo.store.clone()).extract(Extract::bearer_api_key_or_query()));
    let reply = ask(&all, format!("Token {key}")).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        "The Token scheme is not accepted. Send the key as `Authorization: Bearer <key>`, \
         in the `x-api-key` header, or in the `api-key` query parameter."
    );
    let header_only =
        app(KeyAuthLayer::new(demo.store.clone()).extract(Extract::header("x-service-key")));
    let reply = ask(&header_only, format!("Bearer {key}")).await;
    assert_eq!(
        missing_credentials_message(&reply, secret),
        "The Authorization header is not read here. Send the key in the `x-service-key` header."
    );
}

#[tokio::test]
async fn a_personal_token_acts_for_an_org_its_user_belongs_to() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store.clone()));
    let reply = send(&app, demo.pat_whoami()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let who = reply.json();
    assert_eq!(who["kind"], "personal");
    assert_eq!(who["org"], "acme");
    assert_eq!(who["user"], "ada");
    assert_eq!(
        who["scopes"],
        serde_json::json!(["objects.read", "objects.write"])
    );
}

#[tokio::test]
async fn foreign_organizations_are_403_without_challenge() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    for token in [&demo.pat, &demo.org_key, &demo.read_key] {
        let reply = send(
            &app,
            get_with(
                "/v1/whoami",
                &[("authorization", &bearer(token)), ("x-org-id", "globex")],
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.error(), "forbidden");
        assert_eq!(reply.challenge(), None);
    }
    // Naming the key's own organization is fine.
    let reply = send(
        &app,
        get_with(
            "/v1/whoami",
            &[
                ("authorization", &bearer(&demo.org_key)),
                ("x-org-id", "acme"),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_missing_scope_is_403_insufficient_scope() {
    let demo = demo().await;
    let app = axum::Router::new()
        .route(
            "/v1/objects",
            axum::routing::post(|principal: tower_keyauth::Principal| async move {
                principal.require_scope("objects.write")?;
                Ok::<_, tower_keyauth::AuthError>("created")
            }),
        )
        .layer(KeyAuthLayer::new(demo.store));
    let request = http::Request::post("/v1/objects")
        .header("authorization", bearer(&demo.read_key))
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "insufficient_scope");
    assert_eq!(
        reply.challenge().as_deref(),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="objects.write""#)
    );
}

#[tokio::test]
async fn a_failing_store_is_503_and_never_passes() {
    let app = app(KeyAuthLayer::new(FailingStore));
    let token = KeyFormat::default()
        .mint(KeyKind::Organization, None)
        .unwrap();
    let reply = get_bearer(&app, "/v1/whoami", token.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "unavailable");
    assert_eq!(reply.challenge(), None);
    assert!(
        !reply.text.contains("connection refused"),
        "backend details leaked: {}",
        reply.text
    );
}

#[tokio::test]
async fn a_failing_membership_lookup_is_503() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(MembershipDown(demo.store.clone())));
    let reply = send(&app, demo.pat_whoami()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "unavailable");
}

#[tokio::test]
async fn unknown_routes_are_authenticated_before_they_are_404() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = send(&app, get_with("/v1/nowhere", &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = get_bearer(&app, "/v1/nowhere", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_realm_is_configurable() {
    let app = app(KeyAuthLayer::new(MemoryStore::new()).realm("example.com"));
    let reply = send(&app, get_with("/v1/whoami", &[])).await;
    assert_eq!(
        reply.challenge().as_deref(),
        Some(r#"Bearer realm="example.com""#)
    );
}

#[tokio::test]
async fn keys_with_scopes_keep_them_on_the_principal() {
    let store = MemoryStore::new();
    let key = store
        .issue(NewKey::org("acme").scopes(Scopes::parse(["objects.*", "keys.read"]).unwrap()))
        .await
        .unwrap();
    let app = app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", key.token.expose_secret()).await;
    assert_eq!(
        reply.json()["scopes"],
        serde_json::json!(["keys.read", "objects.*"])
    );
}
