//! What the benches share: the innermost service, a Bearer header, a store
//! full of keys, a driver for the layer's synchronous answers, and forged
//! tokens (a known id, another secret, a valid checksum).
//!
//! Not every bench uses every helper, hence the `allow(dead_code)`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::Service;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::store::{KeyRecord, Owner};
use tower_keyauth::{KeyFormat, MemoryStore, Scopes};

/// The innermost service: answers at once, allocates nothing.
#[derive(Clone, Copy)]
pub(crate) struct Trivial;

impl<B> Service<Request<B>> for Trivial {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        ready(Ok(Response::new(String::new())))
    }
}

pub(crate) fn bearer(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
}

/// A `MemoryStore` of 10 000 organization keys, the token of one of them
/// (from the middle), and a well-formed token that is not stored.
pub(crate) struct StoredKeys {
    pub(crate) store: MemoryStore,
    pub(crate) known: String,
    pub(crate) unknown: String,
}

pub(crate) fn ten_thousand_keys(format: &KeyFormat) -> StoredKeys {
    let store = MemoryStore::new();
    let mut known = String::new();
    for i in 0..10_000 {
        let minted = format.mint(KeyKind::Organization, None).unwrap();
        store.insert(
            KeyRecord::new(minted.id.clone(), minted.token.hash(), Owner::org("acme"))
                .with_prefix("ak"),
        );
        if i == 5_000 {
            known = minted.token.expose_secret().to_owned();
        }
    }
    let unknown = format
        .mint(KeyKind::Organization, None)
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    StoredKeys {
        store,
        known,
        unknown,
    }
}

pub(crate) struct Fixture {
    pub(crate) store: MemoryStore,
    pub(crate) valid: String,
    pub(crate) unknown: String,
    pub(crate) wrong_secret: String,
    pub(crate) bad_checksum: String,
    /// A key that may read but not write.
    pub(crate) reader: String,
    /// A key with one rate limit too large to be spent by a bench run
    /// (10⁹ a year), so that every request is charged and admitted.
    pub(crate) limited: String,
}

/// A store of 10 000 keys, and one token of each kind the layer meets.
pub(crate) fn fixture() -> Fixture {
    let format = KeyFormat::default();
    let StoredKeys {
        store,
        known: valid,
        unknown,
    } = ten_thousand_keys(&format);
    // A stored id whose record holds another secret's hash.
    let victim = format.mint(KeyKind::Organization, None).unwrap();
    let other = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(KeyRecord::new(
        victim.id.clone(),
        other.token.hash(),
        Owner::org("acme"),
    ));
    let wrong_secret = victim.token.expose_secret().to_owned();
    let reader = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(
        KeyRecord::new(reader.id.clone(), reader.token.hash(), Owner::org("acme"))
            .with_scopes(Scopes::parse(["objects.read"]).unwrap()),
    );
    let reader = reader.token.expose_secret().to_owned();
    let limited = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(
        KeyRecord::new(limited.id.clone(), limited.token.hash(), Owner::org("acme")).with_limits(
            tower_keyauth::limit::UsageLimits::new()
                .rate_limit(
                    tower_keyauth::limit::RateLimit::per(
                        tower_keyauth::limit::MAX_LIMIT,
                        std::time::Duration::from_secs(366 * 24 * 3600),
                    )
                    .unwrap(),
                )
                .unwrap(),
        ),
    );
    let limited = limited.token.expose_secret().to_owned();
    let last = if valid.ends_with('A') { 'B' } else { 'A' };
    let bad_checksum = format!("{}{last}", &valid[..valid.len() - 1]);
    Fixture {
        store,
        valid,
        unknown,
        wrong_secret,
        bad_checksum,
        reader,
        limited,
    }
}

/// The yardstick's map: as many entries as the fixture's store, keyed like
/// ids (std's `HashMap`, SipHash), each holding `stored`; and an id in it.
pub(crate) fn yardstick_map(stored: KeyHash) -> (HashMap<String, KeyHash>, String) {
    let ids: Vec<String> = (0..10_000).map(|i| format!("{i:012}")).collect();
    let map = ids.iter().map(|id| (id.clone(), stored)).collect();
    (map, ids[5_000].clone())
}

/// Readies `service`, calls it with a fresh request carrying `authorization`
/// and drives the answer, which must come without waiting. Never inlined,
/// so that every case runs it as a call (and `scripts/layer-instructions.py`
/// finds it in callgrind's call tree).
#[inline(never)]
pub(crate) fn serve<S, B>(service: &mut S, authorization: Option<&HeaderValue>) -> u16
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    drive(service, request_with(authorization))
}

/// A fresh request, with `authorization` if given.
fn request_with(authorization: Option<&HeaderValue>) -> Request<String> {
    let mut request = Request::new(String::new());
    if let Some(value) = authorization {
        request.headers_mut().insert(AUTHORIZATION, value.clone());
    }
    request
}

/// Sends one request with `authorization` through a layer over a cache and
/// waits for its answer: the first fills the cache (and waits for the
/// store), the ones after it hit.
pub(crate) fn fill_cache<S, B>(service: &mut S, authorization: &HeaderValue)
where
    S: Service<Request<String>, Response = Response<B>>,
{
    let mut context = Context::from_waker(Waker::noop());
    let mut first = pin!(service.call(request_with(Some(authorization))));
    while first.as_mut().poll(&mut context).is_pending() {}
}

/// The path of the route that matched, as axum's router records it
/// (`axum::extract::MatchedPath`, which has no public constructor).
#[derive(Clone)]
pub(crate) struct MatchedPath(#[allow(dead_code)] Arc<str>);

/// Like [`serve`], with the request as axum's router hands it to the layers
/// of a route (`Router::layer`): carrying `MatchedPath` and `OriginalUri` in
/// its extensions. A layer's own values then join an existing map instead
/// of creating one. Never inlined, as [`serve`].
#[inline(never)]
pub(crate) fn serve_routed<S, B>(
    service: &mut S,
    authorization: Option<&HeaderValue>,
    matched: &Arc<str>,
) -> u16
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut request = request_with(authorization);
    let original = axum::extract::OriginalUri(request.uri().clone());
    request
        .extensions_mut()
        .insert(MatchedPath(Arc::clone(matched)));
    request.extensions_mut().insert(original);
    drive(service, request)
}

fn drive<S, B>(service: &mut S, request: Request<String>) -> u16
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut context = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut context).is_ready());
    match pin!(service.call(request)).poll(&mut context) {
        Poll::Ready(response) => response.unwrap().status().as_u16(),
        Poll::Pending => panic!("the benchmark expects answers without waiting"),
    }
}

/// The documented checksum, written independently of the crate: CRC32 of
/// everything before it, as six base62 digits, most significant first.
pub(crate) fn seal(body: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&digits).unwrap())
}

/// `token` with the secret character at `index` changed, checksum redone:
/// a forged token, well formed, naming the same id with another secret.
pub(crate) fn with_secret_changed(token: &str, index: usize) -> String {
    let body = &token[..token.len() - 6];
    let dot = body.find('.').unwrap();
    let position = dot + 1 + index;
    let mut bytes = body.as_bytes().to_vec();
    bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
    seal(std::str::from_utf8(&bytes).unwrap())
}

/// Drops and recreates the database `name` on the server `url` names;
/// returns its connect options.
#[cfg(feature = "postgres")]
pub(crate) async fn recreate_database(url: &str, name: &str) -> sqlx::postgres::PgConnectOptions {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use std::str::FromStr;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
    PgConnectOptions::from_str(url).unwrap().database(name)
}
