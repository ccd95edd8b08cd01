//! The key's [`UsageLimits`](crate::limit::UsageLimits), enforced after
//! authentication, in this order: the IP allowlist (403 before anything is
//! charged), the rate limits (charged all or nothing through the layer's
//! [`RateLimiter`](crate::limit::RateLimiter)), then the credits (spent
//! atomically in the store of record).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;

use crate::config::Config;
use crate::error::AuthError;
use crate::ids::KeyId;
use crate::limit::fields::{LimitFields, whole_seconds_up};
use crate::limit::{
    Charge, CountedPer, Counter, CounterId, CounterState, LimiterError, MAX_RATE_LIMITS, RateLimit,
    UsageLimits,
};
use crate::principal::Principal;
use crate::store::{CreditSpend, KeyStore};

/// What enforcement decided.
pub(crate) enum Enforced {
    /// Admitted; the response carries these fields.
    Pass(Option<LimitFields>),
    /// Refused (an address not allowed, a limit or the credits spent, or a
    /// limiter or store that failed).
    Refuse(AuthError),
    /// The limiter or the store answers later.
    Pending(Pin<Box<dyn Future<Output = Enforced> + Send>>),
}

/// The units a request costs: 1 unless the layer's cost function says
/// otherwise, and nothing on a public path (which only identifies its key).
pub(crate) fn cost_of<S>(config: &Config<S>, request: &Parts, public: bool) -> u32 {
    if public {
        return 0;
    }
    config.request_cost.as_ref().map_or(1, |cost| cost(request))
}

/// The client's address, as the layer's trusted proxies let it be read.
pub(crate) fn client_of<S>(config: &Config<S>, request: &Parts) -> Option<IpAddr> {
    crate::client_addr::client_addr(request, &config.trusted_proxies)
}

/// Enforces `principal`'s limits for a request costing `cost` from
/// `client` (read only when the key has an allowlist), at once when
/// nothing needs to wait.
pub(crate) fn enforce<S: KeyStore>(
    config: &Arc<Config<S>>,
    principal: &Principal,
    cost: u32,
    client: impl FnOnce() -> Option<IpAddr>,
) -> Enforced {
    let Some(limits) = principal.shared_limits() else {
        return Enforced::Pass(None);
    };
    if let Some(allowlist) = limits.allowed_ips() {
        let client = client();
        if !client.is_some_and(|ip| allowlist.contains(ip)) {
            tracing::info!(
                key_id = %principal.key_id(),
                client = ?client,
                outcome = "forbidden",
                "client address not in the key's allowlist"
            );
            return Enforced::Refuse(AuthError::address_not_allowed());
        }
    }
    if cost == 0 {
        return Enforced::Pass(None);
    }
    if limits.credits().is_none() {
        return charge_rate_limits(config, principal, limits, cost);
    }
    // Credits are spent once the rate limits admit; a request they refuse
    // gives its rate-limit units back, so that it counts against nothing.
    let charged = Charged {
        counters: if limits.rate_limits().is_empty() {
            Vec::new()
        } else {
            counters_of(principal, limits).0
        },
        at: Instant::now(),
    };
    let (config, id) = (Arc::clone(config), principal.key_id().clone());
    match charge_rate_limits(&config, principal, limits, cost) {
        Enforced::Pass(fields) => Enforced::Pending(Box::pin(async move {
            spend_credits(&config, &id, cost, fields, charged).await
        })),
        Enforced::Refuse(refusal) => Enforced::Refuse(refusal),
        Enforced::Pending(charging) => Enforced::Pending(Box::pin(async move {
            match charging.await {
                Enforced::Pass(fields) => spend_credits(&config, &id, cost, fields, charged).await,
                refused => refused,
            }
        })),
    }
}

/// The rate-limit counters a request was charged, and when: what a
/// refusal by the credits gives back.
struct Charged {
    counters: Vec<Counter>,
    at: Instant,
}

/// What `limit` of `principal`'s key counts: the key (its rotation
/// chain's first key), its workspace or its organization.
fn counter_id(principal: &Principal, limits: &UsageLimits, limit: &RateLimit) -> CounterId {
    match limit.counted_for() {
        CountedPer::Workspace => match principal.workspace() {
            Some(workspace) => CounterId::workspace(principal.org(), workspace),
            None => CounterId::org(principal.org()),
        },
        CountedPer::Organization => CounterId::org(principal.org()),
        _ => CounterId::key(limits.counted_as(principal.key_id())),
    }
}

/// Charges the key's rate limits, at once when the limiter can.
fn charge_rate_limits<S>(
    config: &Config<S>,
    principal: &Principal,
    limits: &Arc<UsageLimits>,
    cost: u32,
) -> Enforced {
    if limits.rate_limits().is_empty() {
        return Enforced::Pass(None);
    }
    let fail_open = config.limits_fail_open;
    // One limit, the common case, is charged from the stack.
    if let [limit] = limits.rate_limits() {
        let counter = [Counter::new(counter_id(principal, limits, limit), limit)];
        if let Some(charged) = config.limiter.charge_now(&counter, cost) {
            return concluded(charged, principal.key_id(), limits, &IDENTITY, fail_open);
        }
    }
    let (counters, limit_of) = counters_of(principal, limits);
    if counters.len() > 1 {
        if let Some(charged) = config.limiter.charge_now(&counters, cost) {
            return concluded(charged, principal.key_id(), limits, &limit_of, fail_open);
        }
    }
    let limiter = Arc::clone(&config.limiter);
    let (limits, id) = (Arc::clone(limits), principal.key_id().clone());
    Enforced::Pending(Box::pin(async move {
        let charged = limiter.charge(&counters, cost).await;
        concluded(charged, &id, &limits, &limit_of, fail_open)
    }))
}

/// The counters of `principal`'s rate limits, and which limit each counts.
/// A limit per workspace of a principal without one counts per
/// organization: a counter that two limits name is charged once.
fn counters_of(
    principal: &Principal,
    limits: &UsageLimits,
) -> (Vec<Counter>, [usize; MAX_RATE_LIMITS]) {
    let mut counters: Vec<Counter> = Vec::with_capacity(limits.rate_limits().len());
    let mut limit_of = [0usize; MAX_RATE_LIMITS];
    for (index, limit) in limits.rate_limits().iter().enumerate() {
        let counter = Counter::new(counter_id(principal, limits, limit), limit);
        match counters.iter().position(|held| *held == counter) {
            // The same count twice: held to the tighter limit.
            Some(held) if counter.limit < counters[held].limit => {
                counters[held].limit = counter.limit;
                limit_of[held] = index;
            }
            Some(_) => {}
            None => {
                limit_of[counters.len()] = index;
                counters.push(counter);
            }
        }
    }
    (counters, limit_of)
}

/// Counter `i` of a charge counts the key's limit `i`.
const IDENTITY: [usize; MAX_RATE_LIMITS] = {
    let mut identity = [0; MAX_RATE_LIMITS];
    let mut i = 0;
    while i < MAX_RATE_LIMITS {
        identity[i] = i;
        i += 1;
    }
    identity
};

/// Spends the key's credits in the store of record; the rate limits'
/// fields go on an admitted answer. A refused request gives back the
/// rate-limit units it was `charged`.
async fn spend_credits<S: KeyStore>(
    config: &Config<S>,
    id: &KeyId,
    cost: u32,
    fields: Option<LimitFields>,
    charged: Charged,
) -> Enforced {
    // No fields: the limiter failed and limits fail open, so nothing was
    // charged to give back.
    let was_charged = fields.is_some() && !charged.counters.is_empty();
    let refusal = match config.store.spend_credits(id, u64::from(cost)).await {
        Ok(CreditSpend::Spent { .. } | CreditSpend::Unlimited) => return Enforced::Pass(fields),
        Ok(CreditSpend::Exhausted { refill_in, .. }) => {
            tracing::info!(key_id = %id, outcome = "quota_exhausted", "the key's credits are spent");
            AuthError::quota_exhausted(refill_in)
        }
        // Deleted since it was read: as if it had never been.
        Ok(CreditSpend::NotFound) => AuthError::invalid_token(),
        Err(error) if config.limits_fail_open => {
            tracing::warn!(key_id = %id, error = %error, "spending credits failed; the request passes (limits fail open)");
            return Enforced::Pass(fields);
        }
        Err(error) => {
            tracing::error!(key_id = %id, error = %error, "spending credits failed; the request is refused");
            AuthError::unavailable()
        }
    };
    if was_charged {
        let charged_ago = charged.at.elapsed();
        if let Err(error) = config
            .limiter
            .refund(&charged.counters, cost, charged_ago)
            .await
        {
            // The request stays counted: a limit may refuse early, never
            // admit too many.
            tracing::warn!(key_id = %id, error = %error, "giving back a refused request's rate-limit units failed");
        }
    }
    Enforced::Refuse(refusal)
}

/// The limiter's answer as a verdict; `limit_of` maps each charged
/// counter to the key's limit it counts.
fn concluded(
    charged: Result<Charge, LimiterError>,
    id: &KeyId,
    limits: &UsageLimits,
    limit_of: &[usize; MAX_RATE_LIMITS],
    fail_open: bool,
) -> Enforced {
    let fields = |state: &CounterState| {
        let index = *limit_of.get(state.counter)?;
        let limit = limits.rate_limits().get(index)?;
        let policy = limits.rate_limit_set().policy_field(index)?;
        Some(LimitFields::of(limit, policy, state))
    };
    match charged {
        Ok(Charge::Admitted(state)) => Enforced::Pass(fields(&state)),
        Ok(Charge::Limited(state)) => {
            let mut error = AuthError::rate_limited(state.resets_in);
            if let Some(fields) = fields(&state) {
                error = error.with_limit_fields(fields);
            }
            let limit = limit_of
                .get(state.counter)
                .and_then(|&index| limits.rate_limits().get(index));
            tracing::info!(
                key_id = %id,
                outcome = "rate_limited",
                limit = limit.map(RateLimit::field_name),
                per = limit.map(|limit| limit.counted_for().as_str()),
                retry_after_seconds = whole_seconds_up(state.resets_in),
                "request refused by a rate limit"
            );
            Enforced::Refuse(error)
        }
        Err(error) if fail_open => {
            tracing::warn!(key_id = %id, error = %error, cause = cause_of(&error), "rate limiter failed; the request passes unlimited (limits fail open)");
            Enforced::Pass(None)
        }
        Err(error) => {
            tracing::error!(key_id = %id, error = %error, cause = cause_of(&error), "rate limiter failed; the request is refused");
            Enforced::Refuse(AuthError::unavailable())
        }
    }
}

/// What made the limiter fail (a connection refused, a timeout), for the
/// log: its errors name no URL and no password.
fn cause_of(error: &LimiterError) -> Option<String> {
    std::error::Error::source(error).map(ToString::to_string)
}
