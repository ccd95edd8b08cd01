//! The tests that need the PostgreSQL server named by
//! `KEYAUTH_TEST_POSTGRES_URL` (CI starts one), beside the conformance
//! suite: LISTEN/NOTIFY cache invalidation, concurrent migrations,
//! refused last-used writes, corrupt limits lineages, and the quickstart
//! on PostgreSQL.
//!
//! A custom harness (libtest-mimic): without the variable every test here
//! shows as ignored, with the reason, and is counted as such in the
//! summary; with it, a server that does not answer fails them.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::client::call;
use common::example::start_example;
use common::*;
use http::StatusCode;
use libtest_mimic::Trial;
use sqlx::postgres::PgConnectOptions;
use tower_keyauth::ids::{OrgId, UserId};
use tower_keyauth::store::{
    CacheOptions, CachedStore, InvalidationListener, Membership, PostgresStore, StoreOptions,
};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, NewKey, Scopes};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    // Named after the file each test lived in before.
    let trials = vec![
        Trial::test(
            "cache::postgres_announces_revocations_to_every_instance",
            || {
                run_multi_thread(postgres_announces_revocations_to_every_instance());
                Ok(())
            },
        ),
        Trial::test(
            "cache::a_key_revoked_just_after_the_listener_is_cut_is_refused",
            || {
                run_multi_thread(a_key_revoked_just_after_the_listener_is_cut_is_refused());
                Ok(())
            },
        ),
        Trial::test(
            "cache::a_key_revoked_while_the_listener_cannot_reconnect_is_refused_once_it_listens_again",
            || {
                run_multi_thread(
                    a_key_revoked_while_the_listener_cannot_reconnect_is_refused_once_it_listens_again(),
                );
                Ok(())
            },
        ),
        Trial::test(
            "sql_stores::postgres_migrations_survive_instances_starting_at_once",
            || {
                run_current_thread(postgres_migrations_survive_instances_starting_at_once());
                Ok(())
            },
        ),
        Trial::test(
            "sql_stores::postgres_last_used_write_failures_never_fail_a_request",
            || {
                run_current_thread(postgres_last_used_write_failures_never_fail_a_request());
                Ok(())
            },
        ),
        Trial::test(
            "sql_stores::postgres_refuses_a_record_beyond_the_scope_bound_only_for_its_own_token",
            || {
                run_current_thread(
                    postgres_refuses_a_record_beyond_the_scope_bound_only_for_its_own_token(),
                );
                Ok(())
            },
        ),
        Trial::test(
            "sql_stores::postgres_refuses_a_key_whose_lineage_is_not_a_key_id",
            || {
                run_current_thread(postgres_refuses_a_key_whose_lineage_is_not_a_key_id());
                Ok(())
            },
        ),
        Trial::test("quickstart::the_quickstart_runs_on_postgres_too", || {
            run_current_thread(the_quickstart_runs_on_postgres_too());
            Ok(())
        }),
        Trial::test(
            "quickstart::a_hanging_store_is_refused_within_the_store_timeout",
            || {
                run_current_thread(a_hanging_store_is_refused_within_the_store_timeout());
                Ok(())
            },
        ),
        Trial::test(
            "limits::two_instances_spend_100_credits_on_exactly_100_of_1000_requests",
            || {
                run_multi_thread(two_instances_spend_100_credits_on_exactly_100_of_1000_requests());
                Ok(())
            },
        ),
    ];
    let trials = trials.into_iter().map(needs_postgres).collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Two application instances, each with its own pool and cache (TTL one
/// hour), on one PostgreSQL database: a revocation through one is dropped
/// from the other's cache by LISTEN/NOTIFY, long before the TTL.
async fn postgres_announces_revocations_to_every_instance() {
    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let (first, _first_listener) = named_instance(&connect, &unique_name("first")).await;
    let (second, _second_listener) = named_instance(&connect, &unique_name("second")).await;
    let app_on_second = app(KeyAuthLayer::new(second.clone()));

    let issued = first.issue(NewKey::org("acme")).await.unwrap();
    let token = issued.token.expose_secret();
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    let revoked = Instant::now();
    first.revoke(&issued.record.id).await.unwrap();
    wait_for_status(&app_on_second, token, &[], StatusCode::UNAUTHORIZED).await;
    println!(
        "revocation seen by the second instance after {:?}",
        revoked.elapsed()
    );

    // Rotation, single-active issuing and membership changes travel too.
    let rotated = first.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", rotated.token.expose_secret())
            .await
            .status,
        StatusCode::OK
    );
    first
        .rotate(&rotated.record.id, Duration::ZERO)
        .await
        .unwrap();
    wait_for_status(
        &app_on_second,
        rotated.token.expose_secret(),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;

    first
        .set_membership(
            &UserId::from("ada"),
            &OrgId::from("acme"),
            Some(Membership::new(Scopes::all())),
        )
        .await
        .unwrap();
    let pat = first.issue(NewKey::personal("ada")).await.unwrap();
    let org_header = [("x-org-id", "acme")];
    wait_for_status(
        &app_on_second,
        pat.token.expose_secret(),
        &org_header,
        StatusCode::OK,
    )
    .await;
    first
        .set_membership(&UserId::from("ada"), &OrgId::from("acme"), None)
        .await
        .unwrap();
    wait_for_status(
        &app_on_second,
        pat.token.expose_secret(),
        &org_header,
        StatusCode::FORBIDDEN,
    )
    .await;
}

/// Polls until a request with `token` gets `expected`, for at most 5 s (a
/// TTL-only cache would take an hour).
async fn wait_for_status(
    app: &axum::Router,
    token: &str,
    headers: &[(&str, &str)],
    expected: StatusCode,
) {
    let deadline = SystemTime::now() + Duration::from_secs(5);
    loop {
        let mut all = vec![("authorization", bearer(token))];
        all.extend(headers.iter().map(|(n, v)| (*n, v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let status = send(app, get_with("/v1/whoami", &all)).await.status;
        if status == expected {
            return;
        }
        assert!(
            SystemTime::now() < deadline,
            "still {status}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An application instance: its own pool (named `name` in
/// `pg_stat_activity`), a cache whose TTL (one hour) no test waits for, and
/// its listener.
async fn named_instance(
    connect: &PgConnectOptions,
    name: &str,
) -> (CachedStore<PostgresStore>, InvalidationListener) {
    let store = store_named(connect, name).await;
    let cached = CachedStore::with_options(store.clone(), long_ttl());
    let listener = store
        .listen_for_invalidations(cached.invalidator())
        .await
        .unwrap();
    (cached, listener)
}

/// A store on its own pool, whose connections carry `name` as their
/// `application_name`.
async fn store_named(connect: &PgConnectOptions, name: &str) -> PostgresStore {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(connect.clone().application_name(name))
        .await
        .unwrap();
    PostgresStore::from_pool(pool, StoreOptions::default())
        .await
        .unwrap()
}

fn long_ttl() -> CacheOptions {
    CacheOptions::default()
        .positive_ttl(Duration::from_secs(3600))
        .negative_ttl(Duration::from_secs(3600))
}

/// A name no other test uses, for `application_name`.
fn unique_name(what: &str) -> String {
    format!(
        "keyauth-{what}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Terminates the backend of the listener of the pool named `name` (the
/// connection whose last statement was `LISTEN`), waiting for it to be
/// listening first; `cut` holds the backends terminated before, which may
/// still be on their way out.
async fn cut_listener(admin: &sqlx::PgPool, name: &str, cut: &mut Vec<i32>) {
    let deadline = SystemTime::now() + Duration::from_secs(5);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = $1 AND query ILIKE 'LISTEN%' AND pid <> ALL($2)",
        )
        .bind(name)
        .bind(&*cut)
        .fetch_optional(admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(admin)
                .await
                .unwrap();
            assert!(terminated, "backend {pid} was not terminated");
            cut.push(pid);
            return;
        }
        assert!(SystemTime::now() < deadline, "no listener named {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The documented bound (`PostgresStore::listen_for_invalidations`): when
/// the listener's connection drops, the cache forgets everything once the
/// listener listens again. A key the other instance has cached and that is
/// revoked right after the cut, while the listener may not be listening
/// (its announcement may be lost), is refused as soon as the listener is
/// back; the bounded poll stands for "soon", the TTL being an hour.
async fn a_key_revoked_just_after_the_listener_is_cut_is_refused() {
    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let second_name = unique_name("second");
    let (first, _first_listener) = named_instance(&connect, &unique_name("first")).await;
    let (second, _second_listener) = named_instance(&connect, &second_name).await;
    let app_on_second = app(KeyAuthLayer::new(second.clone()));
    let mut cut = Vec::new();

    for _ in 0..3 {
        let issued = first.issue(NewKey::org("acme")).await.unwrap();
        let token = issued.token.expose_secret();
        assert_eq!(
            get_bearer(&app_on_second, "/v1/whoami", token).await.status,
            StatusCode::OK
        );
        cut_listener(first.get_ref().pool(), &second_name, &mut cut).await;
        first.revoke(&issued.record.id).await.unwrap();
        wait_for_status(&app_on_second, token, &[], StatusCode::UNAUTHORIZED).await;
    }
}

/// The listener's connection cut and, for a while, no new one to be had
/// (the listener has a pool of its own, one connection, whose connects fail
/// while `reachable` is false): the cache forgets everything when an
/// attempt fails, the other instance caches the key again from the
/// database, the key is revoked (the announcement is lost), and only then
/// can the listener reconnect. It forgets everything once it listens again,
/// so the key is refused then, not after the TTL (an hour).
async fn a_key_revoked_while_the_listener_cannot_reconnect_is_refused_once_it_listens_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let (first, _first_listener) = named_instance(&connect, &unique_name("first")).await;

    let second = CachedStore::with_options(
        store_named(&connect, &unique_name("second")).await,
        long_ttl(),
    );
    let reachable = Arc::new(AtomicBool::new(true));
    let listener_name = unique_name("listener");
    let listener_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
        .after_connect({
            let reachable = Arc::clone(&reachable);
            move |_, _| {
                let reachable = reachable.load(Ordering::SeqCst);
                Box::pin(async move {
                    if reachable {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Protocol("held down by the test".into()))
                    }
                })
            }
        })
        .connect_with(connect.clone().application_name(&listener_name))
        .await
        .unwrap();
    let listener_store = PostgresStore::from_pool(listener_pool, StoreOptions::default())
        .await
        .unwrap();
    let _second_listener = listener_store
        .listen_for_invalidations(second.invalidator())
        .await
        .unwrap();
    let app_on_second = app(KeyAuthLayer::new(second.clone()));

    let issued = first.issue(NewKey::org("acme")).await.unwrap();
    let token = issued.token.expose_secret();
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    reachable.store(false, Ordering::SeqCst);
    cut_listener(first.get_ref().pool(), &listener_name, &mut Vec::new()).await;
    // A failed attempt to reconnect empties the cache.
    let deadline = SystemTime::now() + Duration::from_secs(5);
    while second.cached_keys() > 0 {
        assert!(SystemTime::now() < deadline, "the cache was never emptied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The key comes back into the cache from the database, and is revoked
    // while nobody listens on its instance's behalf.
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    assert_eq!(second.cached_keys(), 1);
    first.revoke(&issued.record.id).await.unwrap();
    reachable.store(true, Ordering::SeqCst);
    wait_for_status(&app_on_second, token, &[], StatusCode::UNAUTHORIZED).await;

    // And it listens again.
    let next = first.issue(NewKey::org("acme")).await.unwrap();
    let token = next.token.expose_secret();
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    first.revoke(&next.record.id).await.unwrap();
    wait_for_status(&app_on_second, token, &[], StatusCode::UNAUTHORIZED).await;
}

async fn postgres_migrations_survive_instances_starting_at_once() {
    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let connect = connect.clone();
            tokio::spawn(async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(connect)
                    .await
                    .unwrap();
                PostgresStore::from_pool(pool, StoreOptions::default()).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().expect("every instance starts"));
    }
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keyauth_migrations")
        .fetch_all(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    let issued = stores[1].issue(NewKey::org("acme")).await.unwrap();
    assert!(
        stores[3]
            .find_key(&issued.record.id)
            .await
            .unwrap()
            .is_some()
    );
}

async fn postgres_last_used_write_failures_never_fail_a_request() {
    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect.clone())
        .await
        .unwrap();
    let owner = PostgresStore::from_pool(pool.clone(), StoreOptions::default())
        .await
        .unwrap();
    let issued = owner.issue(NewKey::org("acme")).await.unwrap();
    // A role that may read keys but not update them.
    let role = format!("keyauth_reader_{}", std::process::id());
    for statement in [
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role}"),
        format!("GRANT USAGE ON SCHEMA {} TO {role}", schema_of(&connect)),
        format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {role}",
            schema_of(&connect)
        ),
    ] {
        let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await;
    }
    let reader_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect({
            let role = role.clone();
            move |connection, _| {
                let role = role.clone();
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(format!("SET ROLE {role}")))
                        .execute(connection)
                        .await
                        .map(|_| ())
                })
            }
        })
        .connect_with(connect)
        .await
        .unwrap();
    // An interval the background writer never reaches in this test: the
    // test writes, and moves the layer's clock to the next window.
    let reader = PostgresStore::from_pool(
        reader_pool,
        StoreOptions::default().last_used_interval(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let clock = TestClock::new();
    let app = app(KeyAuthLayer::new(reader.clone()).clock(clock.clone()));
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", issued.token.expose_secret())
                .await
                .status,
            StatusCode::OK
        );
        assert!(
            reader.flush_last_used().await.is_err(),
            "the reader may not write"
        );
        clock.advance(Duration::from_secs(61));
    }
    get_bearer(&app, "/v1/whoami", issued.token.expose_secret()).await;
    assert!(
        reader.flush_last_used().await.is_err(),
        "the reader may not write"
    );
    assert_eq!(
        owner
            .find_key(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        None
    );
}

fn schema_of(connect: &sqlx::postgres::PgConnectOptions) -> String {
    connect
        .get_options()
        .and_then(|options| options.split("search_path=").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .expect("the test schema")
}

async fn the_quickstart_runs_on_postgres_too() {
    let url = require_postgres_url();
    let database = common::fresh_postgres_database(&url).await;
    let first = start_example("quickstart", &[("DATABASE_URL", database.as_str())]).await;
    let org_key = first.exports()["ORG_KEY"].clone();
    let created = call(first.addr, "POST", "/v1/keys", &org_key, r#"{"name":"pg"}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    first.stop().await;

    let second = start_example("quickstart", &[("DATABASE_URL", database.as_str())]).await;
    assert!(second.exports().is_empty());
    assert!(second.printed.join("\n").contains("DATABASE_URL"));
    let reply = call(second.addr, "GET", "/v1/whoami", &token, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["org"], "acme");
    second.stop().await;
}

/// With the keys table locked, a lookup hangs; the quickstart's layer
/// refuses with 503 within its store timeout instead of waiting for the lock.
/// The quickstart caches keys, so the hanging lookup is that of a key not
/// looked up before (`READ_KEY`); a key already cached (`ORG_KEY`) is
/// answered from memory meanwhile.
async fn a_hanging_store_is_refused_within_the_store_timeout() {
    let url = require_postgres_url();
    let database = common::fresh_postgres_database(&url).await;
    let example = start_example("quickstart", &[("DATABASE_URL", database.as_str())]).await;
    let exports = example.exports();
    let (org_key, read_key) = (exports["ORG_KEY"].clone(), exports["READ_KEY"].clone());
    let whoami = |key: &str| {
        let key = key.to_owned();
        let addr = example.addr;
        async move { call(addr, "GET", "/v1/whoami", &key, "").await }
    };
    assert_eq!(whoami(&org_key).await.status, 200);

    let locker = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database)
        .await
        .unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE keyauth_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    let reply = whoami(&read_key).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"], "unavailable");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert_eq!(whoami(&org_key).await.status, 200, "cached");
    lock.rollback().await.unwrap();
    assert_eq!(whoami(&read_key).await.status, 200);
    example.stop().await;
}

/// A record holding more scopes than a set may (written behind the store's
/// back) is corrupt: see `a_record_beyond_the_scope_bound_is_corrupt`.
async fn postgres_refuses_a_record_beyond_the_scope_bound_only_for_its_own_token() {
    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool.clone(), StoreOptions::default())
        .await
        .unwrap();
    a_record_beyond_the_scope_bound_is_corrupt(store, |tamper, id| {
        let pool = pool.clone();
        async move {
            let max = Scopes::MAX_COUNT;
            let query = match tamper {
                Tamper::TooManyScopes => {
                    sqlx::query("UPDATE keyauth_keys SET scopes = $1 WHERE id = $2")
                        .bind(scope_names(max + 1))
                }
                Tamper::OneOverlongScope => {
                    sqlx::query("UPDATE keyauth_keys SET scopes = $1 WHERE id = $2")
                        .bind(vec!["x".repeat(1 << 20)])
                }
                Tamper::ScopesAtTheBound => {
                    sqlx::query("UPDATE keyauth_keys SET scopes = $1 WHERE id = $2")
                        .bind(scope_names(max))
                }
                Tamper::WrongHash => sqlx::query("UPDATE keyauth_keys SET hash = $1 WHERE id = $2")
                    .bind(vec![7u8; 32]),
            };
            query.bind(id.as_str()).execute(&pool).await.unwrap();
        }
    })
    .await;
}

/// A key whose stored limits lineage is not a key id is corrupt: see
/// `sqlite_refuses_a_key_whose_lineage_is_not_a_key_id` in
/// `tests/sql_stores.rs`.
async fn postgres_refuses_a_key_whose_lineage_is_not_a_key_id() {
    use tower_keyauth::limit::{RateLimit, UsageLimits};

    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(connect)
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool.clone(), StoreOptions::default())
        .await
        .unwrap();
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
        sqlx::query_scalar("SELECT limits_lineage FROM keyauth_keys WHERE id = $1")
            .bind(successor.record.id.as_str())
            .fetch_one(&pool)
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
    let wide = "\u{e9}".repeat(100);
    for corrupt in [
        "",
        "key 1",
        "key_1",
        overlong.as_str(),
        huge.as_str(),
        wide.as_str(),
    ] {
        sqlx::query("UPDATE keyauth_keys SET limits_lineage = $1 WHERE id = $2")
            .bind(corrupt)
            .bind(successor.record.id.as_str())
            .execute(&pool)
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
    sqlx::query("UPDATE keyauth_keys SET limits_lineage = $1 WHERE id = $2")
        .bind(first.record.id.as_str())
        .bind(successor.record.id.as_str())
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
}

/// The issue's acceptance: a key with 100 credits, two application
/// instances (each its own pool and cache) on one PostgreSQL database,
/// 1 000 concurrent requests split between them: exactly 100 are let
/// through, the rest answered 429 `quota_exhausted`, and the credits end
/// at 0, never below.
async fn two_instances_spend_100_credits_on_exactly_100_of_1000_requests() {
    use tower_keyauth::limit::{Credits, UsageLimits};

    let url = require_postgres_url();
    let connect = fresh_postgres_schema(&url).await;
    let (first, _first_listener) = named_instance(&connect, &unique_name("credits-a")).await;
    let (second, _second_listener) = named_instance(&connect, &unique_name("credits-b")).await;
    let issued = first
        .issue(
            NewKey::org("acme").limits(UsageLimits::new().with_credits(Credits::new(100).unwrap())),
        )
        .await
        .unwrap();
    let token = issued.token.expose_secret().to_owned();
    let apps = [
        app(KeyAuthLayer::new(first.clone())),
        app(KeyAuthLayer::new(second.clone())),
    ];
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (app, token) = (apps[i % 2].clone(), token.clone());
        requests.spawn(async move {
            let reply = get_bearer(&app, "/v1/whoami", &token).await;
            (reply.status, reply.error())
        });
    }
    let (mut admitted, mut exhausted) = (0, 0);
    while let Some(answer) = requests.join_next().await {
        match answer.unwrap() {
            (StatusCode::OK, _) => admitted += 1,
            (StatusCode::TOO_MANY_REQUESTS, code) if code == "quota_exhausted" => exhausted += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((admitted, exhausted), (100, 900));
    // Read from the database itself: the caches hold the key as issued.
    let fresh = store_named(&connect, &unique_name("credits-read")).await;
    let record = fresh.find_key(&issued.record.id).await.unwrap().unwrap();
    let left = record.limits.unwrap().credits().unwrap().remaining();
    assert_eq!(left, 0);
}
