//! Issue 12's ratios of the layer's cost, measured interleaved: criterion
//! times one case for seconds before the next, and on a shared machine the
//! speed drifts by 10-30 % between those seconds, more than the ratios
//! being measured. This harness times every case in short batches, round
//! after round in a rotating order, and takes each ratio within a round:
//! drift then hits the numerator and the denominator alike.
//!
//! ```sh
//! cargo bench --bench layer_ratios
//! LAYER_RATIO_ROUNDS=60 cargo bench --bench layer_ratios   # more rounds
//! ```
//!
//! The cases are those of `benches/layer.rs` (same fixture, same services):
//! the yardstick (SHA-256 of the token plus one `HashMap` lookup), the
//! trivial service bare and behind the layer on plain requests (`layer`)
//! and on requests as axum's router hands them to a route's layers
//! (`routed`). It prints each case's median, then the medians and
//! interquartile ranges of the per-round ratios against issue 12's bounds.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use tower::Layer;
use tower_keyauth::KeyAuthLayer;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::store::CachedStore;

#[path = "support/mod.rs"]
mod support;
use support::{Trivial, bearer, fill_cache, fixture, serve, serve_routed, yardstick_map};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

type Case<'a> = (&'static str, Box<dyn FnMut() -> u64 + 'a>);

/// A ratio of issue 12: its label, its value in a round, and its bounds
/// (a lower bound of 0 means "at most").
type Row<'a> = (&'static str, Box<dyn Fn(usize) -> f64 + 'a>, f64, f64);

/// Nanoseconds per call of `case`, over `iterations` calls.
fn time(case: &mut dyn FnMut() -> u64, iterations: usize) -> f64 {
    let start = Instant::now();
    let mut sink = 0;
    for _ in 0..iterations {
        sink += case();
    }
    black_box(sink);
    start.elapsed().as_nanos() as f64 / iterations as f64
}

fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return; // `cargo test --benches` asks; there is nothing to list.
    }
    let rounds = setting("LAYER_RATIO_ROUNDS", 40);
    let iterations = setting("LAYER_RATIO_ITERATIONS", 20_000);

    let fixture = fixture();
    let stored = KeyHash::of(&fixture.valid);
    let (map, probe) = yardstick_map(stored);
    let token = fixture.valid.as_str();
    let matched: Arc<str> = Arc::from("/v1/objects");
    let valid = bearer(&fixture.valid);
    let unknown = bearer(&fixture.unknown);
    let wrong_secret = bearer(&fixture.wrong_secret);
    let limited = bearer(&fixture.limited);

    let mut bare = Trivial;
    let routed_bare = Trivial;
    let mut keyauth = KeyAuthLayer::new(fixture.store.clone()).layer(Trivial);
    let mut routed = KeyAuthLayer::new(fixture.store.clone()).layer(Trivial);
    let mut cached = KeyAuthLayer::new(CachedStore::new(fixture.store.clone())).layer(Trivial);
    let mut routed_cached =
        KeyAuthLayer::new(CachedStore::new(fixture.store.clone())).layer(Trivial);
    fill_cache(&mut cached, &valid);
    fill_cache(&mut routed_cached, &valid);
    assert_eq!(serve(&mut keyauth, Some(&valid)), 200);
    assert_eq!(serve(&mut keyauth, Some(&unknown)), 401);
    assert_eq!(serve(&mut keyauth, Some(&wrong_secret)), 401);
    assert_eq!(serve(&mut keyauth, Some(&limited)), 200);
    assert_eq!(serve(&mut cached, Some(&valid)), 200);
    assert_eq!(serve_routed(&mut routed, Some(&valid), &matched), 200);
    assert_eq!(
        serve_routed(&mut routed_cached, Some(&valid), &matched),
        200
    );

    let mut cases: Vec<Case<'_>> = vec![
        (
            "yardstick",
            Box::new(|| {
                let hash = KeyHash::of(black_box(token));
                u64::from(
                    map.get(black_box(probe.as_str()))
                        .is_some_and(|found| found.matches(&hash)),
                )
            }),
        ),
        (
            "layer/bare",
            Box::new(|| u64::from(serve(&mut bare, Some(&valid)))),
        ),
        ("layer/valid_key", {
            let mut service = keyauth.clone();
            let header = valid.clone();
            Box::new(move || u64::from(serve(&mut service, Some(&header))))
        }),
        ("layer/unknown_id", {
            let mut service = keyauth.clone();
            let header = unknown.clone();
            Box::new(move || u64::from(serve(&mut service, Some(&header))))
        }),
        ("layer/wrong_secret", {
            let mut service = keyauth.clone();
            let header = wrong_secret.clone();
            Box::new(move || u64::from(serve(&mut service, Some(&header))))
        }),
        ("limiter/one_counter", {
            // `MemoryLimiter` alone: one charge of one counter, as the layer
            // makes it for a key with one limit.
            let limiter = tower_keyauth::limit::MemoryLimiter::new();
            let limit = tower_keyauth::limit::RateLimit::per(
                tower_keyauth::limit::MAX_LIMIT,
                std::time::Duration::from_secs(366 * 24 * 3600),
            )
            .unwrap();
            let id = tower_keyauth::ids::KeyId::from("Xb3kP9qLm2Ts");
            Box::new(move || {
                use tower_keyauth::limit::{Counter, CounterId, RateLimiter};
                let counter = [Counter::new(CounterId::key(black_box(&id)), &limit)];
                u64::from(limiter.charge_now(&counter, 1).is_some())
            })
        }),
        ("layer/rate_limited_key", {
            let mut service = keyauth.clone();
            let header = limited.clone();
            Box::new(move || u64::from(serve(&mut service, Some(&header))))
        }),
        ("layer/cached_valid_key", {
            let mut service = cached.clone();
            let header = valid.clone();
            Box::new(move || u64::from(serve(&mut service, Some(&header))))
        }),
        ("routed/bare", {
            let mut service = routed_bare;
            let header = valid.clone();
            let matched = Arc::clone(&matched);
            Box::new(move || u64::from(serve_routed(&mut service, Some(&header), &matched)))
        }),
        ("routed/valid_key", {
            let mut service = routed.clone();
            let header = valid.clone();
            let matched = Arc::clone(&matched);
            Box::new(move || u64::from(serve_routed(&mut service, Some(&header), &matched)))
        }),
        ("routed/unknown_id", {
            let mut service = routed.clone();
            let header = unknown.clone();
            let matched = Arc::clone(&matched);
            Box::new(move || u64::from(serve_routed(&mut service, Some(&header), &matched)))
        }),
        ("routed/cached_valid_key", {
            let mut service = routed_cached.clone();
            let header = valid.clone();
            let matched = Arc::clone(&matched);
            Box::new(move || u64::from(serve_routed(&mut service, Some(&header), &matched)))
        }),
    ];

    // Warm every case, then sample them round by round.
    for (_, case) in cases.iter_mut() {
        time(case.as_mut(), iterations);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for offset in 0..cases.len() {
            let index = (round + offset) % cases.len();
            samples[index].push(time(cases[index].1.as_mut(), iterations));
        }
    }
    let names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
    drop(cases);
    let of = |name: &str| &samples[names.iter().position(|n| *n == name).unwrap()];

    println!("{rounds} rounds of {iterations} calls per case, interleaved\n");
    println!("| case | median | IQR |");
    println!("|---|---|---|");
    for (name, values) in names.iter().zip(&samples) {
        let (low, median, high) = quartiles(&mut values.clone());
        println!("| `{name}` | {median:.1} ns | {low:.1}–{high:.1} ns |");
    }

    let per_round = |ratio: &dyn Fn(usize) -> f64| -> (f64, f64, f64) {
        quartiles(&mut (0..rounds).map(ratio).collect::<Vec<_>>())
    };
    let added = |case: &'static str, bare: &'static str| {
        move |round: usize| (of(case)[round] - of(bare)[round]) / of("yardstick")[round]
    };
    println!();
    println!("| ratio (issue 12) | median | IQR | bound | verdict |");
    println!("|---|---|---|---|---|");
    let rows: Vec<Row<'_>> = vec![
        (
            "valid key, added / yardstick",
            Box::new(added("layer/valid_key", "layer/bare")),
            0.0,
            3.0,
        ),
        (
            "`CachedStore` hit, added / yardstick",
            Box::new(added("layer/cached_valid_key", "layer/bare")),
            0.0,
            3.5,
        ),
        (
            "unknown id, added / yardstick",
            Box::new(added("layer/unknown_id", "layer/bare")),
            0.0,
            3.0,
        ),
        (
            "wrong secret / unknown id",
            Box::new(|round| of("layer/wrong_secret")[round] / of("layer/unknown_id")[round]),
            0.97,
            1.03,
        ),
        (
            "routed: valid key, added / yardstick",
            Box::new(added("routed/valid_key", "routed/bare")),
            0.0,
            3.0,
        ),
        (
            "routed: `CachedStore` hit, added / yardstick",
            Box::new(added("routed/cached_valid_key", "routed/bare")),
            0.0,
            3.5,
        ),
        (
            "routed: unknown id, added / yardstick",
            Box::new(added("routed/unknown_id", "routed/bare")),
            0.0,
            3.0,
        ),
    ];
    rows_done(rows, &per_round);
    println!();
    println!("| cost of one rate limit (issue 15) | median | IQR | bound | verdict |");
    println!("|---|---|---|---|---|");
    let (low, median, high) =
        per_round(&|round| of("layer/rate_limited_key")[round] - of("layer/valid_key")[round]);
    println!(
        "| the layer: a key with one limit over one without (charge, fields, headers), ns | {median:.1} | {low:.1}–{high:.1} | | |"
    );
    let (low, median, high) = per_round(&|round| of("limiter/one_counter")[round]);
    let verdict = if median <= 50.0 { "met" } else { "missed" };
    println!(
        "| the in-process limiter: one charge of one counter (`MemoryLimiter::charge_now`), ns | {median:.1} | {low:.1}–{high:.1} | ≤ 50 | {verdict} |"
    );
}

/// Quartiles of a ratio taken in every round.
type PerRound<'a> = dyn Fn(&dyn Fn(usize) -> f64) -> (f64, f64, f64) + 'a;

/// Prints each row's ratio against its bound.
fn rows_done(rows: Vec<Row<'_>>, per_round: &PerRound<'_>) {
    for (label, ratio, low_bound, high_bound) in rows {
        let (low, median, high) = per_round(&*ratio);
        let bound = if low_bound > 0.0 {
            format!("{low_bound:.2}–{high_bound:.2}")
        } else {
            format!("≤ {high_bound:.1}")
        };
        let met = median >= low_bound && median <= high_bound;
        let verdict = if met { "met" } else { "missed" };
        println!("| {label} | {median:.3} | {low:.3}–{high:.3} | {bound} | {verdict} |");
    }
}
