//! Per-key rate limits through a real axum router: the limit holds exactly,
//! a refusal charges nothing, the IETF `RateLimit` fields and `Retry-After`
//! are answered, and a failed limiter refuses (or, when chosen, passes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use http::StatusCode;
use tower_keyauth::limit::{
    Charge, Counter, CounterId, LimiterError, MemoryLimiter, RateLimit, RateLimiter, UsageLimits,
};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey};

fn per(limit: u32, seconds: u64) -> RateLimit {
    RateLimit::per(limit, Duration::from_secs(seconds)).unwrap()
}

fn limits(each: &[RateLimit]) -> UsageLimits {
    each.iter().fold(UsageLimits::new(), |limits, limit| {
        limits.rate_limit(limit.clone()).unwrap()
    })
}

/// A store with one org key limited by `each`; its token and id.
async fn limited_key(each: &[RateLimit]) -> (MemoryStore, String, tower_keyauth::ids::KeyId) {
    let store = MemoryStore::new();
    let issued = store
        .issue(NewKey::org("acme").name("limited").limits(limits(each)))
        .await
        .unwrap();
    (
        store,
        issued.token.expose_secret().to_owned(),
        issued.record.id.clone(),
    )
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn the_sixth_request_in_a_minute_of_five_is_refused_with_retry_after_and_the_fields() {
    let (store, token, _) = limited_key(&[per(5, 60)]).await;
    let app = app(KeyAuthLayer::new(store));
    for remaining in (0..5).rev() {
        let reply = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(header(&reply, "ratelimit-policy"), Some("default;q=5;w=60"));
        assert_eq!(
            header(&reply, "ratelimit"),
            Some(format!("default;r={remaining};t=60").as_str())
        );
    }
    let refused = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error(), "rate_limited");
    assert_eq!(
        refused.json()["message"],
        "The API key's rate limit is spent. Try again later."
    );
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        Some("default;q=5;w=60")
    );
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(format!("default;r=0;t={retry_after}").as_str()),
        "the reset names the same moment as Retry-After"
    );
    assert_eq!(
        refused.challenge(),
        None,
        "a 429 is no authentication challenge"
    );
}

#[tokio::test]
async fn a_key_without_limits_answers_no_rate_limit_fields() {
    let demo = demo().await;
    let app = app(KeyAuthLayer::new(demo.store.clone()));
    let reply = get_bearer(&app, "/v1/whoami", &demo.org_key).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "ratelimit"), None);
    assert_eq!(header(&reply, "ratelimit-policy"), None);
}

#[tokio::test]
async fn a_request_refused_by_its_second_limit_charges_the_first_nothing() {
    let minute = per(10, 60);
    let burst = per(3, 1).named("burst").unwrap();
    let (store, token, id) = limited_key(&[minute.clone(), burst]).await;
    let limiter = MemoryLimiter::new();
    let app = app(KeyAuthLayer::new(store).rate_limiter(limiter.clone()));
    for _ in 0..3 {
        let reply = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The tightest limit is the burst's, named in the fields.
    let refused = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), Some("burst;q=3;w=1"));
    // The minute's counter holds the three admitted requests only.
    let minute_counter = [Counter::new(CounterId::key(&id), &minute)];
    let Charge::Admitted(state) = limiter.charge(&minute_counter, 1).await.unwrap() else {
        panic!("the minute's limit was spent by a refused request")
    };
    assert_eq!(state.remaining, 10 - 3 - 1);
}

#[tokio::test]
async fn concurrent_requests_admit_exactly_the_limit() {
    let (store, token, _) = limited_key(&[per(100, 60)]).await;
    let app = app(KeyAuthLayer::new(store));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let (app, token) = (app.clone(), token.clone());
        tasks.spawn(async move { get_bearer(&app, "/v1/whoami", &token).await.status });
    }
    let mut admitted = 0;
    while let Some(status) = tasks.join_next().await {
        match status.unwrap() {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 100);
}

#[tokio::test]
async fn a_route_may_cost_more_than_one() {
    let (store, token, _) = limited_key(&[per(5, 60)]).await;
    let layer = KeyAuthLayer::new(store).request_cost(|request| {
        if request.uri.path() == "/v1/whoami" {
            3
        } else {
            1
        }
    });
    let app = app(layer);
    let first = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(header(&first, "ratelimit"), Some("default;r=2;t=60"));
    let second = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&second, "ratelimit"), Some("default;r=2;t=60"));
}

#[tokio::test]
async fn public_paths_charge_nothing() {
    let (store, token, _) = limited_key(&[per(1, 60)]).await;
    let app = app(with_public_paths(KeyAuthLayer::new(store)));
    for _ in 0..3 {
        assert_eq!(get_bearer(&app, "/", &token).await.status, StatusCode::OK);
    }
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &token).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A limiter whose backend is down.
struct DownLimiter;

#[async_trait]
impl RateLimiter for DownLimiter {
    async fn charge(&self, _: &[Counter], _: u32) -> Result<Charge, LimiterError> {
        Err(LimiterError::backend(std::io::Error::other(
            "connection refused",
        )))
    }
}

#[tokio::test]
async fn a_failed_limiter_refuses_with_503_unless_limits_fail_open() {
    let (store, token, _) = limited_key(&[per(5, 60)]).await;
    let closed = app(KeyAuthLayer::new(store.clone()).rate_limiter(DownLimiter));
    let reply = get_bearer(&closed, "/v1/whoami", &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "unavailable");

    let open = app(KeyAuthLayer::new(store)
        .rate_limiter(DownLimiter)
        .limits_fail_open(true));
    let reply = get_bearer(&open, "/v1/whoami", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "ratelimit"), None);
}

#[tokio::test]
async fn keys_found_by_a_store_that_waits_are_limited_too() {
    let (store, token, _) = limited_key(&[per(2, 60)]).await;
    let slow = CountingStore::slow(store, Duration::from_millis(1));
    let app = app(KeyAuthLayer::new(Arc::clone(&slow)));
    for remaining in [1, 0] {
        let reply = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            header(&reply, "ratelimit"),
            Some(format!("default;r={remaining};t=60").as_str())
        );
    }
    let refused = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&refused, "retry-after").is_some());
    assert!(slow.finds() >= 3, "the lookups went to the store");
}

#[tokio::test]
async fn a_rotated_key_keeps_its_limits() {
    let (store, _, id) = limited_key(&[per(5, 60)]).await;
    let successor = store.rotate(&id, Duration::ZERO).await.unwrap();
    let app = app(KeyAuthLayer::new(store));
    let reply = get_bearer(&app, "/v1/whoami", successor.token.expose_secret()).await;
    assert_eq!(header(&reply, "ratelimit-policy"), Some("default;q=5;w=60"));
}

#[tokio::test]
async fn spent_credits_are_quota_exhausted_until_the_refill() {
    use tower_keyauth::limit::{Credits, Refill};
    let store = MemoryStore::new();
    let daily = Credits::new(2)
        .unwrap()
        .refill(Refill::every(2, Duration::from_secs(86_400)).unwrap());
    let issued = store
        .issue(NewKey::org("acme").limits(UsageLimits::new().with_credits(daily)))
        .await
        .unwrap();
    let token = issued.token.expose_secret().to_owned();
    let app = app(KeyAuthLayer::new(store.clone()));
    for _ in 0..2 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", &token).await.status,
            StatusCode::OK
        );
    }
    let refused = get_bearer(&app, "/v1/whoami", &token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.error(), "quota_exhausted");
    assert_eq!(
        refused.json()["message"],
        "The API key has no credits left."
    );
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((86_000..=86_400).contains(&retry_after), "{retry_after}");
    // The store holds none, never fewer.
    let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(record.limits.unwrap().credits().unwrap().remaining(), 0);
}

#[tokio::test]
async fn a_request_refused_by_a_rate_limit_spends_no_credit() {
    use tower_keyauth::limit::Credits;
    let store = MemoryStore::new();
    let limits = limits(&[per(1, 60)]).with_credits(Credits::new(10).unwrap());
    let issued = store
        .issue(NewKey::org("acme").limits(limits))
        .await
        .unwrap();
    let token = issued.token.expose_secret().to_owned();
    let app = app(KeyAuthLayer::new(store.clone()));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &token).await.status,
        StatusCode::OK
    );
    for _ in 0..3 {
        let refused = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(refused.error(), "rate_limited");
    }
    let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(record.limits.unwrap().credits().unwrap().remaining(), 9);
}

/// A clock the test moves: starts now.
fn manual_clock() -> (
    Arc<std::sync::atomic::AtomicU64>,
    impl Fn() -> std::time::SystemTime + Send + Sync + 'static,
) {
    let offset = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = std::time::SystemTime::now();
    let read = Arc::clone(&offset);
    (offset, move || {
        start + Duration::from_millis(read.load(std::sync::atomic::Ordering::SeqCst))
    })
}

#[tokio::test]
async fn a_request_refused_for_credits_counts_against_no_rate_limit() {
    use tower_keyauth::limit::Credits;
    let store = MemoryStore::new();
    let minute = per(100, 60);
    let limits = limits(std::slice::from_ref(&minute)).with_credits(Credits::new(2).unwrap());
    let issued = store
        .issue(NewKey::org("acme").limits(limits))
        .await
        .unwrap();
    let token = issued.token.expose_secret().to_owned();
    let (advance, clock) = manual_clock();
    let limiter = MemoryLimiter::new().clock(clock);
    let app = app(KeyAuthLayer::new(store).rate_limiter(limiter.clone()));
    for _ in 0..2 {
        let reply = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The window is a second old when the credits run out.
    advance.store(1_000, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let refused = get_bearer(&app, "/v1/whoami", &token).await;
        assert_eq!(refused.error(), "quota_exhausted");
        // A refusal by the credits says nothing about the rate limits.
        assert_eq!(header(&refused, "ratelimit"), None);
        assert_eq!(header(&refused, "ratelimit-policy"), None);
    }
    // Two admitted requests counted, the five refused ones given back.
    let counter = [Counter::new(CounterId::key(&issued.record.id), &minute)];
    let Some(Ok(Charge::Admitted(state))) = limiter.charge_now(&counter, 1) else {
        panic!("the limit admits")
    };
    assert_eq!(state.remaining, 100 - 2 - 1);
}

#[tokio::test]
async fn a_rotated_key_counts_on_where_its_predecessor_stopped() {
    let (store, token, id) = limited_key(&[per(5, 60)]).await;
    let app = app(KeyAuthLayer::new(store.clone()));
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", &token).await.status,
            StatusCode::OK
        );
    }
    let successor = store.rotate(&id, Duration::from_secs(600)).await.unwrap();
    let reply = get_bearer(&app, "/v1/whoami", successor.token.expose_secret()).await;
    assert_eq!(header(&reply, "ratelimit"), Some("default;r=1;t=60"));
    // During the grace period the old key draws on the same count.
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &token).await.status,
        StatusCode::OK
    );
    for key in [&token, successor.token.expose_secret()] {
        let refused = get_bearer(&app, "/v1/whoami", key).await;
        assert_eq!(refused.error(), "rate_limited");
    }
    // And the successor's successor too.
    let third = store
        .rotate(&successor.record.id, Duration::ZERO)
        .await
        .unwrap();
    let refused = get_bearer(&app, "/v1/whoami", third.token.expose_secret()).await;
    assert_eq!(refused.error(), "rate_limited");
}

#[tokio::test]
async fn a_limit_per_organization_is_shared_by_all_its_keys() {
    use tower_keyauth::limit::CountedPer;
    let org_wide = per(3, 60).counted_per(CountedPer::Organization);
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for owner in [
        NewKey::org("acme"),
        NewKey::workspace("acme", "web"),
        NewKey::org("globex"),
    ] {
        let issued = store
            .issue(owner.limits(limits(std::slice::from_ref(&org_wide))))
            .await
            .unwrap();
        tokens.push(issued.token.expose_secret().to_owned());
    }
    let app = app(KeyAuthLayer::new(store));
    let (acme, acme_web, globex) = (&tokens[0], &tokens[1], &tokens[2]);
    for (token, remaining) in [(acme, 2), (acme_web, 1), (acme, 0)] {
        let reply = get_bearer(&app, "/v1/whoami", token).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            header(&reply, "ratelimit-policy"),
            Some("organization;q=3;w=60")
        );
        assert_eq!(
            header(&reply, "ratelimit"),
            Some(format!("organization;r={remaining};t=60").as_str())
        );
    }
    for token in [acme, acme_web] {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", token).await.error(),
            "rate_limited"
        );
    }
    // Another organization counts on its own.
    let reply = get_bearer(&app, "/v1/whoami", globex).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_limit_and_its_organization_limit_are_charged_together() {
    use tower_keyauth::limit::CountedPer;
    // Each key may make 2 a minute, the organization 3 in all.
    let own = per(2, 60);
    let org_wide = per(3, 60).counted_per(CountedPer::Organization);
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let issued = store
            .issue(NewKey::org("acme").limits(limits(&[own.clone(), org_wide.clone()])))
            .await
            .unwrap();
        tokens.push(issued.token.expose_secret().to_owned());
    }
    let app = app(KeyAuthLayer::new(store));
    let statuses = [&tokens[0], &tokens[0], &tokens[0], &tokens[1], &tokens[1]];
    let mut admitted = Vec::new();
    for token in statuses {
        admitted.push(get_bearer(&app, "/v1/whoami", token).await.status == StatusCode::OK);
    }
    // The first key's third is refused by its own limit and charges the
    // organization nothing, so the second key gets the organization's last.
    assert_eq!(admitted, [true, true, false, true, false]);
}

#[tokio::test]
async fn a_limit_per_workspace_counts_each_workspace_apart() {
    use tower_keyauth::limit::CountedPer;
    let per_workspace = per(1, 60).counted_per(CountedPer::Workspace);
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for workspace in ["web", "web", "batch"] {
        let issued = store
            .issue(
                NewKey::workspace("acme", workspace)
                    .limits(limits(std::slice::from_ref(&per_workspace))),
            )
            .await
            .unwrap();
        tokens.push(issued.token.expose_secret().to_owned());
    }
    let app = app(KeyAuthLayer::new(store));
    let admitted: Vec<bool> = admitted_in_turn(&app, &tokens).await;
    // The second "web" key finds its workspace's one request spent.
    assert_eq!(admitted, [true, false, true]);
}

async fn admitted_in_turn(app: &axum::Router, tokens: &[String]) -> Vec<bool> {
    let mut admitted = Vec::new();
    for token in tokens {
        admitted.push(get_bearer(app, "/v1/whoami", token).await.status == StatusCode::OK);
    }
    admitted
}

/// A limiter that never answers.
struct HungLimiter;

#[async_trait]
impl RateLimiter for HungLimiter {
    async fn charge(&self, _: &[Counter], _: u32) -> Result<Charge, LimiterError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_limiter_that_hangs_is_bounded_by_the_store_timeout_after_a_lookup_that_waited_too() {
    let (store, token, _) = limited_key(&[per(5, 60)]).await;
    for slow_lookup in [false, true] {
        let layer = if slow_lookup {
            let slow = CountingStore::slow(store.clone(), Duration::from_millis(1));
            app(KeyAuthLayer::new(slow)
                .rate_limiter(HungLimiter)
                .store_timeout(Duration::from_millis(100)))
        } else {
            app(KeyAuthLayer::new(store.clone())
                .rate_limiter(HungLimiter)
                .store_timeout(Duration::from_millis(100)))
        };
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            get_bearer(&layer, "/v1/whoami", &token),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer (slow lookup: {slow_lookup})"));
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.error(), "unavailable");
    }
}

#[tokio::test]
async fn a_key_issued_a_lower_shared_limit_draws_on_the_same_count() {
    use tower_keyauth::limit::CountedPer;
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for limit in [4, 3] {
        let shared = per(limit, 60).counted_per(CountedPer::Organization);
        let issued = store
            .issue(NewKey::org("acme").limits(limits(&[shared])))
            .await
            .unwrap();
        tokens.push(issued.token.expose_secret().to_owned());
    }
    let app = app(KeyAuthLayer::new(store));
    let (four, three) = (&tokens[0], &tokens[1]);
    for _ in 0..4 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", four).await.status,
            StatusCode::OK
        );
    }
    // The organization's count is spent: a lower limit is no fresh count.
    let refused = get_bearer(&app, "/v1/whoami", three).await;
    assert_eq!(refused.error(), "rate_limited");
    assert_eq!(header(&refused, "ratelimit"), Some("organization;r=0;t=60"));
}

#[tokio::test]
async fn a_lower_limit_refuses_sooner_on_a_shared_count() {
    use tower_keyauth::limit::CountedPer;
    let store = MemoryStore::new();
    let mut tokens = Vec::new();
    for limit in [3, 5] {
        let shared = per(limit, 60).counted_per(CountedPer::Organization);
        let issued = store
            .issue(NewKey::org("acme").limits(limits(&[shared])))
            .await
            .unwrap();
        tokens.push(issued.token.expose_secret().to_owned());
    }
    let app = app(KeyAuthLayer::new(store));
    let (three, five) = (&tokens[0], &tokens[1]);
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", five).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_bearer(&app, "/v1/whoami", three).await.error(),
        "rate_limited"
    );
    for _ in 0..2 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", five).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get_bearer(&app, "/v1/whoami", five).await.error(),
        "rate_limited"
    );
}
