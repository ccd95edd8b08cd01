//! The key's [`UsageLimits`](crate::limit::UsageLimits), enforced after
//! authentication, in this order: the IP allowlist (403 before anything is
//! charged), the rate limits (charged all or nothing through the layer's
//! [`RateLimiter`](crate::limit::RateLimiter)), then the credits (spent
//! atomically in the store of record).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::request::Parts;

use crate::config::Config;
use crate::error::AuthError;
use crate::ids::KeyId;
use crate::limit::fields::{LimitFields, whole_seconds_up};
use crate::limit::{Charge, Counter, CounterId, CounterState, LimiterError, UsageLimits};
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
/// otherwise.
pub(crate) fn cost_of<S>(config: &Config<S>, request: &Parts) -> u32 {
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
    let rate_limited = match charge_rate_limits(config, principal.key_id(), limits, cost) {
        Enforced::Pass(fields) => fields,
        other if limits.credits().is_none() => return other,
        Enforced::Refuse(refusal) => return Enforced::Refuse(refusal),
        Enforced::Pending(charging) => {
            // Credits wait for the rate limits: a request they refuse
            // spends none.
            let (config, id) = (Arc::clone(config), principal.key_id().clone());
            return Enforced::Pending(Box::pin(async move {
                match charging.await {
                    Enforced::Pass(fields) => spend_credits(&config, &id, cost, fields).await,
                    refused => refused,
                }
            }));
        }
    };
    if limits.credits().is_none() {
        return Enforced::Pass(rate_limited);
    }
    let (config, id) = (Arc::clone(config), principal.key_id().clone());
    Enforced::Pending(Box::pin(async move {
        spend_credits(&config, &id, cost, rate_limited).await
    }))
}

/// Charges the key's rate limits, at once when the limiter can.
fn charge_rate_limits<S>(
    config: &Config<S>,
    id: &KeyId,
    limits: &Arc<UsageLimits>,
    cost: u32,
) -> Enforced {
    if limits.rate_limits().is_empty() {
        return Enforced::Pass(None);
    }
    let fail_open = config.limits_fail_open;
    // One limit, the common case, is charged from the stack.
    if let [limit] = limits.rate_limits() {
        let counter = [Counter::new(CounterId::key(limits.counted_as(id)), limit)];
        if let Some(charged) = config.limiter.charge_now(&counter, cost) {
            return concluded(charged, limits, fail_open);
        }
    }
    let counter_id = CounterId::key(limits.counted_as(id));
    let counters: Vec<Counter> = limits
        .rate_limits()
        .iter()
        .map(|limit| Counter::new(counter_id.clone(), limit))
        .collect();
    if limits.rate_limits().len() > 1 {
        if let Some(charged) = config.limiter.charge_now(&counters, cost) {
            return concluded(charged, limits, fail_open);
        }
    }
    let limiter = Arc::clone(&config.limiter);
    let limits = Arc::clone(limits);
    Enforced::Pending(Box::pin(async move {
        let charged = limiter.charge(&counters, cost).await;
        concluded(charged, &limits, fail_open)
    }))
}

/// Spends the key's credits in the store of record; the rate limits'
/// fields go on the answer either way.
async fn spend_credits<S: KeyStore>(
    config: &Config<S>,
    id: &KeyId,
    cost: u32,
    fields: Option<LimitFields>,
) -> Enforced {
    match config.store.spend_credits(id, u64::from(cost)).await {
        Ok(CreditSpend::Spent { .. } | CreditSpend::Unlimited) => Enforced::Pass(fields),
        Ok(CreditSpend::Exhausted { refill_in, .. }) => {
            tracing::info!(key_id = %id, outcome = "quota_exhausted", "the key's credits are spent");
            let mut refusal = AuthError::quota_exhausted(refill_in);
            if let Some(fields) = fields {
                refusal = refusal.with_limit_fields(fields);
            }
            Enforced::Refuse(refusal)
        }
        // Deleted since it was read: as if it had never been.
        Ok(CreditSpend::NotFound) => Enforced::Refuse(AuthError::invalid_token()),
        Err(error) if config.limits_fail_open => {
            tracing::warn!(key_id = %id, error = %error, "spending credits failed; the request passes (limits fail open)");
            Enforced::Pass(fields)
        }
        Err(error) => {
            tracing::error!(key_id = %id, error = %error, "spending credits failed; the request is refused");
            Enforced::Refuse(AuthError::unavailable())
        }
    }
}

fn concluded(
    charged: Result<Charge, LimiterError>,
    limits: &UsageLimits,
    fail_open: bool,
) -> Enforced {
    let fields = |state: &CounterState| {
        let limit = limits.rate_limits().get(state.counter)?;
        let policy = limits.rate_limit_set().policy_field(state.counter)?;
        Some(LimitFields::of(limit, policy, state))
    };
    match charged {
        Ok(Charge::Admitted(state)) => Enforced::Pass(fields(&state)),
        Ok(Charge::Limited(state)) => {
            let mut error = AuthError::rate_limited(state.resets_in);
            if let Some(fields) = fields(&state) {
                error = error.with_limit_fields(fields);
            }
            tracing::info!(
                outcome = "rate_limited",
                retry_after_seconds = whole_seconds_up(state.resets_in),
                "request refused by a rate limit"
            );
            Enforced::Refuse(error)
        }
        Err(error) if fail_open => {
            tracing::warn!(error = %error, "rate limiter failed; the request passes unlimited (limits fail open)");
            Enforced::Pass(None)
        }
        Err(error) => {
            tracing::error!(error = %error, "rate limiter failed; the request is refused");
            Enforced::Refuse(AuthError::unavailable())
        }
    }
}
