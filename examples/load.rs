//! Load harness: requests per second through a route without a key and
//! with one, in one run, measured by `wrk`.
//!
//! ```sh
//! apt-get install -y wrk                       # the load generator (Debian)
//! cargo run --release --example load           # MemoryStore, a minimal app
//! LOAD_STORE=sqlite cargo run --release --example load    # the quickstart on SQLite
//! LOAD_STORE=postgres DATABASE_URL=postgres://… cargo run --release --example load
//! ```
//!
//! `LOAD_STORE` picks the app:
//!
//! - `memory` (default): a minimal server with two routes running the same
//!   trivial handler, `/public/ping` (a public path) and `/v1/ping` (behind
//!   the key layer), on a `MemoryStore`: the layer's floor.
//! - `sqlite` and `postgres`: the quickstart itself (`examples/quickstart.rs`,
//!   included as a module: the same store set-up, cache, routes and layer,
//!   not a copy), on a fresh SQLite file (or `DATABASE_URL`) or on the
//!   PostgreSQL database `DATABASE_URL` names. Its `GET /` is a public path
//!   whose handler also takes an `Option<Principal>`, so a request with a
//!   valid key is authenticated: that route is measured with and without one.
//!
//! `LOAD_LIMIT=on` (with `LOAD_STORE=memory`) gives the minimal app's key a
//! rate limit that never refuses (10^9 a minute), so that every request with
//! the key is charged to the layer's `MemoryLimiter` and answered with the
//! `RateLimit` fields.
//!
//! `LOAD_CACHE=off` runs the quickstart's app on the bare SQL store (each
//! request with a key is a query); `LOAD_CACHE=on` with `LOAD_STORE=memory`
//! puts the minimal app's `MemoryStore` behind a `CachedStore`.
//!
//! Each round runs the route without a key, the same route with a padding
//! header as long as the `Authorization` header (so both requests are the
//! same size and only the server's work differs), and the route with a
//! valid key, back to back and in a rotating order; rounds repeat so drift
//! on a shared machine hits all alike. The medians of the rates and of the
//! per-round ratios (with their interquartile range) are printed as a
//! Markdown table. On Linux a second table gives the same ratios of
//! requests per CPU-second of the server (its threads' run time, from
//! `/proc/self/task/*/schedstat`, around each wrk run): on a machine whose
//! CPUs other work takes a varying share of, requests per second swing with
//! that share, while requests per CPU-second measure the server's own cost.
//!
//! Before the wrk rounds, the same three requests go through the app's
//! router in this process (`Service::call`, no socket), interleaved in
//! `LOAD_INPROCESS_ROUNDS` (30) rounds of `LOAD_INPROCESS_BATCH` (2000)
//! calls: what the server's own work per request is, and what a key adds
//! to it. `LOAD_INPROCESS_ONLY=1` stops there (for profiling).
//!
//! `LOAD_SECONDS` (2), `LOAD_ROUNDS` (15), `LOAD_CONNECTIONS` (32),
//! `LOAD_THREADS` (1, for wrk) and `LOAD_WORKERS` (2, the server's threads)
//! tune the run; `LOAD_WRK_CPU` pins wrk to one CPU (run the harness itself
//! under `taskset` to keep the server on the others).

// The quickstart's own construction (`connect`, `app`); its `main` and
// printing are not used here.
#[allow(dead_code)]
#[path = "quickstart.rs"]
mod quickstart;

use std::net::SocketAddr;
use std::process::Command;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_keyauth::limit::{MAX_LIMIT, RateLimit, UsageLimits};
use tower_keyauth::store::{CachedStore, PostgresStore, SqliteStore};
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

/// Runs wrk against `url` and returns its requests per second and how many
/// requests it completed.
fn wrk(
    url: &str,
    header: Option<&str>,
    seconds: &str,
    connections: &str,
    threads: &str,
) -> (f64, f64) {
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
    let rate = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in wrk's output: {text}"));
    // "  123456 requests in 2.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output: {text}"));
    (rate, requests)
}

/// The CPU time this process (every thread of the server) has run, in
/// nanoseconds, from `/proc/self/task/*/schedstat` (Linux); `None` elsewhere.
/// Requests per CPU-second of the server do not depend on how much of the
/// CPU other tenants of a shared machine take, which requests per second do.
fn cpu_nanos() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Times the app's own handling of the three kinds of request, through
/// the router's `Service::call` in this process (no socket, no HTTP
/// parsing), in rounds of `LOAD_INPROCESS_BATCH` calls per kind, and prints
/// the medians and the difference a key makes.
async fn in_process(
    router: &Router,
    token: &str,
    paths: (&str, &str),
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use tower::{Service, ServiceExt};
    let rounds: usize = setting("LOAD_INPROCESS_ROUNDS", "30").parse()?;
    let batch: usize = setting("LOAD_INPROCESS_BATCH", "2000").parse()?;
    let bearer = format!("Bearer {token}");
    let padding = "p".repeat(bearer.len());
    let request = |path: &str, header: Option<(&str, &str)>| {
        let mut builder = http::Request::get(path);
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        builder.body(axum::body::Body::empty())
    };
    let kinds = [
        (paths.0, None),
        (paths.0, Some(("x-padding", padding.as_str()))),
        (paths.1, Some(("authorization", bearer.as_str()))),
    ];
    let mut nanos: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds + 1 {
        for step in 0..3 {
            let which = (round + step) % 3;
            let (path, header) = kinds[which];
            let start = std::time::Instant::now();
            for _ in 0..batch {
                let mut service = router.clone();
                let request: http::Request<axum::body::Body> = request(path, header)?;
                let response = ServiceExt::<http::Request<axum::body::Body>>::ready(&mut service)
                    .await?
                    .call(request)
                    .await?;
                assert!(response.status().is_success(), "{}", response.status());
            }
            // The first round warms up.
            if round > 0 {
                nanos[which].push(start.elapsed().as_nanos() as f64 / batch as f64);
            }
        }
    }
    let differences: Vec<f64> = (0..rounds).map(|r| nanos[2][r] - nanos[1][r]).collect();
    let [bare, padded, authed] = nanos;
    println!(
        "| app and store (in process) | without a key (ns) | without a key, same-size request (ns) | with a key (ns) | what the key adds (ns, vs same size) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {label} | {:.0} | {:.0} | {:.0} | {:.0} |",
        median(bare),
        median(padded),
        median(authed),
        median(differences)
    );
    println!();
    Ok(())
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

    // The app, a valid token, the paths without and with a key, a label,
    // and what must live as long as the server (the quickstart's store and
    // its invalidation listener).
    let (router, token, paths, label, _connected) = match kind.as_str() {
        "memory" if setting("LOAD_CACHE", "off") == "on" => {
            let store = CachedStore::new(MemoryStore::new());
            let issued = store.issue(NewKey::org("acme")).await?;
            (
                app(store),
                issued.token.expose_secret().to_owned(),
                ("/public/ping", "/v1/ping"),
                "CachedStore<MemoryStore>, minimal app (/public/ping vs /v1/ping)",
                None,
            )
        }
        "memory" => {
            let store = MemoryStore::new();
            let limited = setting("LOAD_LIMIT", "off") == "on";
            let mut new_key = NewKey::org("acme");
            if limited {
                // A limit that never refuses: every request is charged.
                let limit = RateLimit::per(MAX_LIMIT, Duration::from_secs(60))?;
                new_key = new_key.limits(UsageLimits::new().rate_limit(limit)?);
            }
            let issued = store.issue(new_key).await?;
            let label = if limited {
                "MemoryStore, minimal app, a key with a rate limit (MemoryLimiter)"
            } else {
                "MemoryStore, minimal app (/public/ping vs /v1/ping)"
            };
            (
                app(store),
                issued.token.expose_secret().to_owned(),
                ("/public/ping", "/v1/ping"),
                label,
                None,
            )
        }
        "sqlite" | "postgres" => {
            let url = match (kind.as_str(), std::env::var("DATABASE_URL")) {
                (_, Ok(url)) => url,
                ("sqlite", Err(_)) => format!(
                    "sqlite://{}",
                    std::env::temp_dir()
                        .join(format!("keyauth-load-{}.db", std::process::id()))
                        .display()
                ),
                _ => return Err("LOAD_STORE=postgres needs DATABASE_URL".into()),
            };
            let cached = setting("LOAD_CACHE", "on") != "off";
            let connected = if cached {
                quickstart::connect(&url, quickstart::peppers()?).await?
            } else {
                // The quickstart's app on the bare store: every request with
                // a key is a query.
                let store: quickstart::Store = if kind == "sqlite" {
                    Arc::new(SqliteStore::connect(&url).await?)
                } else {
                    Arc::new(PostgresStore::connect(&url).await?)
                };
                quickstart::Connected {
                    store,
                    listener: None,
                }
            };
            let issued = connected.store.issue(NewKey::org("acme")).await?;
            let label = match (kind.as_str(), cached) {
                ("sqlite", true) => "quickstart, SqliteStore + CachedStore (GET /)",
                ("sqlite", false) => "quickstart, SqliteStore without cache (GET /)",
                (_, true) => "quickstart, PostgresStore + CachedStore + LISTEN/NOTIFY (GET /)",
                (_, false) => "quickstart, PostgresStore without cache (GET /)",
            };
            (
                quickstart::app(connected.store.clone()),
                issued.token.expose_secret().to_owned(),
                ("/", "/"),
                label,
                Some(connected),
            )
        }
        other => {
            return Err(
                format!("LOAD_STORE must be memory, sqlite or postgres, not {other}").into(),
            );
        }
    };

    // The server's own work, without the network: the same requests through
    // the router in this process, interleaved.
    in_process(&router, &token, paths, label).await?;
    if setting("LOAD_INPROCESS_ONLY", "0") == "1" {
        return Ok(());
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });

    let public = format!("http://{addr}{}", paths.0);
    let authenticated = format!("http://{addr}{}", paths.1);
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
    let (mut cpu_ratios, mut cpu_padded_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rates = [0.0; 3];
        // Requests per server CPU-second, where /proc tells.
        let mut per_cpu = [None; 3];
        for step in 0..3 {
            let which = (round + step) % 3;
            let (url, header) = kinds[which];
            let before = cpu_nanos();
            let (rate, requests) = run(url, header, &seconds).await?;
            let after = cpu_nanos();
            rates[which] = rate;
            per_cpu[which] = before
                .zip(after)
                .filter(|(before, after)| after > before)
                .map(|(before, after)| requests * 1e9 / (after - before) as f64);
        }
        let [b, p, a] = rates;
        eprintln!(
            "round {}: public {b:.0}, public padded {p:.0}, authenticated {a:.0} req/s; {:.1}% of padded, {:.1}% of bare",
            round + 1,
            100.0 * a / p,
            100.0 * a / b
        );
        if let [Some(b), Some(p), Some(a)] = per_cpu {
            eprintln!(
                "  per server CPU-second: public {b:.0}, public padded {p:.0}, authenticated {a:.0} requests; {:.1}% of padded, {:.1}% of bare",
                100.0 * a / p,
                100.0 * a / b
            );
            cpu_padded_ratios.push(a / p);
            cpu_ratios.push(a / b);
        }
        bare.push(b);
        padded.push(p);
        authed.push(a);
        padded_ratios.push(a / p);
        ratios.push(a / b);
    }
    println!(
        "| app and store | without a key (req/s) | without a key, same-size request (req/s) | with a key (req/s) | with a key / same-size without | with a key / without |"
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
    if !cpu_ratios.is_empty() {
        println!();
        println!(
            "| app and store | requests per server CPU-second: with a key / same-size without | with a key / without |"
        );
        println!("|---|---|---|");
        println!(
            "| {label} | {} | {} |",
            spread(cpu_padded_ratios),
            spread(cpu_ratios)
        );
    }
    Ok(())
}
