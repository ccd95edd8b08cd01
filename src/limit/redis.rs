//! [`RedisLimiter`]: the counters in one Redis, shared by every instance of
//! the application, charged by one server-side script per request.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{
    Charge, Counter, CounterState, LimiterError, MAX_WINDOW, REFUND_MARGIN, RateLimiter, tightest,
    valid_charge,
};

/// Charges every counter or none, atomically (Redis runs a script alone).
///
/// `KEYS[i]` is counter i; `ARGV[1]` the cost; `ARGV[2i]` and `ARGV[2i+1]`
/// counter i's limit and window in milliseconds. A counter absent, at 0 or
/// without an expiry opens its window now. The same counter (one key)
/// twice in one charge is charged twice, each mention checked with the
/// units of the mentions before it. Replies `{limited, refuses_1,
/// remaining_1, resets_ms_1, …}`: when limited, the counts before the
/// charge (none was made); when admitted, after it.
const CHARGE_SCRIPT: &str = r"
local cost = tonumber(ARGV[1])
local count, ttl, opens, charged = {}, {}, {}, {}
local limited = false
local refuses = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  if count[key] == nil then
    local raw = redis.call('GET', key)
    local c = 0
    if raw then
      c = tonumber(raw)
      if c == nil then
        return redis.error_reply('keyauth: a rate-limit counter holds something other than a number')
      end
    end
    count[key] = c
    ttl[key] = redis.call('PTTL', key)
    charged[key] = 0
    if c <= 0 or ttl[key] < 0 then
      opens[key] = window
    end
  end
  refuses[i] = cost > limit or count[key] + charged[key] + cost > limit
  limited = limited or refuses[i]
  charged[key] = charged[key] + cost
end
if limited then
  for key, window in pairs(opens) do
    -- A count left without an expiry would refuse for ever.
    if count[key] > 0 and ttl[key] == -1 then
      redis.call('PEXPIRE', key, window)
    end
  end
else
  for key, units in pairs(charged) do
    redis.call('INCRBY', key, units)
    if opens[key] then
      redis.call('PEXPIRE', key, opens[key])
    end
  end
end
local reply = { limited and 1 or 0 }
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  local used = count[key]
  if not limited then
    used = used + charged[key]
  end
  local resets = opens[key] or ttl[key]
  if cost > limit then
    resets = window
  end
  reply[#reply + 1] = refuses[i] and 1 or 0
  reply[#reply + 1] = math.max(limit - used, 0)
  reply[#reply + 1] = resets
end
return reply
";

static CHARGE: LazyLock<Script> = LazyLock::new(|| Script::new(CHARGE_SCRIPT));

/// Gives units back (see [`RateLimiter::refund`]), atomically.
///
/// `KEYS[i]` is counter i; `ARGV[1]` the cost; `ARGV[2]` the least age, in
/// milliseconds, of a window that may get them back; `ARGV[2 + i]` counter
/// i's window in milliseconds. A counter gets the cost back when it holds
/// at least that much and its window, as its expiry tells, opened at least
/// that long ago: a later window is never given units it did not count.
const REFUND_SCRIPT: &str = r"
local cost = tonumber(ARGV[1])
local least_age = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 + i])
  local ttl = redis.call('PTTL', key)
  local used = tonumber(redis.call('GET', key))
  if ttl > 0 and used ~= nil and used >= cost and window - ttl >= least_age then
    redis.call('DECRBY', key, cost)
  end
end
return 0
";

static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND_SCRIPT));

/// A [`RateLimiter`] whose counters live in Redis: exact across any number
/// of application instances that share the server, with one round trip per
/// charge however many counters it names.
///
/// Each charge runs one Lua script (sent once, then called by its SHA-1 as
/// `EVALSHA`) that reads every counter, and either charges all of them or,
/// when one would pass its limit, none. Windows are timed by the server
/// alone, through key expiry: the instances' clocks play no part. A counter
/// is the key `<prefix><counter>`, the counter as it displays
/// (`keyauth:rl:key:k1:60`; see [`prefix`](Self::prefix)), holding the
/// units charged in its current window and expiring when the window
/// closes.
///
/// # One Redis, not a Cluster
///
/// The counters of one charge must live on one server for the script to
/// see them all: a Redis Cluster refuses scripts whose keys hash to
/// different slots, and the counters of a key and of its owner usually do.
/// Use one Redis (a primary, optionally with replicas for failover; a
/// failover can lose the counts of the last moments, which then admit
/// again).
///
/// # When Redis fails
///
/// A charge that cannot reach Redis, times out or gets an error returns
/// [`LimiterError::Backend`], and the layer refuses the request with 503
/// (`unavailable`, gRPC UNAVAILABLE): a limiter that fails never admits.
/// The connection is a [`ConnectionManager`], which reconnects on its own
/// once Redis is back. A charge whose reply was lost (a timeout) may have
/// been counted though the request was refused. Errors never carry the
/// connection URL or its password, and neither does `Debug`.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use tower_keyauth::limit::{Charge, Counter, RateLimit, RateLimiter, RedisLimiter};
///
/// # async fn example() -> Result<(), tower_keyauth::limit::LimiterError> {
/// let limiter = RedisLimiter::connect("redis://127.0.0.1:6379/")
///     .await?
///     .prefix("myapp:rl:");
/// let hundred_a_minute = RateLimit::per(100, Duration::from_secs(60)).unwrap();
/// let counters = [Counter::new("key:k1", &hundred_a_minute)];
/// match limiter.charge(&counters, 1).await? {
///     Charge::Admitted(state) => println!("{} left", state.remaining),
///     Charge::Limited(state) => println!("retry in {:?}", state.resets_in),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    manager: ConnectionManager,
    prefix: Arc<str>,
    /// `host:port` (or a socket path) when made by `connect`.
    server: Option<Arc<str>>,
}

impl RedisLimiter {
    /// The key prefix unless [`prefix`](Self::prefix) sets another.
    pub const DEFAULT_PREFIX: &str = "keyauth:rl:";

    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `unix:///path`), and waits for the first connection.
    ///
    /// The connection gives up on a reply after 500 ms and on a connection
    /// attempt after 1 s, and tries a lost connection twice before the
    /// charges waiting on it fail: a Redis that stops answering costs a
    /// charge about 2.5 s at most, never a hang; one that refuses
    /// connections fails charges at once. Each failed charge starts a new
    /// attempt, so the limiter recovers on its own when Redis is back. For
    /// other settings, build the [`ConnectionManager`] yourself and use
    /// [`new`](Self::new).
    ///
    /// # Errors
    ///
    /// [`LimiterError::Backend`] when the URL is not a Redis URL or the
    /// server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, LimiterError> {
        let client = Client::open(url).map_err(LimiterError::backend)?;
        let server = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_millis(500)));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(LimiterError::backend)?;
        Ok(Self {
            server: Some(server.into()),
            ..Self::new(manager)
        })
    }

    /// A limiter on a connection made elsewhere (for its own timeouts and
    /// retries: [`ConnectionManagerConfig`]).
    pub fn new(manager: ConnectionManager) -> Self {
        Self {
            manager,
            prefix: Self::DEFAULT_PREFIX.into(),
            server: None,
        }
    }

    /// Puts the counters under `prefix` (default
    /// [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX)), for several applications
    /// on one Redis. Instances that share counts must share the prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix of the counters.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the address: the URL may hold a password.
        let mut debug = f.debug_struct("RedisLimiter");
        if let Some(server) = &self.server {
            debug.field("server", server);
        }
        debug.field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn charge(&self, counters: &[Counter], cost: u32) -> Result<Charge, LimiterError> {
        // `Counter`'s fields are public: a window of zero would expire each
        // count as it is made and admit everything.
        let windows_valid = counters
            .iter()
            .all(|c| c.window >= Duration::from_millis(1) && c.window <= MAX_WINDOW);
        if !valid_charge(counters, cost) || !windows_valid {
            return Err(LimiterError::Invalid);
        }
        let mut invocation = CHARGE.prepare_invoke();
        invocation.arg(cost);
        for counter in counters {
            // At most MAX_WINDOW: exact in a Lua number.
            let window_ms = u64::try_from(counter.window.as_millis()).unwrap_or(u64::MAX);
            invocation
                .key(format!("{}{counter}", self.prefix))
                .arg(counter.limit)
                .arg(window_ms);
        }
        let mut connection = self.manager.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(LimiterError::backend)?;
        decode(&reply, counters.len())
    }

    async fn refund(
        &self,
        counters: &[Counter],
        cost: u32,
        charged_ago: Duration,
    ) -> Result<(), LimiterError> {
        if !valid_charge(counters, cost) {
            return Err(LimiterError::Invalid);
        }
        let least_age = charged_ago.saturating_add(REFUND_MARGIN);
        let mut invocation = REFUND.prepare_invoke();
        invocation
            .arg(cost)
            .arg(u64::try_from(least_age.as_millis()).unwrap_or(u64::MAX));
        for counter in counters {
            let window_ms = u64::try_from(counter.window.as_millis()).unwrap_or(u64::MAX);
            invocation
                .key(format!("{}{counter}", self.prefix))
                .arg(window_ms);
        }
        let mut connection = self.manager.clone();
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(LimiterError::backend)?;
        Ok(())
    }
}

/// A reply of [`CHARGE_SCRIPT`] for `n` counters.
fn decode(reply: &[i64], n: usize) -> Result<Charge, LimiterError> {
    let Some((&limited, states)) = reply.split_first() else {
        return Err(unexpected_reply());
    };
    if states.len() != 3 * n || !matches!(limited, 0 | 1) {
        return Err(unexpected_reply());
    }
    let states = states.chunks_exact(3).enumerate().map(|(counter, state)| {
        let refuses = state[0] == 1;
        let remaining = u32::try_from(state[1].max(0)).unwrap_or(u32::MAX);
        // An existing key has at least 1 ms left; never report a reset
        // that has already happened.
        let resets_in = Duration::from_millis(u64::try_from(state[2].max(1)).unwrap_or(1));
        (
            refuses,
            CounterState {
                counter,
                remaining,
                resets_in,
            },
        )
    });
    if limited == 1 {
        // The refusing counter that frees up last; the first among equals.
        states
            .filter(|(refuses, _)| *refuses)
            .map(|(_, state)| state)
            .reduce(|last, state| {
                if state.resets_in > last.resets_in {
                    state
                } else {
                    last
                }
            })
            .map(Charge::Limited)
            .ok_or_else(unexpected_reply)
    } else {
        tightest(states.map(|(_, state)| state))
            .map(Charge::Admitted)
            .ok_or_else(unexpected_reply)
    }
}

fn unexpected_reply() -> LimiterError {
    LimiterError::backend("the rate limiter's script gave an unexpected reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reports_the_refusing_counter_that_frees_up_last() {
        let reply = [1, 0, 5, 1000, 1, 0, 30_000, 1, 2, 9_000];
        assert_eq!(
            decode(&reply, 3).unwrap(),
            Charge::Limited(CounterState {
                counter: 1,
                remaining: 0,
                resets_in: Duration::from_secs(30),
            })
        );
    }

    #[test]
    fn an_admission_reports_the_tightest_counter() {
        let reply = [0, 0, 7, 60_000, 0, 2, 1_000, 0, 2, 500];
        assert_eq!(
            decode(&reply, 3).unwrap(),
            Charge::Admitted(CounterState {
                counter: 2,
                remaining: 2,
                resets_in: Duration::from_millis(500),
            })
        );
    }

    #[test]
    fn a_malformed_reply_is_a_backend_error() {
        for reply in [
            &[][..],
            &[0, 0, 1][..],
            &[2, 0, 1, 1][..],
            &[1, 0, 1, 1][..],
        ] {
            assert!(matches!(decode(reply, 1), Err(LimiterError::Backend(_))));
        }
    }

    #[test]
    fn debug_shows_neither_url_nor_password() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let url = "redis://user:hunter2@127.0.0.1:6390/0";
        let client = Client::open(url).unwrap();
        let server = client.get_connection_info().addr().to_string();
        // Lazy: no connection is attempted.
        let manager =
            ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())
                .unwrap();
        let limiter = RedisLimiter {
            server: Some(server.into()),
            ..RedisLimiter::new(manager)
        };
        assert_eq!(
            format!("{limiter:?}"),
            r#"RedisLimiter { server: "127.0.0.1:6390", prefix: "keyauth:rl:", .. }"#
        );
        assert!(!format!("{limiter:#?}").contains("hunter2"));
    }
}
