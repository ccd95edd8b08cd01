//! Where credentials are found, through a real axum router: schemes,
//! headers, the query fallback, and custom sources.

mod common;

use std::borrow::Cow;

use common::*;
use http::StatusCode;
use http::request::Parts;
use tower_keyauth::extract::ExtractCredential;
use tower_keyauth::{AuthError, Extract, KeyAuthLayer};

fn encode_every_byte(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_tolerates_spaces() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    for scheme in ["Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer     "] {
        let header = format!("{scheme}{}", demo.org_key);
        let reply = send(&app, get_with("/v1/whoami", &[("authorization", &header)])).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme:?}: {}", reply.text);
    }
}

#[tokio::test]
async fn other_authorization_schemes_count_as_no_credential() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = send(
        &app,
        get_with("/v1/whoami", &[("authorization", "Basic dXNlcjpwYXNz")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
}

#[tokio::test]
async fn bearer_only_ignores_the_api_key_header() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store));
    let reply = send(
        &app,
        get_with("/v1/whoami", &[("x-api-key", &demo.org_key)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
}

#[tokio::test]
async fn the_api_key_header_works_in_any_casing() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_or_api_key()));
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key"] {
        let reply = send(&app, get_with("/v1/whoami", &[(name, &demo.org_key)])).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.json()["source"], "header:x-api-key");
    }
}

#[tokio::test]
async fn the_same_token_in_header_and_bearer_is_accepted_as_bearer() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_or_api_key()));
    let reply = send(
        &app,
        get_with(
            "/v1/whoami",
            &[
                ("authorization", &bearer(&demo.org_key)),
                ("x-api-key", &demo.org_key),
            ],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["source"], "bearer");
}

#[tokio::test]
async fn header_and_query_names_are_configurable() {
    let demo = demo().await;
    let app = app(
        KeyAuthLayer::new(demo.store).extract(Extract::header("x-service-key").or_query("key"))
    );
    let reply = send(
        &app,
        get_with("/v1/whoami", &[("x-service-key", &demo.org_key)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(
        &app,
        get_with(&format!("/v1/whoami?key={}", demo.org_key), &[]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["source"], "query:key");
    // Bearer is not part of this policy.
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn query_keys_are_percent_decoded() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_api_key_or_query()));
    let plain = format!("/v1/whoami?api-key={}", demo.org_key);
    let encoded = format!("/v1/whoami?api-key={}", encode_every_byte(&demo.org_key));
    let encoded_name = format!("/v1/whoami?api%2Dkey={}", demo.org_key);
    for uri in [plain, encoded, encoded_name] {
        let reply = send(&app, get_with(&uri, &[])).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text);
        assert_eq!(reply.json()["source"], "query:api-key");
    }
    // Encoded twice is decoded once only: `%25` stays a `%`, which no key has.
    let twice = format!(
        "/v1/whoami?api-key={}",
        encode_every_byte(&encode_every_byte(&demo.org_key))
    );
    let reply = send(&app, get_with(&twice, &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_token");
}

#[tokio::test]
async fn query_credentials_never_reach_the_inner_service() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_api_key_or_query()));
    let uri = format!(
        "/v1/echo?b=2&api-key={}&a=1&z=%20x&b=3",
        encode_every_byte(&demo.org_key)
    );
    let reply = send(&app, get_with(&uri, &[])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["uri"], "/v1/echo?b=2&a=1&z=%20x&b=3");

    let only = format!("/v1/echo?api-key={}", demo.org_key);
    let reply = send(&app, get_with(&only, &[])).await;
    assert_eq!(reply.json()["uri"], "/v1/echo");
}

#[tokio::test]
async fn query_credentials_are_removed_on_public_paths_too() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store)
        .extract(Extract::bearer_api_key_or_query())
        .public("/v1/echo"));
    let reply = send(&app, get_with("/v1/echo?api-key=garbage&x=1", &[])).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["uri"], "/v1/echo?x=1");
}

#[tokio::test]
async fn a_query_key_and_a_different_header_key_are_400() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_api_key_or_query()));
    let uri = format!("/v1/whoami?api-key={}", demo.read_key);
    let reply = send(&app, get_with(&uri, &[("x-api-key", &demo.org_key)])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error(), "invalid_request");
    let uri = format!(
        "/v1/whoami?api-key={}&api-key={}",
        demo.org_key, demo.org_key
    );
    let reply = send(&app, get_with(&uri, &[])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_query_is_ignored_unless_the_policy_asks_for_it() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::bearer_or_api_key()));
    let uri = format!("/v1/whoami?api-key={}", demo.org_key);
    let reply = send(&app, get_with(&uri, &[])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "missing_credentials");
}

#[tokio::test]
async fn hidden_credentials_do_not_reach_the_inner_service() {
    let demo = demo().await;
    let shown = app(KeyAuthLayer::new(demo.store.clone()).extract(Extract::bearer_or_api_key()));
    let hidden = app(KeyAuthLayer::new(demo.store)
        .extract(Extract::bearer_or_api_key())
        .hide_credentials(true));
    let headers = [
        ("authorization", bearer(&demo.org_key)),
        ("x-api-key", demo.org_key.clone()),
        ("accept", "text/plain".into()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();

    let reply = send(&shown, get_with("/v1/echo", &headers)).await;
    assert_eq!(reply.json()["headers"]["x-api-key"], demo.org_key.as_str());

    let reply = send(&hidden, get_with("/v1/echo", &headers)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = &reply.json()["headers"];
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(seen.get("x-api-key").is_none(), "{seen}");
    assert_eq!(seen["accept"], "text/plain");
}

/// `Authorization: Token <key>`.
struct TokenScheme;

impl ExtractCredential for TokenScheme {
    fn label(&self) -> &str {
        "token-scheme"
    }

    fn extract<'a>(&self, request: &'a Parts) -> Result<Option<Cow<'a, str>>, AuthError> {
        let Some(value) = request.headers.get("authorization") else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| AuthError::invalid_request("not ASCII"))?;
        Ok(value.strip_prefix("Token ").map(Cow::Borrowed))
    }

    fn hide(&self, request: &mut Parts) {
        request.headers.remove("authorization");
    }
}

#[tokio::test]
async fn custom_sources_plug_in() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store).extract(Extract::custom(TokenScheme).or_bearer()));
    let reply = send(
        &app,
        get_with(
            "/v1/whoami",
            &[("authorization", &format!("Token {}", demo.org_key))],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["source"], "custom:token-scheme");
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.json()["source"], "bearer");
    // What a custom source returns is held to the same syntax rules.
    let reply = send(
        &app,
        get_with("/v1/whoami", &[("authorization", "Token a b")]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}
