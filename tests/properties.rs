//! Properties of the token parser and of every credential source, over
//! arbitrary input: no panic, minted tokens round-trip, a typo never
//! reaches the store, and the outcome is always one of the documented ones.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use common::CountingStore;
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use tower::{Layer, Service};
use tower_keyauth::format::Environment;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::{
    Extract, KeyAuthLayer, KeyFormat, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal,
};

fn formats() -> [KeyFormat; 3] {
    [
        KeyFormat::default(),
        KeyFormat::default().accept_opaque(),
        KeyFormat::new()
            .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
            .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test)
            .prefix("andi", KeyKind::Organization),
    ]
}

/// A store with one organization key, and its token.
fn store_with_key() -> (MemoryStore, String) {
    let store = MemoryStore::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let issued = runtime.block_on(store.issue(NewKey::org("acme"))).unwrap();
    (store, issued.token.expose_secret().to_owned())
}

/// What the inner service saw of a request that passed.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Option<(String, bool)>>>);

/// Runs one request through the layer (the stores here answer without
/// waiting) and returns the status, and what the inner service saw.
fn run<S: KeyStore>(
    layer: &KeyAuthLayer<S>,
    request: Request<()>,
) -> (u16, Option<(String, bool)>) {
    let seen = Seen::default();
    let record = seen.clone();
    let mut service = layer
        .clone()
        .layer(tower::service_fn(move |request: Request<()>| {
            let principal = request.extensions().get::<Principal>().is_some();
            *record.0.lock().unwrap() = Some((request.uri().to_string(), principal));
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
    let mut context = Context::from_waker(Waker::noop());
    let status = match pin!(service.call(request)).poll(&mut context) {
        Poll::Ready(response) => response.unwrap().status().as_u16(),
        Poll::Pending => panic!("these stores answer at once"),
    };
    let seen = seen.0.lock().unwrap().take();
    (status, seen)
}

/// Printable ASCII and a sprinkling of everything else.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()], 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // CI runs on clean clones: nothing to persist between runs.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn parsing_any_text_never_panics(text in any::<String>()) {
        for format in formats() {
            let _ = format.parse(&text);
        }
    }

    #[test]
    fn parsing_token_shaped_text_never_panics(
        prefix in prop::sample::select(vec!["ak", "pat", "andi_live", "andi", "x"]),
        id in "[A-Za-z0-9._-]{0,70}",
        rest in "[A-Za-z0-9.]{0,70}",
    ) {
        let text = format!("{prefix}_{id}.{rest}");
        for format in formats() {
            let _ = format.parse(&text);
        }
    }

    #[test]
    fn minted_tokens_round_trip(kind in prop::sample::select(vec![KeyKind::Organization, KeyKind::Workspace, KeyKind::Personal])) {
        let format = KeyFormat::default();
        let minted = format.mint(kind, None).unwrap();
        let parsed = format.parse(minted.token.expose_secret()).unwrap();
        prop_assert_eq!(parsed.key_id(), Some(minted.id.clone()));
        prop_assert!(parsed.accepts(kind));
        prop_assert_eq!(parsed.prefix(), Some(&*minted.prefix));
    }

    #[test]
    fn environment_tokens_round_trip(environment in prop::sample::select(vec![Environment::Live, Environment::Test])) {
        let format = formats()[2].clone();
        let minted = format.mint(KeyKind::Workspace, Some(environment)).unwrap();
        let parsed = format.parse(minted.token.expose_secret()).unwrap();
        prop_assert_eq!(parsed.environment(), Some(environment));
        prop_assert_eq!(parsed.key_id(), Some(minted.id));
    }

    /// Any one character changed, to anything at all, is refused without a
    /// store call: the checksum (or the shape) catches it.
    #[test]
    fn a_single_changed_character_never_reaches_the_store(
        position in 0usize..64,
        replacement in any::<char>(),
    ) {
        let (store, token) = store_with_key();
        let position = position % token.len();
        let original = token[position..].chars().next().unwrap();
        prop_assume!(replacement != original);
        let mut changed = token.clone();
        changed.replace_range(position..position + original.len_utf8(), &replacement.to_string());
        prop_assert!(KeyFormat::default().parse(&changed).is_err());

        let counting = CountingStore::new(store);
        let layer = KeyAuthLayer::from_shared_store(counting.clone()).extract(Extract::bearer_api_key_or_query());
        let request = match HeaderValue::from_str(&format!("Bearer {changed}")) {
            Ok(value) => Request::get("/").header("authorization", value).body(()).unwrap(),
            // Not a header value at all: send it in the query, encoded.
            Err(_) => {
                let encoded: String = changed.bytes().map(|b| format!("%{b:02X}")).collect();
                Request::get(format!("/?api-key={encoded}")).body(()).unwrap()
            }
        };
        let (status, seen) = run(&layer, request);
        prop_assert!(status == 400 || status == 401, "status {}", status);
        prop_assert!(seen.is_none());
        prop_assert_eq!(counting.finds(), 0);
    }

    /// Whatever the bytes of the credential headers, the answer is a
    /// documented one, and only the real key passes.
    #[test]
    fn any_header_bytes_get_a_documented_answer(
        authorization in header_bytes(),
        api_key in header_bytes(),
        real_bearer in any::<bool>(),
        repeat in any::<bool>(),
    ) {
        let (store, token) = store_with_key();
        let authorization = if real_bearer {
            format!("Bearer {token}").into_bytes()
        } else {
            authorization
        };
        let layer = KeyAuthLayer::new(store).extract(Extract::bearer_or_api_key());
        let mut builder = Request::get("/");
        let mut real = false;
        for (name, bytes) in [("authorization", &authorization), ("x-api-key", &api_key)] {
            if let Ok(value) = HeaderValue::from_bytes(bytes) {
                builder = builder.header(name, value.clone());
                if repeat {
                    builder = builder.header(name, value);
                }
                real |= bytes == token.as_bytes() || bytes == format!("Bearer {token}").as_bytes();
            }
        }
        let (status, seen) = run(&layer, builder.body(()).unwrap());
        prop_assert!([200, 400, 401].contains(&status), "status {}", status);
        if status == 200 {
            prop_assert!(real && !repeat);
            prop_assert_eq!(seen.map(|(_, principal)| principal), Some(true));
        }
        // The real key alone (the other header empty or absent) passes.
        if real_bearer && !repeat && HeaderValue::from_bytes(&api_key).is_err() {
            prop_assert_eq!(status, 200);
        }
    }

    /// Arbitrary query strings: a documented answer, and the inner service
    /// never sees an `api-key` parameter while every other one survives in
    /// order.
    #[test]
    fn query_credentials_are_always_removed_and_nothing_else(
        pairs in prop::collection::vec(("[a-z%+0-9-]{0,8}", "[A-Za-z0-9%+._~-]{0,12}"), 0..6),
        with_key in any::<bool>(),
    ) {
        let (store, token) = store_with_key();
        let layer = KeyAuthLayer::new(store)
            .extract(Extract::bearer_api_key_or_query())
            .public("/open");
        let mut query: Vec<String> = pairs.iter().map(|(name, value)| format!("{name}={value}")).collect();
        if with_key {
            query.insert(query.len() / 2, format!("api-key={token}"));
        }
        let target = format!("/open?{}", query.join("&"));
        let Ok(request) = Request::get(target.as_str()).body(()) else {
            return Ok(());
        };
        let (status, seen) = run(&layer, request);
        prop_assert!([200, 400].contains(&status), "status {}", status);
        if let Some((uri, _)) = seen {
            let is_credential = |part: &str| {
                let name = part.split_once('=').map_or(part, |(name, _)| name);
                percent_encoding::percent_decode_str(&name.replace('+', " "))
                    .decode_utf8()
                    .is_ok_and(|name| name == "api-key")
            };
            let kept: Vec<&str> = uri.split_once('?').map_or(vec![], |(_, q)| q.split('&').collect());
            let sent = target.split_once('?').map_or("", |(_, query)| query);
            let expected: Vec<&str> = sent.split('&').filter(|part| !is_credential(part)).collect();
            prop_assert_eq!(kept, expected, "{}", uri);
        }
    }
}
