//! The key's [`UsageLimits`](crate::limit::UsageLimits), enforced after
//! authentication: its rate limits, charged all or nothing through the
//! layer's [`RateLimiter`](crate::limit::RateLimiter).

use std::future::Future;
use std::sync::Arc;

use http::request::Parts;

use crate::config::Config;
use crate::error::AuthError;
use crate::limit::fields::{LimitFields, whole_seconds_up};
use crate::limit::{Charge, Counter, CounterId, LimiterError, RateLimit};
use crate::principal::Principal;

/// What enforcement decided.
pub(crate) enum Enforced {
    /// Admitted; the response carries these fields.
    Pass(Option<LimitFields>),
    /// Refused (a limit spent, or the limiter failed).
    Refuse(AuthError),
    /// The limiter answers later.
    Pending(std::pin::Pin<Box<dyn Future<Output = Enforced> + Send>>),
}

/// The units a request costs: 1 unless the layer's cost function says
/// otherwise.
pub(crate) fn cost_of<S>(config: &Config<S>, request: &Parts) -> u32 {
    config.request_cost.as_ref().map_or(1, |cost| cost(request))
}

/// Charges `principal`'s rate limits `cost` units, at once when the limiter
/// can.
pub(crate) fn enforce<S>(config: &Config<S>, principal: &Principal, cost: u32) -> Enforced {
    let Some(policy) = principal.shared_limits() else {
        return Enforced::Pass(None);
    };
    if policy.rate_limits().is_empty() || cost == 0 {
        return Enforced::Pass(None);
    }
    let id = CounterId::key(principal.key_id());
    let counters: Vec<Counter> = policy
        .rate_limits()
        .iter()
        .map(|limit| Counter::new(id.clone(), limit))
        .collect();
    let fail_open = config.limits_fail_open;
    if let Some(charged) = config.limiter.charge_now(&counters, cost) {
        return concluded(charged, policy.rate_limits(), fail_open);
    }
    let limiter = Arc::clone(&config.limiter);
    let policy = Arc::clone(policy);
    Enforced::Pending(Box::pin(async move {
        let charged = limiter.charge(&counters, cost).await;
        concluded(charged, policy.rate_limits(), fail_open)
    }))
}

fn concluded(
    charged: Result<Charge, LimiterError>,
    limits: &[RateLimit],
    fail_open: bool,
) -> Enforced {
    match charged {
        Ok(Charge::Admitted(state)) => Enforced::Pass(
            limits
                .get(state.counter)
                .map(|limit| LimitFields::of(limit, &state)),
        ),
        Ok(Charge::Limited(state)) => {
            let mut error = AuthError::rate_limited(state.resets_in);
            if let Some(limit) = limits.get(state.counter) {
                error = error.with_limit_fields(LimitFields::of(limit, &state));
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
