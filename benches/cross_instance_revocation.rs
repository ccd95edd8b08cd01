//! Cross-instance revocation through PostgreSQL LISTEN/NOTIFY, measured
//! (issue 12, point 4).
//!
//! Two application instances on one database, as two processes would have
//! them: each a `CachedStore<PostgresStore>` with its own pool, a cache whose
//! TTL (10 minutes) is far longer than the run, and its invalidation
//! listener. For every key: issue it through instance A, authenticate with
//! it through a `KeyAuthLayer` over instance B (so B caches it), revoke it
//! through A, then send the same request to B every millisecond until B
//! refuses it. What is recorded is the time from the revoke returning to B's
//! first refusal: with the TTL out of the way, that is the NOTIFY path.
//!
//! A second phase cuts B's listener connection (`pg_terminate_backend` of
//! its backend, found by application name in `pg_stat_activity`), revokes
//! a key B has cached right after the cut, and records the time from the
//! cut to B's first refusal.
//!
//! Needs a PostgreSQL server; the bench drops and recreates the database
//! `keyauth_bench_revocation` on it:
//!
//! ```sh
//! KEYAUTH_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:54329/postgres \
//!     cargo bench --bench cross_instance_revocation
//! ```
//!
//! (`KEYAUTH_TEST_POSTGRES_URL` is used when the first is unset.)
//! `KEYAUTH_BENCH_KEYS` (default 500) and `KEYAUTH_BENCH_CUTS` (default 50)
//! set the number of revocations in each phase.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

#[path = "support/mod.rs"]
mod support;
use support::recreate_database;
use tower::{Layer, ServiceExt, service_fn};
use tower_keyauth::store::StoreOptions;
use tower_keyauth::store::{CacheOptions, CachedStore, InvalidationListener, PostgresStore};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, NewKey};

const DATABASE: &str = "keyauth_bench_revocation";
/// B's application name, by which its listener's backend is found.
const APP_B: &str = "keyauth-bench-instance-b";
/// How often B is asked again.
const POLL: Duration = Duration::from_millis(1);
/// A refusal that takes longer than this is counted as missing.
const GIVE_UP: Duration = Duration::from_secs(10);

type Instance = (CachedStore<PostgresStore>, InvalidationListener);

fn main() {
    let Some(url) = std::env::var("KEYAUTH_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("KEYAUTH_TEST_POSTGRES_URL"))
        .ok()
    else {
        eprintln!(
            "cross_instance_revocation: skipped, it needs a PostgreSQL server. Run it with\n\
             KEYAUTH_BENCH_POSTGRES_URL=postgres://user@host:port/postgres \
             cargo bench --bench cross_instance_revocation\n\
             (it drops and recreates the database {DATABASE} on that server)."
        );
        return;
    };
    let count = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map(|value| value.parse().expect("a number"))
            .unwrap_or(default)
    };
    let keys = count("KEYAUTH_BENCH_KEYS", 500);
    let cuts = count("KEYAUTH_BENCH_CUTS", 50);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run(&url, keys, cuts));
}

async fn run(url: &str, keys: usize, cuts: usize) {
    let database = recreate_database(url, DATABASE).await;
    let (a, _a_listener) = instance(&database, "keyauth-bench-instance-a").await;
    let (b, _b_listener) = instance(&database, APP_B).await;
    let b_service = KeyAuthLayer::new(b.clone()).layer(service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let status = |token: String| {
        let service = b_service.clone();
        async move {
            let request = Request::get("/")
                .header(AUTHORIZATION, format!("Bearer {token}"))
                .body(String::new())
                .unwrap();
            service.oneshot(request).await.unwrap().status()
        }
    };
    let admin = a.get_ref().pool().clone();

    // Phase 1: the listener up.
    let mut seen = Vec::with_capacity(keys);
    let mut missed = 0;
    for i in 0..keys {
        let issued = a.issue(NewKey::org(format!("org-{i}"))).await.unwrap();
        let token = issued.token.expose_secret().to_owned();
        assert_eq!(status(token.clone()).await, StatusCode::OK);
        a.revoke(&issued.record.id).await.unwrap();
        let revoked = Instant::now();
        match first_refusal(&status, &token, revoked).await {
            Some(after) => seen.push(after),
            None => missed += 1,
        }
    }

    // Phase 2: the listener's connection cut, a key revoked right after.
    let mut after_cut = Vec::with_capacity(cuts);
    let mut after_revoke = Vec::with_capacity(cuts);
    let mut cut_missed = 0;
    let mut cut_pids = Vec::new();
    for i in 0..cuts {
        let issued = a.issue(NewKey::org(format!("cut-{i}"))).await.unwrap();
        let token = issued.token.expose_secret().to_owned();
        assert_eq!(status(token.clone()).await, StatusCode::OK);
        let pid = listener_pid(&admin, &cut_pids).await;
        cut_pids.push(pid);
        let cut = Instant::now();
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(
            terminated,
            "the listener's backend {pid} was not terminated"
        );
        a.revoke(&issued.record.id).await.unwrap();
        let revoked = Instant::now();
        match first_refusal(&status, &token, revoked).await {
            Some(after) => {
                after_revoke.push(after);
                after_cut.push(revoked - cut + after);
            }
            None => cut_missed += 1,
        }
    }

    println!();
    println!("| what | count | missed | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    row(
        "listener up: revoke returned → B refuses",
        &mut seen,
        missed,
    );
    row(
        "listener cut: cut → B refuses (revoked after the cut)",
        &mut after_cut,
        cut_missed,
    );
    row(
        "listener cut: revoke returned → B refuses",
        &mut after_revoke,
        cut_missed,
    );
}

/// One application instance, set up as the README's `CachedStore` with
/// invalidations section does (the pool as `PostgresStore::connect` builds
/// it, named `name`), with a 10-minute TTL.
async fn instance(database: &PgConnectOptions, name: &str) -> Instance {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(database.clone().application_name(name))
        .await
        .unwrap();
    let store = PostgresStore::from_pool(pool, StoreOptions::default())
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    let cached = CachedStore::with_options(
        store.clone(),
        CacheOptions::default().positive_ttl(ttl).negative_ttl(ttl),
    );
    let listener = store
        .listen_for_invalidations(cached.invalidator())
        .await
        .unwrap();
    (cached, listener)
}

/// The backend of B's listener, once it is listening (after a cut, once it
/// has reconnected); never one of the backends already cut, which may still
/// be on their way out.
async fn listener_pid(admin: &PgPool, cut: &[i32]) -> i32 {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = $1 AND query ILIKE 'LISTEN%' AND pid <> ALL($2)",
        )
        .bind(APP_B)
        .bind(cut)
        .fetch_optional(admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "B's listener never came back");
        tokio::time::sleep(POLL).await;
    }
}

/// How long after `since` B first refuses `token`, asking every [`POLL`];
/// `None` after [`GIVE_UP`].
async fn first_refusal<F, Fut>(status: &F, token: &str, since: Instant) -> Option<Duration>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = StatusCode>,
{
    loop {
        if status(token.to_owned()).await == StatusCode::UNAUTHORIZED {
            return Some(since.elapsed());
        }
        if since.elapsed() > GIVE_UP {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A Markdown row: nearest-rank percentiles.
fn row(what: &str, samples: &mut [Duration], missed: usize) {
    samples.sort();
    let at = |q: f64| {
        if samples.is_empty() {
            return "—".to_owned();
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        format!("{:.1} ms", samples[rank - 1].as_secs_f64() * 1e3)
    };
    println!(
        "| {what} | {} | {missed} | {} | {} | {} | {} |",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
    );
}
