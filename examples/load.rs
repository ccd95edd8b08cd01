//! Load harness: requests per second through a public route and an
//! authenticated route of one server, in one run, measured by `wrk`.
//!
//! ```sh
//! apt-get install -y wrk                       # the load generator (Debian)
//! cargo run --release --example load           # MemoryStore
//! LOAD_STORE=postgres DATABASE_URL=postgres://… cargo run --release --example load
//! ```
//!
//! The server has two routes with the same trivial handler: `/public/ping`
//! (a public path) and `/v1/ping` (behind the key layer, called with a valid
//! key). Rounds alternate between them so drift on a shared machine hits
//! both alike; each round's ratio is the authenticated rate over the public
//! one, and the medians of rates and of ratios are printed as a Markdown
//! table.
//!
//! `LOAD_STORE` is `memory` (default) or `postgres` (a `PostgresStore` behind
//! a `CachedStore` that listens for invalidations). `LOAD_SECONDS` (5),
//! `LOAD_ROUNDS` (5), `LOAD_CONNECTIONS` (32), `LOAD_THREADS` (1, for wrk)
//! and `LOAD_WORKERS` (2, the server's threads) tune the run.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tower_keyauth::{
    CachedStore, KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey, PostgresStore,
};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn ping() -> &'static str {
    "pong"
}

fn app<S: KeyStore>(store: S) -> Router {
    Router::new()
        .route("/public/ping", get(ping))
        .route("/v1/ping", get(ping))
        .layer(KeyAuthLayer::new(store).public("/public/*"))
}

/// Runs wrk against `url` and returns its requests per second.
fn wrk(url: &str, header: Option<&str>, seconds: &str, connections: &str, threads: &str) -> f64 {
    let mut command = Command::new("wrk");
    command.args([
        "-t",
        threads,
        "-c",
        connections,
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().unwrap_or_else(|error| {
        eprintln!("could not run wrk ({error}); install it with: apt-get install -y wrk");
        std::process::exit(2);
    });
    let text = String::from_utf8_lossy(&output.stdout);
    let non_2xx = text.lines().find(|line| line.contains("Non-2xx"));
    assert!(non_2xx.is_none(), "wrong answers under load: {text}");
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = setting("LOAD_WORKERS", "2").parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let kind = setting("LOAD_STORE", "memory");
    let seconds = setting("LOAD_SECONDS", "5");
    let rounds: usize = setting("LOAD_ROUNDS", "5").parse()?;
    let connections = setting("LOAD_CONNECTIONS", "32");
    let threads = setting("LOAD_THREADS", "1");

    let (router, token, _listener) = match kind.as_str() {
        "memory" => {
            let store = MemoryStore::new();
            let issued = store.issue(NewKey::org("acme")).await?;
            (app(store), issued.token.expose_secret().to_owned(), None)
        }
        "postgres" => {
            let url = std::env::var("DATABASE_URL")
                .map_err(|_| "LOAD_STORE=postgres needs DATABASE_URL")?;
            let store = PostgresStore::connect(&url).await?;
            let cached = CachedStore::new(store.clone());
            let listener = store.listen_for_invalidations(cached.invalidator()).await?;
            let issued = cached.issue(NewKey::org("acme")).await?;
            (
                app(cached),
                issued.token.expose_secret().to_owned(),
                Some(Arc::new(listener)),
            )
        }
        other => return Err(format!("LOAD_STORE must be memory or postgres, not {other}").into()),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let public = format!("http://{addr}/public/ping");
    let authenticated = format!("http://{addr}/v1/ping");
    let header = format!("Authorization: Bearer {token}");

    // Warm up both paths (and the cache) before measuring.
    let run = |url: String, header: Option<String>, seconds: String| {
        let (connections, threads) = (connections.clone(), threads.clone());
        tokio::task::spawn_blocking(move || {
            wrk(&url, header.as_deref(), &seconds, &connections, &threads)
        })
    };
    run(public.clone(), None, "1".into()).await?;
    run(authenticated.clone(), Some(header.clone()), "1".into()).await?;

    let mut public_rates = Vec::new();
    let mut authenticated_rates = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let p = run(public.clone(), None, seconds.clone()).await?;
        let a = run(authenticated.clone(), Some(header.clone()), seconds.clone()).await?;
        eprintln!(
            "round {round}: public {p:.0} req/s, authenticated {a:.0} req/s, {:.1}%",
            100.0 * a / p
        );
        public_rates.push(p);
        authenticated_rates.push(a);
        ratios.push(a / p);
    }
    let (p, a, ratio) = (
        median(public_rates),
        median(authenticated_rates),
        median(ratios),
    );
    println!(
        "| store | public route (req/s) | authenticated route (req/s) | ratio (median of rounds) |"
    );
    println!("|---|---|---|---|");
    let label = if kind == "postgres" {
        "PostgresStore + CachedStore"
    } else {
        "MemoryStore"
    };
    println!("| {label} | {p:.0} | {a:.0} | {:.1}% |", 100.0 * ratio);
    Ok(())
}
