//! What the layer records through the `metrics` facade (feature `metrics`):
//! `keyauth_requests_total` by outcome, source and kind, and
//! `keyauth_store_lookup_seconds` for lookups that went to the store.

#![cfg(feature = "metrics")]

mod common;

use std::convert::Infallible;
use std::future::Future;

use common::CountingStore;
use http::{Request, Response, StatusCode};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, ServiceExt, service_fn};
use tower_keyauth::metrics::{REQUESTS_TOTAL, STORE_LOOKUP_SECONDS};
use tower_keyauth::{Extract, KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey};

/// What a test recorded (a snapshot drains the recorder, so there is one).
type Recorded = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Runs `test` on one thread with a recorder of its own, and returns what
/// it recorded.
fn recorded<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> Recorded {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    snapshotter.snapshot().into_vec()
}

/// The counter `keyauth_requests_total` with exactly these labels, 0 when
/// absent.
fn requests(recorded: &Recorded, outcome: &str, source: &str, kind: &str) -> u64 {
    let mut total = 0;
    for (key, _, _, value) in recorded {
        let key = key.key();
        if key.name() != REQUESTS_TOTAL {
            continue;
        }
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        labels.sort();
        let wanted = vec![
            ("kind".to_owned(), kind.to_owned()),
            ("outcome".to_owned(), outcome.to_owned()),
            ("source".to_owned(), source.to_owned()),
        ];
        if labels == wanted {
            let DebugValue::Counter(count) = value else {
                panic!("{REQUESTS_TOTAL} is not a counter");
            };
            total += *count;
        }
    }
    total
}

/// The samples of `keyauth_store_lookup_seconds`.
fn lookups(recorded: &Recorded) -> Vec<f64> {
    recorded
        .iter()
        .filter(|(key, ..)| key.key().name() == STORE_LOOKUP_SECONDS)
        .flat_map(|(_, _, _, value)| match value {
            DebugValue::Histogram(samples) => samples.iter().map(|s| s.into_inner()),
            _ => panic!("{STORE_LOOKUP_SECONDS} is not a histogram"),
        })
        .collect()
}

/// The status of `GET path` with `headers` through `layer`.
async fn status<S: KeyStore>(
    layer: &KeyAuthLayer<S>,
    path: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let service = layer.layer(service_fn(|_request: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    service
        .oneshot(request.body(String::new()).unwrap())
        .await
        .unwrap()
        .status()
}

/// A path, its headers and the status expected.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn admitted_and_refused_requests_are_counted_by_their_labels() {
    let recorded = recorded(|| async {
        let store = MemoryStore::new();
        let org = store.issue(NewKey::org("acme")).await.unwrap();
        let workspace = store
            .issue(NewKey::workspace("acme", "billing"))
            .await
            .unwrap();
        let revoked = store.issue(NewKey::org("acme")).await.unwrap();
        store.revoke(&revoked.record.id).await.unwrap();
        let layer = KeyAuthLayer::new(store)
            .extract(Extract::bearer_or_api_key())
            .public("/health/");

        let org_token = bearer(org.token.expose_secret());
        let cases: [Case; 7] = [
            ("/v1", vec![("authorization", &org_token)], StatusCode::OK),
            ("/v1", vec![("authorization", &org_token)], StatusCode::OK),
            (
                "/v1",
                vec![("x-api-key", workspace.token.expose_secret())],
                StatusCode::OK,
            ),
            (
                "/v1",
                vec![("authorization", "Bearer sk_live_abcdef")],
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/v1",
                vec![("x-api-key", revoked.token.expose_secret())],
                StatusCode::UNAUTHORIZED,
            ),
            ("/v1", vec![], StatusCode::UNAUTHORIZED),
            ("/health/", vec![], StatusCode::OK),
        ];
        for (path, headers, expected) in cases {
            assert_eq!(
                status(&layer, path, &headers).await,
                expected,
                "{path} {headers:?}"
            );
        }
    });

    let count = |outcome, source, kind| requests(&recorded, outcome, source, kind);
    assert_eq!(count("authenticated", "bearer", "organization"), 2);
    assert_eq!(count("authenticated", "header", "workspace"), 1);
    assert_eq!(count("invalid_token", "bearer", "unknown"), 1);
    // Revoked keys answer `invalid_token` (with a description saying so).
    assert_eq!(count("invalid_token", "header", "unknown"), 1);
    assert_eq!(count("missing_credentials", "none", "unknown"), 1);
    assert_eq!(count("public", "none", "unknown"), 1);
    // An in-memory store answers at once: nothing waited on a store.
    assert!(lookups(&recorded).is_empty());
}

#[test]
fn lookups_that_go_to_the_store_are_timed_and_counted() {
    let recorded = recorded(|| async {
        let memory = MemoryStore::new();
        let issued = memory.issue(NewKey::org("acme")).await.unwrap();
        let counting = CountingStore::new(memory);
        let layer = KeyAuthLayer::from_shared_store(counting.clone());

        let token = bearer(issued.token.expose_secret());
        assert_eq!(
            status(&layer, "/v1", &[("authorization", &token)]).await,
            StatusCode::OK
        );
        let wrong = common::with_typo(issued.token.expose_secret());
        assert_eq!(
            status(&layer, "/v1", &[("authorization", &bearer(&wrong))]).await,
            StatusCode::UNAUTHORIZED
        );
        // The typo breaks the checksum: refused before any lookup.
        assert_eq!(counting.finds(), 1);
    });

    assert_eq!(
        requests(&recorded, "authenticated", "bearer", "organization"),
        1
    );
    assert_eq!(requests(&recorded, "invalid_token", "bearer", "unknown"), 1);
    let samples = lookups(&recorded);
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert!(samples[0] >= 0.0 && samples[0] < 10.0, "{samples:?}");
}

#[test]
fn a_request_refused_by_its_limits_is_counted_once_as_refused() {
    let recorded = recorded(|| async {
        let memory = MemoryStore::new();
        let one_a_minute = tower_keyauth::limit::UsageLimits::new()
            .rate_limit(
                tower_keyauth::limit::RateLimit::per(1, std::time::Duration::from_secs(60))
                    .unwrap(),
            )
            .unwrap();
        let issued = memory
            .issue(NewKey::org("acme").limits(one_a_minute))
            .await
            .unwrap();
        let token = bearer(issued.token.expose_secret());
        // Through the store's asynchronous path (a counting store answers
        // later), and through the in-memory one.
        let waiting = KeyAuthLayer::from_shared_store(CountingStore::new(memory.clone()));
        let at_once = KeyAuthLayer::new(memory);
        assert_eq!(
            status(&waiting, "/v1", &[("authorization", &token)]).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&waiting, "/v1", &[("authorization", &token)]).await,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status(&at_once, "/v1", &[("authorization", &token)]).await,
            StatusCode::OK,
            "another layer counts in its own limiter"
        );
    });
    assert_eq!(
        requests(&recorded, "authenticated", "bearer", "organization"),
        2
    );
    assert_eq!(requests(&recorded, "rate_limited", "bearer", "unknown"), 1);
}
