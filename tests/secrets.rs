//! No secret ever shows: a test runs every kind of request and key
//! operation with all `tracing` output captured (down to TRACE), and checks
//! the logs, every response (status line, headers, body) and every `Debug`
//! of a type that holds a secret for each secret, raw and encoded.

mod common;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::handler::Handler;
use axum::routing::get;
use common::*;
use tower_keyauth::hash::Token;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::store::{CachedStore, Owner};
use tower_keyauth::{
    Extract, KeyAuthLayer, KeyFormat, KeyLifecycle, NewKey, Principal, RequireScopes, Scopes,
};

/// Every form in which a token could leak: whole, its secret part, and both
/// percent-encoded (as a query carries them).
fn forms(token: &str) -> Vec<String> {
    let encoded = |text: &str| -> String { text.bytes().map(|b| format!("%{b:02X}")).collect() };
    let secret = token.split_once('.').map_or(token, |(_, secret)| secret);
    vec![
        token.to_owned(),
        secret.to_owned(),
        encoded(token),
        encoded(secret),
    ]
}

fn assert_no_secret(haystack: &str, tokens: &[String], context: &str) {
    for token in tokens {
        for form in forms(token) {
            assert!(
                !haystack.contains(&form),
                "{context} shows a secret ({form}):\n{haystack}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_a_log_a_response_or_a_debug_output() {
    let (captured, _guard) = capture_tracing();

    let demo = demo().await;
    let store = demo.store.clone();
    let revoked = store.issue(NewKey::org("acme")).await.unwrap();
    store.revoke(&revoked.record.id).await.unwrap();
    let expired = store
        .issue(NewKey::org("acme").expires_at(SystemTime::now() - Duration::from_secs(1)))
        .await
        .unwrap();
    let rotated_from = store.issue(NewKey::org("acme")).await.unwrap();
    let rotated_to = store
        .rotate(&rotated_from.record.id, Duration::ZERO)
        .await
        .unwrap();
    // The demo org key's id now holds another secret's hash: presenting the
    // demo org key is a wrong-secret attempt.
    let other_secret = KeyFormat::default()
        .mint(KeyKind::Organization, None)
        .unwrap();
    store.insert(
        tower_keyauth::store::KeyRecord::new(
            demo.org_key_id.clone(),
            other_secret.token.hash(),
            Owner::org("acme"),
        )
        .with_prefix("ak"),
    );
    let forged = other_secret;
    let org = store.issue(NewKey::org("acme")).await.unwrap();
    let unknown = KeyFormat::default()
        .mint(KeyKind::Organization, None)
        .unwrap();

    let mut tokens: Vec<String> = vec![
        demo.org_key.clone(),
        demo.read_key.clone(),
        demo.pat.clone(),
        revoked.token.expose_secret().to_owned(),
        expired.token.expose_secret().to_owned(),
        rotated_from.token.expose_secret().to_owned(),
        rotated_to.token.expose_secret().to_owned(),
        forged.token.expose_secret().to_owned(),
        org.token.expose_secret().to_owned(),
        unknown.token.expose_secret().to_owned(),
    ];

    let app = Router::new()
        .route(
            "/v1/whoami",
            get(|p: Principal| async move { p.org().to_string() }),
        )
        .route(
            "/v1/write",
            get((|| async { "written" }).layer(RequireScopes::new("objects.write"))),
        )
        .route(
            "/open",
            get(|p: Option<Principal>| async move { format!("{}", p.is_some()) }),
        )
        .layer(
            KeyAuthLayer::new(CachedStore::new(store.clone()))
                .extract(Extract::bearer_api_key_or_query())
                .public("/open"),
        );
    let failing =
        common::app(KeyAuthLayer::new(FailingStore).extract(Extract::bearer_api_key_or_query()));

    let mut requests: Vec<(Router, http::Request<axum::body::Body>)> = Vec::new();
    for token in &tokens {
        let encoded: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
        let with_tab = format!("Bearer {}\t", &token[..10]);
        for (path, headers) in [
            (
                "/v1/whoami".to_owned(),
                vec![("authorization", bearer(token))],
            ),
            ("/v1/whoami".to_owned(), vec![("x-api-key", token.clone())]),
            (format!("/v1/whoami?api-key={token}"), vec![]),
            (format!("/v1/whoami?api-key={encoded}"), vec![]),
            (
                format!("/v1/whoami?api-key={token}"),
                vec![("x-api-key", with_typo(token))],
            ),
            (
                "/v1/whoami".to_owned(),
                vec![
                    ("authorization", bearer(token)),
                    ("authorization", bearer(token)),
                ],
            ),
            (
                "/v1/whoami".to_owned(),
                vec![("authorization", format!("{with_tab}{token}"))],
            ),
            (
                "/v1/whoami".to_owned(),
                vec![("authorization", bearer(&with_typo(token)))],
            ),
            (
                "/v1/whoami".to_owned(),
                vec![
                    ("authorization", bearer(token)),
                    ("x-org-id", "acme".into()),
                ],
            ),
            (
                "/v1/whoami".to_owned(),
                vec![
                    ("authorization", bearer(token)),
                    ("x-org-id", "globex".into()),
                ],
            ),
            ("/v1/write".to_owned(), vec![("x-api-key", token.clone())]),
            ("/open".to_owned(), vec![("authorization", bearer(token))]),
            (format!("/open?api-key={token}"), vec![]),
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            requests.push((app.clone(), get_with(&path, &headers)));
            requests.push((failing.clone(), get_with(&path, &headers)));
        }
    }
    let total = requests.len();
    for (router, request) in requests {
        let reply = send(&router, request).await;
        let shown = format!("{} {:?} {}", reply.status, reply.headers, reply.text);
        assert_no_secret(&shown, &tokens, "a response");
    }
    assert!(total > 200);

    // Key operations log too.
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    assert_no_secret(&format!("{listed:?}"), &tokens, "a listing");

    // Every type that holds a secret, or sits next to one.
    let issued = store
        .issue(NewKey::personal("ada").scopes(Scopes::all()))
        .await
        .unwrap();
    tokens.push(issued.token.expose_secret().to_owned());
    let minted = KeyFormat::default().mint(KeyKind::Workspace, None).unwrap();
    tokens.push(minted.token.expose_secret().to_owned());
    let token = Token::new(minted.token.expose_secret());
    let debug = format!(
        "{issued:?} {} {minted:?} {token:?} {token} {:?} {:?} {store:?}",
        issued.token,
        issued.record,
        KeyFormat::default()
            .parse(minted.token.expose_secret())
            .unwrap(),
    );
    assert_no_secret(&debug, &tokens, "a Debug or Display");

    let log = captured.text();
    assert!(
        log.len() > 10_000,
        "the scenarios logged too little to prove anything"
    );
    assert_no_secret(&log, &tokens, "the log");
}
