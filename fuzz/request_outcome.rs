//! Request to outcome: the logic of the `request` fuzz target, shared with
//! the stable test that replays the corpus.
//!
//! Input: the first byte picks the extraction policy (its low bits modulo
//! 3: Bearer, Bearer or `x-api-key`, or those and the `api-key` query) and
//! whether `/open` is public (its high bit); the rest is lines, the first the request target, the others
//! `name: value` headers. `$ORG`, `$WORKSPACE`, `$PAT`, `$REVOKED` and
//! `$EXPIRED` stand for real keys of a fixed store, so that inputs can reach
//! every outcome.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Request, Response};
use tower_keyauth::ids::{KeyKind, OrgId, UserId};
use tower_keyauth::store::{KeyRecord, Membership, Owner};
use tower_keyauth::{Extract, KeyAuthLayer, KeyFormat, MemoryStore, Principal, Scopes};
use tower_layer::Layer;
use tower_service::Service;

/// The keys of the fixed store, by placeholder.
pub struct Fixture {
    pub store: MemoryStore,
    pub tokens: Vec<(&'static str, String)>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let format = KeyFormat::default();
        let store = MemoryStore::new();
        let mut tokens = Vec::new();
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 24 * 3600);
        let entries: [(&str, KeyKind, Owner, Option<Scopes>); 5] = [
            ("$ORG", KeyKind::Organization, Owner::org("acme"), None),
            (
                "$WORKSPACE",
                KeyKind::Workspace,
                Owner::workspace("acme", "docs"),
                Some(Scopes::parse(["objects.read"]).unwrap()),
            ),
            ("$PAT", KeyKind::Personal, Owner::user("ada"), None),
            ("$REVOKED", KeyKind::Organization, Owner::org("acme"), None),
            ("$EXPIRED", KeyKind::Organization, Owner::org("acme"), None),
        ];
        for (name, kind, owner, scopes) in entries {
            let minted = format.mint(kind, None).unwrap();
            let mut record = KeyRecord::new(minted.id.clone(), minted.token.hash(), owner)
                .with_prefix(&*minted.prefix);
            if let Some(scopes) = scopes {
                record = record.with_scopes(scopes);
            }
            if name == "$REVOKED" {
                record = record.with_revoked_at(now - year);
            }
            if name == "$EXPIRED" {
                record = record.with_expires_at(now - year);
            }
            store.insert(record);
            tokens.push((name, minted.token.expose_secret().to_owned()));
        }
        let runtime_free_membership = store.clone();
        drive(async move {
            use tower_keyauth::KeyLifecycle;
            runtime_free_membership
                .set_membership(
                    &UserId::from("ada"),
                    &OrgId::from("acme"),
                    Some(Membership::new(Scopes::parse(["objects.read"]).unwrap())),
                )
                .await
                .unwrap();
        });
        Fixture { store, tokens }
    })
}

/// Runs a future that never waits (everything here is in memory).
fn drive<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    let mut future = pin!(future);
    for _ in 0..1000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
    }
    panic!("an in-memory request did not finish");
}

/// What became of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub error: Option<String>,
    /// Whether the inner service ran, and with a principal.
    pub reached_inner: bool,
    pub principal: bool,
}

/// Turns `data` into a request, sends it through the layer and checks every
/// invariant of the outcome table. `None` when the bytes do not make an
/// HTTP request (the server would have refused them before the layer).
pub fn check(data: &[u8]) -> Option<Outcome> {
    let fixture = fixture();
    let (&selector, rest) = data.split_first()?;
    let text = substitute(rest, &fixture.tokens);
    let mut lines = text.split(|&b| b == b'\n');
    let target = std::str::from_utf8(lines.next()?).ok()?;
    let mut builder = Request::get(target);
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(trim(&line[colon + 1..])).ok()?;
        builder = builder.header(name, value);
    }
    let request = builder.body(()).ok()?;
    let sent_key = fixture
        .tokens
        .iter()
        .any(|(_, token)| text.windows(token.len()).any(|w| w == token.as_bytes()));

    let uses_query = (selector & 0x7f) % 3 == 2;
    let extract = match (selector & 0x7f) % 3 {
        0 => Extract::bearer(),
        1 => Extract::bearer_or_api_key(),
        _ => Extract::bearer_api_key_or_query(),
    };
    let mut layer = KeyAuthLayer::new(fixture.store.clone()).extract(extract);
    let public = selector & 0x80 != 0;
    if public {
        layer = layer.public("/open");
    }
    let seen: Arc<Mutex<Option<(String, bool)>>> = Arc::default();
    let record = seen.clone();
    let mut service = layer.layer(tower_service_fn(move |request: Request<()>| {
        let principal = request.extensions().get::<Principal>().is_some();
        *record.lock().unwrap() = Some((request.uri().to_string(), principal));
    }));
    let response = drive(service.call(request)).unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = drive(collect(response.into_body()));
    let seen = seen.lock().unwrap().take();

    // Only documented statuses: the store never fails here.
    assert!([200, 400, 401, 403].contains(&status), "status {status}");
    // No secret comes back, in any form.
    for (_, token) in &fixture.tokens {
        let secret = token.split_once('.').unwrap().1;
        assert!(!body.windows(secret.len()).any(|w| w == secret.as_bytes()));
        for value in headers.values() {
            assert!(
                !value
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes())
            );
        }
    }
    let error = if status == 200 {
        let (uri, principal) = seen.clone().expect("a 200 comes from the inner service");
        // A principal only for a real key; none needed on a public path.
        assert!(principal || public, "passed without a principal");
        assert!(!principal || sent_key, "a principal without a real key");
        // A query credential never reaches the inner service.
        assert!(
            !(uses_query && has_api_key_parameter(&uri)),
            "api-key left in {uri}"
        );
        None
    } else {
        assert!(
            seen.is_none(),
            "a refused request reached the inner service"
        );
        let json = std::str::from_utf8(&body).expect("refusals are UTF-8");
        let code = json
            .strip_prefix(r#"{"error":""#)
            .and_then(|rest| rest.split('"').next())
            .expect("refusals are JSON with an error code");
        let expected = match status {
            400 => &["invalid_request"][..],
            401 => &[
                "missing_credentials",
                "invalid_token",
                "missing_organization",
            ][..],
            _ => &["forbidden", "insufficient_scope"][..],
        };
        assert!(expected.contains(&code), "{status} with {code}");
        let challenge = headers.get("www-authenticate").is_some();
        assert_eq!(
            challenge,
            status != 403 || code == "insufficient_scope",
            "{status} {code}"
        );
        Some(code.to_owned())
    };
    Some(Outcome {
        status,
        error,
        reached_inner: seen.is_some(),
        principal: seen.is_some_and(|(_, principal)| principal),
    })
}

fn substitute(bytes: &[u8], tokens: &[(&'static str, String)]) -> Vec<u8> {
    let mut text = bytes.to_vec();
    for (name, token) in tokens {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text.as_slice();
        while let Some(at) = rest.windows(name.len()).position(|w| w == name.as_bytes()) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(token.as_bytes());
            rest = &rest[at + name.len()..];
        }
        out.extend_from_slice(rest);
        text = out;
    }
    text
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn has_api_key_parameter(uri: &str) -> bool {
    uri.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let name = pair
                .split_once('=')
                .map_or(pair, |(name, _)| name)
                .replace('+', " ");
            decode(&name) == b"api-key"
        })
    })
}

fn decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

async fn collect<B: http_body::Body<Data = bytes::Bytes>>(body: B) -> Vec<u8>
where
    B::Error: std::fmt::Debug,
{
    let mut body = pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

/// A `service_fn` without pulling in tower: records, then answers 200.
fn tower_service_fn<F>(record: F) -> Inner<F>
where
    F: FnMut(Request<()>),
{
    Inner(record)
}

#[derive(Clone)]
pub struct Inner<F>(F);

impl<F: FnMut(Request<()>)> Service<Request<()>> for Inner<F> {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        (self.0)(request);
        std::future::ready(Ok(Response::new(String::new())))
    }
}
