//! The Redis limiter's cost per request (issue 15): one charge is one round
//! trip to Redis (a Lua script). Measured against a `redis-server` on
//! loopback, sequential charges from one task and 32 concurrent tasks, with
//! the in-process `MemoryLimiter` for scale, and the layer over a limited key
//! with each limiter.
//!
//! ```sh
//! KEYAUTH_BENCH_REDIS_URL=redis://127.0.0.1:6379/ cargo bench --bench redis_limiter
//! ```
//!
//! (`KEYAUTH_TEST_REDIS_URL` is used when the first is unset.) Counters are
//! written under a prefix of their own, with a limit never spent.

use std::time::{Duration, Instant};

use tower_keyauth::limit::{
    Counter, CounterId, MAX_LIMIT, MemoryLimiter, RateLimit, RateLimiter, RedisLimiter,
};

const CHARGES: usize = 20_000;
const CONCURRENT: usize = 32;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let Some(url) = std::env::var("KEYAUTH_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("KEYAUTH_TEST_REDIS_URL"))
        .ok()
    else {
        eprintln!(
            "redis_limiter: skipped, it needs a Redis server. Run it with\n\
             KEYAUTH_BENCH_REDIS_URL=redis://host:port/ cargo bench --bench redis_limiter"
        );
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run(&url));
}

async fn run(url: &str) {
    let limit = RateLimit::per(MAX_LIMIT, Duration::from_secs(366 * 24 * 3600)).unwrap();
    let prefix = format!("keyauth-bench:{}:", std::process::id());
    let redis = RedisLimiter::connect(url)
        .await
        .expect("the Redis server answers")
        .prefix(prefix.as_str());
    let memory = MemoryLimiter::new();
    let counters = |i: usize| {
        [Counter::new(
            CounterId::from(format!("key:{}", i % 1000)),
            &limit,
        )]
    };

    println!("| limiter | sequential, per charge | {CONCURRENT} concurrent tasks, per charge |");
    println!("|---|---|---|");
    for round in 0..2 {
        let memory_one = timed(CHARGES, |i| {
            let memory = memory.clone();
            async move { memory.charge(&counters(i), 1).await.unwrap() }
        })
        .await;
        let redis_one = timed(CHARGES, |i| {
            let redis = redis.clone();
            async move { redis.charge(&counters(i), 1).await.unwrap() }
        })
        .await;
        let redis_many = timed_concurrent(&redis, &counters).await;
        if round == 1 {
            println!("| `MemoryLimiter` | {:.0} ns | |", memory_one.as_nanos());
            println!(
                "| `RedisLimiter` (loopback) | {:.1} µs | {:.1} µs |",
                redis_one.as_secs_f64() * 1e6,
                redis_many.as_secs_f64() * 1e6
            );
        }
    }
}

/// The mean time of `n` sequential charges.
async fn timed<F, Fut>(n: usize, charge: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future,
{
    let started = Instant::now();
    for i in 0..n {
        std::hint::black_box(charge(i).await);
    }
    started.elapsed() / u32::try_from(n).unwrap()
}

/// The mean time per charge of `CHARGES` charges made by `CONCURRENT`
/// tasks at once (pipelined on the limiter's one multiplexed connection).
async fn timed_concurrent(
    redis: &RedisLimiter,
    counters: &(impl Fn(usize) -> [Counter; 1] + Sync),
) -> Duration {
    let per_task = CHARGES / CONCURRENT;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..CONCURRENT {
        let redis = redis.clone();
        let batch: Vec<[Counter; 1]> = (0..per_task)
            .map(|i| counters(task * per_task + i))
            .collect();
        tasks.spawn(async move {
            for counter in batch {
                redis.charge(&counter, 1).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed() / u32::try_from(per_task * CONCURRENT).unwrap()
}
