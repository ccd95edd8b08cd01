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
//! key). Each round runs the public route bare, the public route with a
//! padding header as long as the `Authorization` header (so both requests
//! are the same size and only the server's work differs), and the
//! authenticated route, back to back and in a rotating order; rounds repeat
//! so drift on a shared machine hits all alike. The medians of the rates and
//! of the per-round ratios (with their interquartile range) are printed as a
//! Markdown table.
//!
//! `LOAD_STORE` is `memory` (default) or `postgres` (a `PostgresStore` behind
//! a `CachedStore` that listens for invalidations). `LOAD_SECONDS` (2),
//! `LOAD_ROUNDS` (15), `LOAD_CONNECTIONS` (32), `LOAD_THREADS` (1, for wrk)
//! and `LOAD_WORKERS` (2, the server's threads) tune the run;
//! `LOAD_WRK_CPU` pins wrk to one CPU (run the harness itself under
//! `taskset` to keep the server on the others).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tower_keyauth::store::{CachedStore, PostgresStore};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey};

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
    // With LOAD_WRK_CPU set, wrk runs on that CPU alone (via taskset), so
    // that it and the server do not take turns on the same core.
    let mut command = match std::env::var("LOAD_WRK_CPU") {
        Ok(cpu) => {
            let mut command = Command::new("taskset");
            command.args(["-c", &cpu, "wrk"]);
            command
        }
        Err(_) => Command::new("wrk"),
    };
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

/// A ratio's median and interquartile range, in percent.
fn spread(mut ratios: Vec<f64>) -> String {
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| 100.0 * ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    format!("{:.1}% (IQR {:.1}–{:.1}%)", at(0.5), at(0.25), at(0.75))
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
    let seconds = setting("LOAD_SECONDS", "2");
    let rounds: usize = setting("LOAD_ROUNDS", "15").parse()?;
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
    // A header of the same length that the server ignores: with it, public
    // and authenticated requests are the same size, so the client and the
    // kernel do the same work and the difference is the server's.
    let padding = format!(
        "X-Padding: {}",
        "p".repeat(header.len() - "X-Padding: ".len())
    );

    let run = |url: &str, header: Option<&str>, seconds: &str| {
        let (url, header, seconds) = (
            url.to_owned(),
            header.map(str::to_owned),
            seconds.to_owned(),
        );
        let (connections, threads) = (connections.clone(), threads.clone());
        tokio::task::spawn_blocking(move || {
            wrk(&url, header.as_deref(), &seconds, &connections, &threads)
        })
    };
    // Warm up every path (and the cache) before measuring.
    run(&public, None, "1").await?;
    run(&authenticated, Some(&header), "1").await?;

    // Each round runs the three kinds of request back to back, starting
    // with a different one each time, so neither order nor drift favours a
    // kind; ratios are taken within a round.
    let kinds: [(&str, Option<&str>); 3] = [
        (&public, None),
        (&public, Some(&padding)),
        (&authenticated, Some(&header)),
    ];
    let (mut bare, mut padded, mut authed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut padded_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rates = [0.0; 3];
        for step in 0..3 {
            let which = (round + step) % 3;
            let (url, header) = kinds[which];
            rates[which] = run(url, header, &seconds).await?;
        }
        let [b, p, a] = rates;
        eprintln!(
            "round {}: public {b:.0}, public padded {p:.0}, authenticated {a:.0} req/s; {:.1}% of padded, {:.1}% of bare",
            round + 1,
            100.0 * a / p,
            100.0 * a / b
        );
        bare.push(b);
        padded.push(p);
        authed.push(a);
        padded_ratios.push(a / p);
        ratios.push(a / b);
    }
    let label = if kind == "postgres" {
        "PostgresStore + CachedStore"
    } else {
        "MemoryStore"
    };
    println!(
        "| store | public (req/s) | public, same-size request (req/s) | authenticated (req/s) | authenticated / same-size public | authenticated / public |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {label} | {:.0} | {:.0} | {:.0} | {} | {} |",
        median(bare),
        median(padded),
        median(authed),
        spread(padded_ratios),
        spread(ratios)
    );
    Ok(())
}
