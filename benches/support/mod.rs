//! What the benches share: the innermost service, a Bearer header, and a
//! store full of keys.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::Service;
use tower_keyauth::{KeyFormat, KeyKind, KeyRecord, MemoryStore, Owner};

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
