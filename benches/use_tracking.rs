//! What `last_used_at` tracking adds to a request (issue 13): the layer over
//! `CachedStore<SqliteStore>`, 10 000 keys issued, requests cycling over all
//! of them (every one a cache hit), with tracking on and off. The cases are
//! timed interleaved, in batches of one pass over the keys, round after
//! round in alternating order, and the ratio is taken within each round, as
//! in `benches/layer_ratios.rs`: on a shared machine the speed drifts more
//! between seconds than the difference measured.
//!
//! ```sh
//! cargo bench --bench use_tracking
//! USE_TRACKING_ROUNDS=60 cargo bench --bench use_tracking
//! USE_TRACKING_INTERVAL_MS=1000 cargo bench --bench use_tracking  # windows turn during the run
//! ```
//!
//! Both stores open the same SQLite file (in the temporary directory); the
//! one with tracking writes `last_used_at` from its background task, on a
//! tokio worker thread of its own, as in a server. The interval defaults to
//! the stores' default ([`DEFAULT_LAST_USED_INTERVAL`], one minute).

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use tower::{Layer, ServiceExt};
use tower_keyauth::store::{
    CacheOptions, CachedStore, DEFAULT_LAST_USED_INTERVAL, SqliteStore, StoreOptions,
};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, NewKey};

#[path = "support/mod.rs"]
mod support;
use support::{Trivial, bearer, serve};

const KEYS: usize = 10_000;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` asks; there is nothing to list.
    }
    // The requests run on the main thread; the tracking store's writer and
    // SQLite's answers on the runtime's one worker.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run());
}

/// A pool on `path` that does not wait for the disk at each commit: issuing
/// 10 000 keys is set-up, not what is measured.
async fn store(path: &std::path::Path, options: StoreOptions) -> SqliteStore {
    let connect = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true)
        .synchronous(SqliteSynchronous::Off);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(connect)
        .await
        .unwrap();
    SqliteStore::from_pool(pool, options).await.unwrap()
}

async fn run() {
    let rounds = setting("USE_TRACKING_ROUNDS", 30) as usize;
    let interval = Duration::from_millis(setting(
        "USE_TRACKING_INTERVAL_MS",
        DEFAULT_LAST_USED_INTERVAL.as_millis() as u64,
    ));
    let dir = std::env::temp_dir().join(format!("keyauth-bench-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.db");

    let issuer = store(&path, StoreOptions::default().without_last_used()).await;
    let mut headers: Vec<HeaderValue> = Vec::with_capacity(KEYS);
    for _ in 0..KEYS {
        let issued = issuer.issue(NewKey::org("acme")).await.unwrap();
        headers.push(bearer(issued.token.expose_secret()));
    }

    // Found keys kept for the whole run: every measured request is a hit.
    let cache = || CacheOptions::default().positive_ttl(Duration::from_secs(3600));
    let tracking = CachedStore::with_options(
        store(&path, StoreOptions::default().last_used_interval(interval)).await,
        cache(),
    );
    let untracked = CachedStore::with_options(
        store(&path, StoreOptions::default().without_last_used()).await,
        cache(),
    );
    let mut on = KeyAuthLayer::new(tracking.clone()).layer(Trivial);
    let mut off = KeyAuthLayer::new(untracked.clone()).layer(Trivial);
    // Fill both caches, waiting for SQLite.
    for header in &headers {
        for service in [&on, &off] {
            let mut request = Request::new(String::new());
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header.clone());
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    assert_eq!(tracking.cached_keys(), KEYS);
    assert_eq!(untracked.cached_keys(), KEYS);

    // Nanoseconds per request over one pass over every key.
    let pass = |service: &mut _| {
        let start = Instant::now();
        let mut sink = 0u64;
        for header in &headers {
            sink += u64::from(serve(service, Some(header)));
        }
        assert_eq!(black_box(sink), 200 * KEYS as u64);
        start.elapsed().as_nanos() as f64 / KEYS as f64
    };
    // Warm both.
    for _ in 0..3 {
        pass(&mut on);
        pass(&mut off);
    }
    let (mut on_ns, mut off_ns) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            on_ns.push(pass(&mut on));
            off_ns.push(pass(&mut off));
        } else {
            off_ns.push(pass(&mut off));
            on_ns.push(pass(&mut on));
        }
    }
    let ratios: Vec<f64> = on_ns
        .iter()
        .zip(&off_ns)
        .map(|(on, off)| on / off)
        .collect();
    let added: Vec<f64> = on_ns
        .iter()
        .zip(&off_ns)
        .map(|(on, off)| on - off)
        .collect();

    println!(
        "CachedStore<SqliteStore>, {KEYS} keys, requests cycling over all; \
         {rounds} rounds of {KEYS} requests per case, interleaved; interval {interval:?}\n"
    );
    println!("| case | median | IQR |");
    println!("|---|---|---|");
    for (name, values) in [
        ("tracking off", &off_ns),
        ("tracking on", &on_ns),
        ("on − off (per round)", &added),
    ] {
        let (low, median, high) = quartiles(values);
        println!("| {name} | {median:.0} ns | {low:.0}–{high:.0} ns |");
    }
    let (low, median, high) = quartiles(&ratios);
    println!("| on / off (per round) | {median:.3} | {low:.3}–{high:.3} |");

    drop((on, off, tracking, untracked, issuer));
    let _ = std::fs::remove_dir_all(&dir);
}

fn quartiles(values: &[f64]) -> (f64, f64, f64) {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}
