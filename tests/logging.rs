//! What the layer logs: one event per outcome with the key id, a warning for
//! query credentials, and never a secret.

mod common;

use common::*;
use tower_keyauth::{Extract, KeyAuthLayer, KeyLifecycle};

#[tokio::test(flavor = "current_thread")]
async fn outcomes_are_logged_with_the_key_id_and_never_the_secret() {
    let (captured, _guard) = capture_tracing();
    let demo = demo().await;
    let app =
        app(KeyAuthLayer::new(demo.store.clone()).extract(Extract::bearer_api_key_or_query()));
    let id = demo.org_key_id.to_string();
    let secret = demo.org_key.split_once('.').unwrap().1.to_owned();

    get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    let accepted = captured.text();
    assert!(
        accepted.contains("credential accepted") && accepted.contains(&id),
        "{accepted}"
    );

    let wrong_secret = format!(
        "{}.{}",
        demo.org_key.split_once('.').unwrap().0,
        "x".repeat(28)
    );
    get_bearer(&app, "/v1/whoami", &wrong_secret).await;
    send(
        &app,
        get_with(&format!("/v1/whoami?api-key={}", demo.org_key), &[]),
    )
    .await;
    demo.store.revoke(&demo.org_key_id).await.unwrap();
    send(
        &app,
        get_with("/v1/whoami", &[("x-api-key", &demo.org_key)]),
    )
    .await;
    get_bearer(&app, "/v1/whoami", &demo.pat).await;
    send(&app, get_with("/v1/whoami", &[])).await;

    let log = captured.text();
    assert!(
        log.contains("WARN") && log.contains("query"),
        "no warning for the query credential:\n{log}"
    );
    assert!(
        log.contains(r#"outcome="revoked""#) && log.contains(&id),
        "{log}"
    );
    assert!(log.contains(r#"outcome="missing_organization""#), "{log}");
    assert!(log.contains(r#"outcome="missing_credentials""#), "{log}");
    assert!(log.contains(r#"outcome="invalid_token""#), "{log}");
    for leaked in [&secret, &demo.org_key, &demo.pat, &demo.read_key] {
        assert!(
            !log.contains(leaked.as_str()),
            "a secret reached the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn store_failures_are_logged_as_errors() {
    let (captured, _guard) = capture_tracing();
    let app = app(KeyAuthLayer::new(FailingStore));
    let token = tower_keyauth::KeyFormat::default()
        .mint(tower_keyauth::ids::KeyKind::Organization, None)
        .unwrap();
    get_bearer(&app, "/v1/whoami", token.token.expose_secret()).await;
    let log = captured.text();
    assert!(
        log.contains("ERROR") && log.contains("connection refused"),
        "{log}"
    );
    assert!(log.contains(token.id.as_str()));
    assert!(!log.contains(token.token.expose_secret()));
}
