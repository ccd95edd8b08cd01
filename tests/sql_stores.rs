//! What only the SQL stores do: migrations, and last-used writes in the
//! background that never touch a request. Their PostgreSQL versions are in
//! `tests/postgres.rs`.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use http::StatusCode;
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, NewKey, SqliteStore, StoreOptions};

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.join("keys.db").display())
}

#[tokio::test]
async fn sqlite_migrations_run_once_and_keep_to_their_own_table() {
    let dir = TempDir::new("sqlite-migrations");
    let url = sqlite_url(&dir);
    let first = SqliteStore::connect(&url).await.unwrap();
    let issued = first.issue(NewKey::org("acme")).await.unwrap();
    // A second start, and an explicit migrate, change nothing.
    let second = SqliteStore::connect(&url).await.unwrap();
    SqliteStore::migrate(second.pool()).await.unwrap();
    assert!(second.find_key(&issued.record.id).await.unwrap().is_some());
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keyauth_migrations")
        .fetch_all(second.pool())
        .await
        .unwrap();
    assert_eq!(versions, vec![1]);
    let sqlx_table: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = '_sqlx_migrations'")
            .fetch_optional(second.pool())
            .await
            .unwrap();
    assert_eq!(sqlx_table, None);
}

#[tokio::test]
async fn sqlite_writes_last_used_in_the_background() {
    let dir = TempDir::new("sqlite-background");
    let store = SqliteStore::connect_with(
        &sqlite_url(&dir),
        StoreOptions::default().last_used_interval(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", issued.token.expose_secret())
            .await
            .status,
        StatusCode::OK
    );
    let deadline = SystemTime::now() + Duration::from_secs(5);
    loop {
        let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
        if record.last_used_at.is_some() {
            break;
        }
        assert!(
            SystemTime::now() < deadline,
            "last_used_at was never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failing_last_used_write_never_fails_a_request() {
    let dir = TempDir::new("sqlite-readonly");
    let url = sqlite_url(&dir);
    let writer = SqliteStore::connect(&url).await.unwrap();
    let issued = writer.issue(NewKey::org("acme")).await.unwrap();
    // A second instance that may read but not write.
    let reader = SqliteStore::connect_with(
        &format!("{url}?mode=ro"),
        StoreOptions::default().last_used_interval(Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let app = app(KeyAuthLayer::new(reader.clone()));
    for _ in 0..3 {
        let reply = get_bearer(&app, "/v1/whoami", issued.token.expose_secret()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // The write itself does fail; only the request path is spared.
    let reply = get_bearer(&app, "/v1/whoami", issued.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        writer
            .find_key(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        None
    );
}
