//! What only the SQL stores do: migrations, last-used writes in the
//! background that never touch a request, corrupt limits lineages refused,
//! and the documented bound on how long a cached SQLite instance accepts a
//! key another one revoked. Their PostgreSQL versions are in
//! `tests/postgres.rs`.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use http::StatusCode;
use tower_keyauth::limit::{RateLimit, UsageLimits};
use tower_keyauth::store::{CacheOptions, CachedStore, SqliteStore, StoreOptions};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, NewKey};

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.join("keys.db").display())
}

/// The set-up the README and the quickstart use: `CachedStore` in front of
/// `SqliteStore`. SQLite cannot announce changes, so two processes sharing
/// one file (here two stores with their own pools and caches) learn of each
/// other's revocations within the positive TTL, and the one that revoked at
/// once. The TTL passes on tokio's paused clock (`advance`), not by waiting;
/// the clock runs whenever SQLite is queried, because a paused clock jumps
/// ahead while the runtime waits for SQLite's worker thread and fires the
/// pool's timeouts.
#[tokio::test]
async fn a_cached_sqlite_instance_refuses_a_key_revoked_by_another_once_its_ttl_has_passed() {
    let dir = TempDir::new("sqlite-cached-revocation");
    let url = sqlite_url(&dir);
    let ttl = CacheOptions::default().positive_ttl;
    assert_eq!(ttl, Duration::from_secs(30), "the bound the docs state");
    // Aged on tokio's clock, which the test pauses and advances below.
    let cached =
        |store| CachedStore::with_options(store, CacheOptions::default().clock(tokio_clock()));
    let first = cached(SqliteStore::connect(&url).await.unwrap());
    let second = cached(SqliteStore::connect(&url).await.unwrap());
    let issued = first.issue(NewKey::org("acme")).await.unwrap();
    let token = issued.token.expose_secret();
    let on_first = app(KeyAuthLayer::new(first.clone()));
    let on_second = app(KeyAuthLayer::new(second.clone()));
    for app in [&on_first, &on_second] {
        assert_eq!(
            get_bearer(app, "/v1/whoami", token).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(second.cached_keys(), 1);

    first.revoke(&issued.record.id).await.unwrap();
    // The instance that revoked refuses on the next request.
    assert_eq!(
        get_bearer(&on_first, "/v1/whoami", token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The other still answers from its cache until the TTL runs out (that
    // is what the bound means; with time paused, it does: a hit makes no
    // query)...
    tokio::time::pause();
    assert_eq!(
        get_bearer(&on_second, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    // ...and refuses from then on, every time.
    tokio::time::advance(ttl).await;
    tokio::time::resume();
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&on_second, "/v1/whoami", token).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
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
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    // Migration 3 replaced the indexes of version 1 by the owner indexes.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master
         WHERE type = 'index' AND tbl_name = 'keyauth_keys' AND sql IS NOT NULL
         ORDER BY name",
    )
    .fetch_all(second.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        ["keyauth_keys_by_org_owner", "keyauth_keys_by_user_owner"]
    );
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
    // An interval the background writer never reaches in this test: the
    // test writes, and moves the layer's clock to the next window.
    let reader = SqliteStore::connect_with(
        &format!("{url}?mode=ro"),
        StoreOptions::default().last_used_interval(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let clock = TestClock::new();
    let app = app(KeyAuthLayer::new(reader.clone()).clock(clock.clone()));
    for _ in 0..3 {
        let reply = get_bearer(&app, "/v1/whoami", issued.token.expose_secret()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        // The write itself does fail; only the request path is spared.
        assert!(
            reader.flush_last_used().await.is_err(),
            "the reader may not write"
        );
        clock.advance(Duration::from_secs(61));
    }
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

#[tokio::test]
async fn sqlite_refuses_a_record_beyond_the_scope_bound_only_for_its_own_token() {
    let dir = TempDir::new("sqlite-corrupt");
    let store = SqliteStore::connect(&sqlite_url(&dir)).await.unwrap();
    let pool = store.pool().clone();
    a_record_beyond_the_scope_bound_is_corrupt(store, |tamper, id| {
        let pool = pool.clone();
        async move {
            let max = tower_keyauth::Scopes::MAX_COUNT;
            let (sql, value): (&str, Vec<u8>) = match tamper {
                Tamper::TooManyScopes => ("scopes", scope_names(max + 1).join(" ").into()),
                Tamper::OneOverlongScope => ("scopes", vec![b'x'; 10 << 20]),
                Tamper::ScopesAtTheBound => ("scopes", scope_names(max).join(" ").into()),
                Tamper::WrongHash => ("hash", vec![7; 32]),
            };
            let statement = format!("UPDATE keyauth_keys SET {sql} = ?1 WHERE id = ?2");
            let query = sqlx::query(sqlx::AssertSqlSafe(statement));
            let query = match sql {
                "hash" => query.bind(value),
                _ => query.bind(String::from_utf8(value).unwrap()),
            };
            query.bind(id.as_str()).execute(&pool).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn sqlite_migration_2_turns_a_stored_grace_period_into_a_grace_end() {
    let dir = TempDir::new("sqlite-migration-2");
    let url = sqlite_url(&dir);
    // A database as version 1 left it: a grace period was a revocation time
    // in the future.
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::raw_sql(include_str!(
        "../migrations/sqlite/0001_keys_and_memberships.sql"
    ))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE keyauth_migrations (version INTEGER PRIMARY KEY NOT NULL,
             description TEXT NOT NULL, applied_at INTEGER NOT NULL);
         INSERT INTO keyauth_migrations VALUES (1, 'keys and memberships', 0);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let micros = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    let in_grace = SystemTime::now() + Duration::from_secs(3600);
    let revoked = SystemTime::now() - Duration::from_secs(3600);
    for (id, revoked_at) in [("ingrace00001", in_grace), ("revoked00001", revoked)] {
        sqlx::query(
            "INSERT INTO keyauth_keys (id, hash, owner_kind, org_id, scopes, created_at, revoked_at)
             VALUES (?1, ?2, 'organization', 'acme', '*', 0, ?3)",
        )
        .bind(id)
        .bind([1u8; 32].as_slice())
        .bind(micros(revoked_at))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let store = SqliteStore::connect(&url).await.unwrap();
    let in_grace_record = store
        .find_key(&"ingrace00001".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(in_grace_record.revoked_at, None);
    assert_eq!(
        in_grace_record.grace_ends_at.map(micros),
        Some(micros(in_grace))
    );
    let revoked_record = store
        .find_key(&"revoked00001".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked_record.revoked_at.map(micros), Some(micros(revoked)));
    assert_eq!(revoked_record.grace_ends_at, None);
}

/// A key whose stored limits lineage (the first key of its rotation chain,
/// migration 7) is not a key id, written behind the store's back, is a
/// corrupt record, as corrupt rate limits are: its own token gets 503
/// `unavailable` (fail closed: never let through, never counted under
/// another id), the log says why, and neither the log nor the body holds
/// the secret. The rest of the chain is unaffected, and the key is served
/// again once its lineage is a key id.
#[tokio::test]
async fn sqlite_refuses_a_key_whose_lineage_is_not_a_key_id() {
    let dir = TempDir::new("sqlite-lineage");
    let store = SqliteStore::connect(&sqlite_url(&dir)).await.unwrap();
    let limits = UsageLimits::new()
        .rate_limit(RateLimit::per(100, Duration::from_secs(3600)).unwrap())
        .unwrap();
    let first = store
        .issue(NewKey::org("acme").limits(limits))
        .await
        .unwrap();
    let successor = store
        .rotate(&first.record.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let stored: Option<String> =
        sqlx::query_scalar("SELECT limits_lineage FROM keyauth_keys WHERE id = ?1")
            .bind(successor.record.id.as_str())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some(first.record.id.as_str()));
    let app = app(KeyAuthLayer::new(store.clone()));
    let token = successor.token.expose_secret();
    let secret = token.split_once('.').unwrap().1;
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    let (logs, _guard) = capture_tracing();
    let overlong = "k".repeat(65);
    let huge = "k".repeat(1 << 20);
    for corrupt in ["", "key 1", "key_1", overlong.as_str(), huge.as_str()] {
        sqlx::query("UPDATE keyauth_keys SET limits_lineage = ?1 WHERE id = ?2")
            .bind(corrupt)
            .bind(successor.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let reply = get_bearer(&app, "/v1/whoami", token).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{corrupt:.20}: {}",
            reply.text
        );
        assert_eq!(reply.error(), "unavailable");
        assert!(!reply.text.contains(secret));
        // The old key, in its grace period, is sound.
        assert_eq!(
            get_bearer(&app, "/v1/whoami", first.token.expose_secret())
                .await
                .status,
            StatusCode::OK
        );
    }
    assert!(logs.text().contains("not a key id"), "{}", logs.text());
    assert!(!logs.text().contains(secret));
    sqlx::query("UPDATE keyauth_keys SET limits_lineage = ?1 WHERE id = ?2")
        .bind(first.record.id.as_str())
        .bind(successor.record.id.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
}
