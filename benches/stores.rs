//! What a valid key costs per request on each bundled store, set up as the
//! README sets it up, with and without `CachedStore` where both exist: the
//! layer around a trivial service, each request awaited on a tokio runtime
//! (one thread), so that a store that waits (SQLite, PostgreSQL without the
//! cache) is measured as it runs, database round trip included.
//!
//! ```sh
//! cargo bench --bench stores
//! KEYAUTH_BENCH_POSTGRES_URL=postgres://user@host:port/postgres cargo bench --bench stores
//! ```
//!
//! Without a PostgreSQL URL the PostgreSQL rows are skipped (and say so);
//! with one, the database `keyauth_bench_stores` on that server is dropped
//! and recreated. Cases are timed interleaved, in batches of about
//! `STORES_BATCH_MS` (20) ms over `STORES_ROUNDS` (15) rounds, as in
//! `benches/layer_ratios.rs`; each store holds 1 000 keys. The yardstick is
//! issue 12's: one SHA-256 of the token plus one `HashMap` lookup.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::time::{Duration, Instant};

use http::Request;
use http::header::AUTHORIZATION;
use tower::{Layer, Service};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::store::{CachedStore, PostgresStore, SqliteStore};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey};

#[path = "support/mod.rs"]
mod support;
use support::{Trivial, bearer, recreate_database, yardstick_map};

const DATABASE: &str = "keyauth_bench_stores";
const KEYS: usize = 1_000;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A service called with one valid key, request after request.
trait Case {
    /// Runs `count` requests; panics unless each is answered 200.
    fn run(&mut self, count: u64) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

struct Serving<S> {
    service: S,
    header: http::HeaderValue,
}

impl<S> Case for Serving<S>
where
    S: Service<Request<String>, Response = http::Response<tower_keyauth::body::AuthBody<String>>>,
    S::Error: std::fmt::Debug,
{
    fn run(&mut self, count: u64) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            for _ in 0..count {
                let mut request = Request::new(String::new());
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, self.header.clone());
                let response = self.service.call(request).await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    }
}

/// The trivial service alone, called the same way.
struct Bare(http::HeaderValue);

impl Case for Bare {
    fn run(&mut self, count: u64) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            for _ in 0..count {
                let mut request = Request::new(String::new());
                request.headers_mut().insert(AUTHORIZATION, self.0.clone());
                let response = Trivial.call(request).await.unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    }
}

/// The yardstick: SHA-256 of the token and one lookup.
struct Yardstick {
    token: String,
    map: std::collections::HashMap<String, KeyHash>,
    probe: String,
}

impl Case for Yardstick {
    fn run(&mut self, count: u64) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            for _ in 0..count {
                let hash = KeyHash::of(black_box(&self.token));
                let found = self.map.get(black_box(self.probe.as_str()));
                black_box(found.is_some_and(|stored| stored.matches(&hash)));
            }
        })
    }
}

/// The layer over `store` (holding `KEYS` keys), and the token of one.
async fn serving<S: KeyStore + KeyLifecycle + Clone>(store: S) -> Box<dyn Case> {
    let mut token = String::new();
    for i in 0..KEYS {
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        if i == KEYS / 2 {
            token = issued.token.expose_secret().to_owned();
        }
    }
    let mut case = Serving {
        service: KeyAuthLayer::new(store).layer(Trivial),
        header: bearer(&token),
    };
    case.run(10).await; // a cache fills here
    Box::new(case)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run());
}

async fn run() {
    let rounds = setting("STORES_ROUNDS", 15);
    let batch = Duration::from_millis(setting("STORES_BATCH_MS", 20));
    let dir = std::env::temp_dir().join(format!("keyauth-bench-stores-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite_url = |name: &str| format!("sqlite://{}", dir.join(name).display());

    let token_for_yardstick = "ak_Xb3kP9qLm2Ts.abcdefghijklmnopqrstuvwxyz0123".to_owned();
    let (map, probe) = yardstick_map(KeyHash::of(&token_for_yardstick));
    let mut cases: Vec<(String, Box<dyn Case>)> = vec![
        (
            "yardstick".into(),
            Box::new(Yardstick {
                token: token_for_yardstick,
                map,
                probe,
            }),
        ),
        ("bare".into(), Box::new(Bare(bearer("ak_unused")))),
        ("MemoryStore".into(), serving(MemoryStore::new()).await),
        (
            "CachedStore<MemoryStore>".into(),
            serving(CachedStore::new(MemoryStore::new())).await,
        ),
        (
            "SqliteStore".into(),
            serving(SqliteStore::connect(&sqlite_url("plain.db")).await.unwrap()).await,
        ),
        (
            "CachedStore<SqliteStore>".into(),
            serving(CachedStore::new(
                SqliteStore::connect(&sqlite_url("cached.db"))
                    .await
                    .unwrap(),
            ))
            .await,
        ),
    ];
    let mut _listeners = Vec::new();
    match std::env::var("KEYAUTH_BENCH_POSTGRES_URL") {
        Ok(url) => {
            let options = recreate_database(&url, DATABASE).await;
            let connect = || async {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(10)
                    .connect_with(options.clone())
                    .await
                    .unwrap();
                PostgresStore::from_pool(pool, Default::default())
                    .await
                    .unwrap()
            };
            cases.push(("PostgresStore".into(), serving(connect().await).await));
            let store = connect().await;
            let cached = CachedStore::new(store.clone());
            _listeners.push(
                store
                    .listen_for_invalidations(cached.invalidator())
                    .await
                    .unwrap(),
            );
            cases.push((
                "CachedStore<PostgresStore> + LISTEN/NOTIFY".into(),
                serving(cached).await,
            ));
        }
        Err(_) => eprintln!(
            "stores: the PostgreSQL rows are skipped; set KEYAUTH_BENCH_POSTGRES_URL to a server \
             (the database {DATABASE} on it is dropped and recreated)"
        ),
    }

    // How many requests make a batch of each case, from a first timing.
    let mut counts = Vec::new();
    for (_, case) in cases.iter_mut() {
        let start = Instant::now();
        case.run(100).await;
        let each = start.elapsed() / 100;
        counts.push((batch.as_nanos() / each.as_nanos().max(1)).max(10) as u64);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds as usize {
        for offset in 0..cases.len() {
            let index = (round + offset) % cases.len();
            let start = Instant::now();
            cases[index].1.run(counts[index]).await;
            samples[index].push(start.elapsed().as_nanos() as f64 / counts[index] as f64);
        }
    }

    let median = |values: &[f64]| {
        let mut values = values.to_vec();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (yardstick, bare) = (median(&samples[0]), median(&samples[1]));
    println!(
        "{rounds} rounds, batches of ~{} ms, interleaved\n",
        batch.as_millis()
    );
    println!(
        "| store (as the README sets it up) | per request | added to the bare service | added / (SHA-256 + lookup) |"
    );
    println!("|---|---|---|---|");
    println!("| (yardstick: SHA-256 + lookup) | {yardstick:.0} ns | | |");
    println!("| (bare service) | {bare:.0} ns | | |");
    for ((name, _), values) in cases.iter().zip(&samples).skip(2) {
        // Ratios within each round, then their median.
        let ratios: Vec<f64> = (0..values.len())
            .map(|round| (values[round] - samples[1][round]) / samples[0][round])
            .collect();
        let total = median(values);
        println!(
            "| {name} | {} | {} | {:.2} |",
            nanos(total),
            nanos(total - bare),
            median(&ratios)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn nanos(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1} µs", value / 1000.0)
    } else {
        format!("{value:.0} ns")
    }
}
