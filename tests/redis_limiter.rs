//! `RedisLimiter` against the Redis server named by
//! `KEYAUTH_TEST_REDIS_URL` (CI starts one): exact counts under concurrency
//! from two instances, all-or-nothing charges, windows that close, costs
//! above a limit, a Redis that goes away and comes back, and no password
//! in errors or `Debug`.
//!
//! A custom harness (libtest-mimic): without the variable every test here
//! shows as ignored, with the reason, and is counted as such in the
//! summary; with it, a server that does not answer fails them. Each test
//! counts under its own key prefix, so tests never see each other's
//! counters.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::Trial;
use redis::AsyncCommands;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tower_keyauth::limit::{
    Charge, Counter, CounterState, LimiterError, MAX_COUNTERS, RateLimit, RateLimiter, RedisLimiter,
};

const REDIS_URL_VAR: &str = "KEYAUTH_TEST_REDIS_URL";

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        trial(
            "two_instances_admit_exactly_the_limit_of_1000_concurrent_charges",
            two_instances_admit_exactly_the_limit_of_1000_concurrent_charges,
        ),
        trial(
            "a_charge_refused_by_one_counter_charges_none",
            a_charge_refused_by_one_counter_charges_none,
        ),
        trial("a_closed_window_admits_again", a_closed_window_admits_again),
        trial(
            "a_refund_reaches_only_the_window_it_was_charged_in",
            a_refund_reaches_only_the_window_it_was_charged_in,
        ),
        trial(
            "a_cost_above_the_limit_is_refused_with_the_window",
            a_cost_above_the_limit_is_refused_with_the_window,
        ),
        trial(
            "the_tightest_counter_is_reported",
            the_tightest_counter_is_reported,
        ),
        trial(
            "a_counter_named_twice_is_refused",
            a_counter_named_twice_is_refused,
        ),
        trial(
            "a_counter_without_expiry_gets_one",
            a_counter_without_expiry_gets_one,
        ),
        trial(
            "a_counter_holding_a_non_number_is_an_error",
            a_counter_holding_a_non_number_is_an_error,
        ),
        trial(
            "an_unreachable_redis_is_an_error",
            an_unreachable_redis_is_an_error,
        ),
        trial(
            "a_redis_that_goes_away_fails_every_charge_then_comes_back",
            a_redis_that_goes_away_fails_every_charge_then_comes_back,
        ),
        trial(
            "a_redis_that_stops_answering_fails_charges_within_seconds",
            a_redis_that_stops_answering_fails_charges_within_seconds,
        ),
        trial(
            "the_password_appears_in_no_error_and_no_debug",
            the_password_appears_in_no_error_and_no_debug,
        ),
        trial(
            "instances_with_other_prefixes_count_apart",
            instances_with_other_prefixes_count_apart,
        ),
        trial(
            "two_layers_sharing_redis_admit_exactly_100_of_1000_requests",
            two_layers_sharing_redis_admit_exactly_100_of_1000_requests,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// A test of the Redis server, run on a multi-thread runtime; ignored, with
/// the reason, when no server is named.
fn trial<F: Future<Output = ()> + 'static>(name: &str, test: fn() -> F) -> Trial {
    let trial = Trial::test(name, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(test());
        Ok(())
    });
    if redis_url().is_some() {
        trial
    } else {
        trial
            .with_ignored_flag(true)
            .with_kind(format!("needs {REDIS_URL_VAR}"))
    }
}

fn redis_url() -> Option<String> {
    std::env::var(REDIS_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

fn require_redis_url() -> String {
    redis_url().unwrap_or_else(|| panic!("this test needs {REDIS_URL_VAR}, which is unset"))
}

/// A key prefix of this test alone.
fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "keyauth-test:{}:{}:{}:{test}:",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    )
}

async fn limiter(prefix: &str) -> RedisLimiter {
    RedisLimiter::connect(&require_redis_url())
        .await
        .expect("the test Redis answers")
        .prefix(prefix)
}

/// A plain connection, to look at the counters.
async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(require_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis answers")
}

fn counter(id: &str, limit: u32, window_secs: u64) -> Counter {
    Counter::new(
        id,
        &RateLimit::per(limit, Duration::from_secs(window_secs)).unwrap(),
    )
}

/// The Redis key of `counter` under `prefix`.
fn key(prefix: &str, counter: &Counter) -> String {
    format!("{prefix}{counter}")
}

fn admitted(charge: Charge) -> CounterState {
    match charge {
        Charge::Admitted(state) => state,
        Charge::Limited(state) => panic!("limited, expected admitted: {state:?}"),
    }
}

fn limited(charge: Charge) -> CounterState {
    match charge {
        Charge::Limited(state) => state,
        Charge::Admitted(state) => panic!("admitted, expected limited: {state:?}"),
    }
}

/// Issue 15's acceptance: two instances (each its own connection) sharing
/// one counter of 100 a minute, 1000 charges at once: exactly 100 admitted.
async fn two_instances_admit_exactly_the_limit_of_1000_concurrent_charges() {
    let prefix = unique_prefix("exact");
    let instances = [limiter(&prefix).await, limiter(&prefix).await];
    let counters = [counter("key:k1", 100, 60)];
    let mut charges = JoinSet::new();
    for i in 0..1000 {
        let limiter = instances[i % 2].clone();
        let counters = counters.clone();
        charges.spawn(async move { limiter.charge(&counters, 1).await });
    }
    let (mut admitted, mut refused) = (0, 0);
    while let Some(charge) = charges.join_next().await {
        match charge.unwrap().expect("the charge reaches Redis") {
            Charge::Admitted(_) => admitted += 1,
            Charge::Limited(state) => {
                assert!(state.resets_in > Duration::ZERO);
                assert!(state.resets_in <= Duration::from_secs(60));
                assert_eq!(state.remaining, 0);
                refused += 1;
            }
        }
    }
    assert_eq!((admitted, refused), (100, 900));
    let count: u32 = admin().await.get(key(&prefix, &counters[0])).await.unwrap();
    assert_eq!(count, 100);
}

/// Issue 15's acceptance: a charge refused by its second limit leaves the
/// first limit's count unchanged.
async fn a_charge_refused_by_one_counter_charges_none() {
    let prefix = unique_prefix("all-or-nothing");
    let limiter = limiter(&prefix).await;
    let counters = [counter("key:k1", 10, 60), counter("owner:acme", 3, 60)];
    for expected in [2, 1, 0] {
        let state = admitted(limiter.charge(&counters, 1).await.unwrap());
        assert_eq!((state.counter, state.remaining), (1, expected));
    }
    let state = limited(limiter.charge(&counters, 1).await.unwrap());
    assert_eq!((state.counter, state.remaining), (1, 0));
    assert!(state.resets_in > Duration::ZERO && state.resets_in <= Duration::from_secs(60));

    let mut admin = admin().await;
    let first: u32 = admin.get(key(&prefix, &counters[0])).await.unwrap();
    let second: u32 = admin.get(key(&prefix, &counters[1])).await.unwrap();
    assert_eq!((first, second), (3, 3));
    // The first counter alone: its fourth unit, 6 left.
    let state = admitted(limiter.charge(&counters[..1], 1).await.unwrap());
    assert_eq!((state.counter, state.remaining), (0, 6));

    // A refusal by the first of two counters charges the second neither,
    // and a counter that did not exist is not created.
    let fresh = [counter("owner:acme", 3, 60), counter("key:k2", 10, 60)];
    limited(limiter.charge(&fresh, 1).await.unwrap());
    let exists: bool = admin.exists(key(&prefix, &fresh[1])).await.unwrap();
    assert!(!exists);
}

/// A refund gives units back to the window that was charged, and never to
/// a window that opened after the charge.
async fn a_refund_reaches_only_the_window_it_was_charged_in() {
    let prefix = unique_prefix("refund");
    let limiter = limiter(&prefix).await;
    let counters = [counter("key:k1", 10, 60), counter("org:acme", 5, 60)];
    for _ in 0..3 {
        admitted(limiter.charge(&counters, 1).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Charged just now in windows 100 ms old: both get their unit back.
    limiter.refund(&counters, 1, Duration::ZERO).await.unwrap();
    let mut admin = admin().await;
    let counts: (u32, u32) = (
        admin.get(key(&prefix, &counters[0])).await.unwrap(),
        admin.get(key(&prefix, &counters[1])).await.unwrap(),
    );
    assert_eq!(counts, (2, 2));
    // A refund for a charge made 10 s ago cannot belong to these windows,
    // opened 100 ms ago: nothing changes.
    limiter
        .refund(&counters, 1, Duration::from_secs(10))
        .await
        .unwrap();
    let first: u32 = admin.get(key(&prefix, &counters[0])).await.unwrap();
    assert_eq!(first, 2);
    // A counter that does not exist is not created, nor made negative.
    let absent = [counter("key:absent", 10, 60)];
    limiter.refund(&absent, 1, Duration::ZERO).await.unwrap();
    let exists: bool = admin.exists(key(&prefix, &absent[0])).await.unwrap();
    assert!(!exists);
}

/// A window of one second admits again once it has passed, and a refusal's
/// `resets_in` is within the window and above zero.
async fn a_closed_window_admits_again() {
    let prefix = unique_prefix("window");
    let limiter = limiter(&prefix).await;
    let counters = [counter("key:k1", 2, 1)];
    let first = admitted(limiter.charge(&counters, 1).await.unwrap());
    assert_eq!(first.remaining, 1);
    assert_eq!(first.resets_in, Duration::from_secs(1));
    admitted(limiter.charge(&counters, 1).await.unwrap());
    let refused = limited(limiter.charge(&counters, 1).await.unwrap());
    assert!(refused.resets_in > Duration::ZERO);
    assert!(refused.resets_in <= Duration::from_secs(1));

    tokio::time::sleep(refused.resets_in + Duration::from_millis(50)).await;
    let again = admitted(limiter.charge(&counters, 1).await.unwrap());
    // A fresh window: one unit charged, the whole second ahead.
    assert_eq!(again.remaining, 1);
    assert_eq!(again.resets_in, Duration::from_secs(1));
    let ttl: i64 = admin()
        .await
        .pttl(key(&prefix, &counters[0]))
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 1000, "PTTL {ttl}");
}

/// A cost above a limit can never pass: refused at once with the window's
/// length, charging nothing, even on a fresh counter.
async fn a_cost_above_the_limit_is_refused_with_the_window() {
    let prefix = unique_prefix("cost");
    let limiter = limiter(&prefix).await;
    let counters = [counter("key:k1", 100, 60), counter("owner:acme", 5, 30)];
    let state = limited(limiter.charge(&counters, 6).await.unwrap());
    assert_eq!(
        state,
        CounterState {
            counter: 1,
            remaining: 5,
            resets_in: Duration::from_secs(30),
        }
    );
    let mut admin = admin().await;
    let exists: usize = admin
        .exists(&[key(&prefix, &counters[0]), key(&prefix, &counters[1])])
        .await
        .unwrap();
    assert_eq!(exists, 0);
    // The whole limit at once is fine.
    let state = admitted(limiter.charge(&counters, 5).await.unwrap());
    assert_eq!((state.counter, state.remaining), (1, 0));
    // And a cost above the limit of a spent counter still reports the window.
    let state = limited(limiter.charge(&counters, 6).await.unwrap());
    assert_eq!(
        (state.counter, state.resets_in),
        (1, Duration::from_secs(30))
    );
}

/// Admitted: the fewest units left, the soonest reset among equals.
/// Limited: of several refusing counters, the one that frees up last.
async fn the_tightest_counter_is_reported() {
    let prefix = unique_prefix("tightest");
    let limiter = limiter(&prefix).await;
    let counters = [
        counter("a", 10, 60),
        counter("b", 3, 60),
        counter("c", 3, 5),
    ];
    let state = admitted(limiter.charge(&counters, 1).await.unwrap());
    assert_eq!(state.counter, 2, "{state:?}");
    assert_eq!(state.remaining, 2);
    assert_eq!(state.resets_in, Duration::from_secs(5));
    admitted(limiter.charge(&counters, 2).await.unwrap());
    // b and c are spent; b frees up last (60 s against 5 s).
    let state = limited(limiter.charge(&counters, 1).await.unwrap());
    assert_eq!((state.counter, state.remaining), (1, 0));
    assert!(state.resets_in > Duration::from_secs(5), "{state:?}");
}

/// The same counter twice in one charge is refused as invalid, as every
/// limiter refuses it, and costs nothing.
async fn a_counter_named_twice_is_refused() {
    let prefix = unique_prefix("twice");
    let limiter = limiter(&prefix).await;
    let counters = [counter("key:k1", 3, 60), counter("key:k1", 3, 60)];
    assert!(matches!(
        limiter.charge(&counters, 1).await,
        Err(LimiterError::Invalid)
    ));
    let count: Option<u32> = admin().await.get(key(&prefix, &counters[0])).await.unwrap();
    assert_eq!(count, None);
}

/// A counter left without an expiry (written by hand, say) is given one,
/// whether the charge is admitted or refused, so it cannot refuse forever.
async fn a_counter_without_expiry_gets_one() {
    let prefix = unique_prefix("no-expiry");
    let limiter = limiter(&prefix).await;
    let mut admin = admin().await;
    let (spent, open) = (counter("spent", 5, 60), counter("open", 5, 60));
    let () = admin.set(key(&prefix, &spent), 5).await.unwrap();
    let () = admin.set(key(&prefix, &open), 1).await.unwrap();

    let state = limited(
        limiter
            .charge(std::slice::from_ref(&spent), 1)
            .await
            .unwrap(),
    );
    assert_eq!(state.resets_in, Duration::from_secs(60));
    let ttl: i64 = admin.pttl(key(&prefix, &spent)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");

    let state = admitted(
        limiter
            .charge(std::slice::from_ref(&open), 1)
            .await
            .unwrap(),
    );
    assert_eq!(
        (state.remaining, state.resets_in),
        (3, Duration::from_secs(60))
    );
    let ttl: i64 = admin.pttl(key(&prefix, &open)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
}

/// A key under the prefix that holds something else fails the charge
/// instead of admitting it.
async fn a_counter_holding_a_non_number_is_an_error() {
    let prefix = unique_prefix("corrupt");
    let limiter = limiter(&prefix).await;
    let mut admin = admin().await;
    let (text, list) = (counter("key:k1", 5, 60), counter("key:k2", 5, 60));
    let () = admin.set(key(&prefix, &text), "many").await.unwrap();
    let () = admin.lpush(key(&prefix, &list), 1).await.unwrap();
    for counter in [&text, &list] {
        let charge = limiter.charge(std::slice::from_ref(counter), 1).await;
        assert!(
            matches!(charge, Err(LimiterError::Backend(_))),
            "{charge:?}"
        );
    }
    let () = admin
        .del(&[key(&prefix, &text), key(&prefix, &list)])
        .await
        .unwrap();
}

/// Nothing listens on the port: `connect` fails, quickly.
async fn an_unreachable_redis_is_an_error() {
    let _ = require_redis_url();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let connected = RedisLimiter::connect(&format!("redis://127.0.0.1:{port}/")).await;
    assert!(
        matches!(connected, Err(LimiterError::Backend(_))),
        "{connected:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let not_a_url = RedisLimiter::connect("http://127.0.0.1/").await;
    assert!(matches!(not_a_url, Err(LimiterError::Backend(_))));
}

/// A TCP relay to the test Redis that can be cut, made to hang, and
/// restored on the same port: the limiter's Redis going away or stopping
/// to answer, and coming back.
struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    tasks: JoinSet<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr, addr: SocketAddr) -> Self {
        Self::start_with(upstream, addr, true).await
    }

    /// Relays to `upstream`, or, unless `forward`, accepts connections and
    /// never answers (a server that hangs, a network that drops packets).
    async fn start_with(upstream: SocketAddr, addr: SocketAddr, forward: bool) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // The connections die with the accepting task's set.
            let mut connections = JoinSet::new();
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                connections.spawn(async move {
                    if !forward {
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            upstream,
            tasks,
        }
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Cuts every relayed connection, and lets new ones hang.
    async fn hang(&mut self) {
        self.cut().await;
        *self = Self::start_with(self.upstream, self.addr, false).await;
    }

    async fn restore(&mut self) {
        self.cut().await;
        *self = Self::start(self.upstream, self.addr).await;
    }
}

async fn test_redis_addr() -> SocketAddr {
    let url = require_redis_url();
    let info = redis::Client::open(url.as_str()).unwrap();
    let redis::ConnectionAddr::Tcp(host, port) = info.get_connection_info().addr() else {
        panic!("{REDIS_URL_VAR} must name a TCP address for this test");
    };
    tokio::net::lookup_host((host.as_str(), *port))
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// Cut the connection under a working limiter: every charge fails (never
/// admits) within a bound, invalid charges still fail as invalid without a
/// round trip, and charges work again once Redis is back.
async fn a_redis_that_goes_away_fails_every_charge_then_comes_back() {
    let prefix = unique_prefix("down");
    let mut relay = Relay::start(test_redis_addr().await, "127.0.0.1:0".parse().unwrap()).await;
    let limiter = RedisLimiter::connect(&format!("redis://{}/", relay.addr))
        .await
        .unwrap()
        .prefix(prefix.as_str());
    let counters = [counter("key:k1", 100, 60)];
    admitted(limiter.charge(&counters, 1).await.unwrap());

    relay.cut().await;
    for _ in 0..3 {
        let started = Instant::now();
        let charge = limiter.charge(&counters, 1).await;
        assert!(
            matches!(charge, Err(LimiterError::Backend(_))),
            "{charge:?}"
        );
        println!("a charge failed after {:?}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let too_many: Vec<Counter> = (0..=MAX_COUNTERS)
        .map(|i| counter(&format!("c{i}"), 1, 1))
        .collect();
    // `Counter`'s fields are public; a window of zero would admit all.
    let zero_window = Counter {
        window: Duration::ZERO,
        ..counter("key:k1", 100, 60)
    };
    for (counters, cost) in [
        (&counters[..], 0),
        (&[][..], 1),
        (&too_many[..], 1),
        (&[counter(&"x".repeat(257), 1, 1)][..], 1),
        (&[zero_window.clone()][..], 1),
    ] {
        let started = Instant::now();
        let charge = limiter.charge(counters, cost).await;
        assert!(matches!(charge, Err(LimiterError::Invalid)), "{charge:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        match limiter.charge(&counters, 1).await {
            Ok(charge) => break admitted(charge),
            Err(LimiterError::Backend(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("Redis is back, the limiter is not: {error}"),
        }
    };
    // The one charge before the cut, this one, nothing from the failures.
    assert_eq!(state.remaining, 98);
}

/// A Redis that stops answering (connections accepted, never served):
/// charges fail within the connection and response timeouts, never hang,
/// never admit; and work again once it answers.
async fn a_redis_that_stops_answering_fails_charges_within_seconds() {
    let prefix = unique_prefix("hang");
    let mut relay = Relay::start(test_redis_addr().await, "127.0.0.1:0".parse().unwrap()).await;
    let limiter = RedisLimiter::connect(&format!("redis://{}/", relay.addr))
        .await
        .unwrap()
        .prefix(prefix.as_str());
    let counters = [counter("key:k1", 100, 60)];
    admitted(limiter.charge(&counters, 1).await.unwrap());

    relay.hang().await;
    // The first charges find the cut connection; the next ones wait on
    // connections that are accepted and never served.
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let started = Instant::now();
        let charge = limiter.charge(&counters, 1).await;
        let took = started.elapsed();
        println!("a charge failed after {took:?}");
        assert!(
            matches!(charge, Err(LimiterError::Backend(_))),
            "{charge:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest >= Duration::from_millis(500),
        "no charge met the hang"
    );

    relay.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match limiter.charge(&counters, 1).await {
            Ok(charge) => {
                // The one charge before, this one; nothing from the failures.
                assert_eq!(admitted(charge).remaining, 98);
                break;
            }
            Err(LimiterError::Backend(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("Redis answers again, the limiter does not: {error}"),
        }
    }
}

/// The error chain as text, every level, Display and Debug.
fn error_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut level = Some(error);
    while let Some(error) = level {
        text.push_str(&format!("{error} / {error:?}\n"));
        level = error.source();
    }
    text
}

/// A user with a password: a wrong password fails to connect, and neither
/// that error nor the connected limiter's `Debug` shows the password.
async fn the_password_appears_in_no_error_and_no_debug() {
    let url = require_redis_url();
    let mut admin = admin().await;
    let user = format!("keyauth-test-{}", std::process::id());
    let password = "correct-horse-battery-staple";
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .unwrap();
    let with_password = |password: &str| {
        let (scheme, rest) = url.split_once("://").unwrap();
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{user}:{password}@{rest}")
    };

    let limiter = RedisLimiter::connect(&with_password(password))
        .await
        .expect("the ACL user connects")
        .prefix(unique_prefix("password"));
    let debug = format!("{limiter:?} {limiter:#?}");
    assert!(!debug.contains(password), "{debug}");
    admitted(
        limiter
            .charge(&[counter("key:k1", 1, 60)], 1)
            .await
            .unwrap(),
    );

    let wrong = "wrong-horse-battery-staple";
    let error = RedisLimiter::connect(&with_password(wrong))
        .await
        .unwrap_err();
    assert!(matches!(error, LimiterError::Backend(_)));
    let text = error_text(&error);
    assert!(!text.contains(wrong) && !text.contains(password), "{text}");

    let () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
}

/// Two prefixes on one Redis are two sets of counters.
async fn instances_with_other_prefixes_count_apart() {
    let first = limiter(&unique_prefix("apart")).await;
    let second = limiter(&unique_prefix("apart")).await;
    let counters = [counter("key:k1", 1, 60)];
    admitted(first.charge(&counters, 1).await.unwrap());
    admitted(second.charge(&counters, 1).await.unwrap());
    limited(first.charge(&counters, 1).await.unwrap());
    assert_eq!(
        RedisLimiter::new(
            redis::aio::ConnectionManager::new(redis::Client::open(require_redis_url()).unwrap())
                .await
                .unwrap()
        )
        .key_prefix(),
        RedisLimiter::DEFAULT_PREFIX
    );
}

/// The issue's acceptance: two `KeyAuthLayer` instances (each with its own
/// connection to Redis) in front of one store, 1 000 concurrent requests
/// with a key limited to 100 a minute: exactly 100 are let through, the
/// rest answered 429 with `Retry-After`.
async fn two_layers_sharing_redis_admit_exactly_100_of_1000_requests() {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use tower::ServiceExt;
    use tower_keyauth::limit::UsageLimits;
    use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};

    let prefix = unique_prefix("layers");
    let store = MemoryStore::new();
    let limits = UsageLimits::new()
        .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
        .unwrap();
    let issued = store
        .issue(NewKey::org("acme").limits(limits))
        .await
        .unwrap();
    let token = issued.token.expose_secret().to_owned();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let layer = KeyAuthLayer::new(store.clone()).rate_limiter(limiter(&prefix).await);
        instances.push(
            axum::Router::new()
                .route("/", axum::routing::get(|| async { "ok" }))
                .layer(layer),
        );
    }
    let mut requests = JoinSet::new();
    for i in 0..1000 {
        let app = instances[i % 2].clone();
        let token = token.clone();
        requests.spawn(async move {
            let request = Request::get("/")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let retry_after = response.headers().contains_key("retry-after");
            (response.status(), retry_after)
        });
    }
    let (mut admitted, mut limited) = (0, 0);
    while let Some(answer) = requests.join_next().await {
        match answer.unwrap() {
            (StatusCode::OK, _) => admitted += 1,
            (StatusCode::TOO_MANY_REQUESTS, true) => limited += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((admitted, limited), (100, 900));
}
