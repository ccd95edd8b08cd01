//! The failed-attempt throttle under a flood of addresses: what a refused
//! credential (a bad checksum: refused before any lookup, and counted)
//! costs through `KeyAuthLayer` around the trivial service, the client's
//! address given as `PeerAddr`, with the throttle
//!
//! * `off`: not configured, for reference;
//! * `empty`: on, its table holding the sender alone;
//! * `flooded_new_address`: on, its table full of open windows (196 608
//!   IPv6 /64s refused within the window, more than the 131 072 it holds),
//!   the sender a /64 it has not seen, a new one at every request: the
//!   case that swept a whole shard per request before the throttle kept
//!   its earliest closing;
//! * `flooded_known_address`: on, flooded, the sender one of the /64s it
//!   holds.
//!
//! The limit is out of reach (`u32::MAX`), so that every request is
//! counted. A second group, `throttle_flood_blocked`, times a request from
//! a /48 that the throttle blocked during the flood (limit 3), a /64 of it
//! after another: answered 429 before its credential is parsed.
//!
//! The window is an hour, so that no window closes during a run.

use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tower_keyauth::client_addr::PeerAddr;
use tower_keyauth::ids::KeyKind;
use tower_keyauth::{KeyAuthLayer, KeyFormat, MemoryStore};

#[path = "support/mod.rs"]
mod support;
use support::{Trivial, bearer};

const WINDOW: Duration = Duration::from_secs(3600);

/// The /64 number `n` under `2001:db8::/32`: `2001:db8:<n's high 16
/// bits>:<n's low 16 bits>::1`, so /48 number `n >> 16`.
fn host(n: u32) -> IpAddr {
    let prefix = (0x2001_0db8_u128 << 96) | (u128::from(n) << 64);
    IpAddr::V6(Ipv6Addr::from(prefix | 1))
}

/// A well-formed token whose checksum is wrong.
fn bad_checksum() -> HeaderValue {
    let minted = KeyFormat::default()
        .mint(KeyKind::Organization, None)
        .unwrap();
    let token = minted.token.expose_secret();
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    bearer(&format!("{}{last}", &token[..token.len() - 1]))
}

/// Calls `service` with `authorization` from `client` and drives the
/// answer, which must come without waiting. Never inlined, as the other
/// benches' `serve`.
#[inline(never)]
fn send<S, B>(service: &mut S, authorization: &HeaderValue, client: IpAddr) -> u16
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut request = Request::new(String::new());
    request
        .headers_mut()
        .insert(AUTHORIZATION, authorization.clone());
    request.extensions_mut().insert(PeerAddr(client));
    let mut context = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut context).is_ready());
    match pin!(service.call(request)).poll(&mut context) {
        Poll::Ready(response) => response.unwrap().status().as_u16(),
        Poll::Pending => panic!("the benchmark expects answers without waiting"),
    }
}

/// Refuses `token` once from each /64 of `2001:db8:a0::/48` to
/// `2001:db8:a2::/48`: 196 608 addresses, more than the throttle holds.
fn flood<S, B>(service: &mut S, token: &HeaderValue)
where
    S: Service<Request<String>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    for n in 0x00a0_0000..0x00a3_0000 {
        send(service, token, host(n));
    }
}

fn throttle_flood(c: &mut Criterion) {
    let token = bad_checksum();
    let with_throttle = || {
        KeyAuthLayer::new(MemoryStore::new())
            .failed_attempts(u32::MAX, WINDOW)
            .layer(Trivial)
    };
    let mut off = KeyAuthLayer::new(MemoryStore::new()).layer(Trivial);
    let mut empty = with_throttle();
    let mut flooded = with_throttle();
    flood(&mut flooded, &token);

    let sender = host(0x00ff_0000);
    assert_eq!(send(&mut off, &token, sender), 401);
    assert_eq!(send(&mut empty, &token, sender), 401);
    let known = host(0x00a0_0000);
    assert_eq!(send(&mut flooded, &token, known), 401);

    let mut group = c.benchmark_group("throttle_flood");
    group.bench_function("off", |b| b.iter(|| send(&mut off, &token, sender)));
    group.bench_function("empty", |b| b.iter(|| send(&mut empty, &token, sender)));
    // New /64s from 2001:db8:100::/48 on, a /48 after another.
    let mut next = 0x0100_0000_u32;
    group.bench_function("flooded_new_address", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            send(&mut flooded, &token, host(next))
        })
    });
    group.bench_function("flooded_known_address", |b| {
        b.iter(|| send(&mut flooded, &token, known))
    });
    group.finish();
}

fn throttle_flood_blocked(c: &mut Criterion) {
    let token = bad_checksum();
    let mut flooded = KeyAuthLayer::new(MemoryStore::new())
        .failed_attempts(3, WINDOW)
        .layer(Trivial);
    flood(&mut flooded, &token);
    // The flood's last /48 was blocked once the throttle was full.
    let blocked = host(0x00a2_ffff);
    assert_eq!(send(&mut flooded, &token, blocked), 429);

    let mut group = c.benchmark_group("throttle_flood_blocked");
    // The /64s of that /48, one after another.
    let mut next = 0x00a2_0000_u32;
    group.bench_function("flooded_blocked_48", |b| {
        b.iter(|| {
            next = 0x00a2_0000 | (next.wrapping_add(1) & 0xffff);
            send(&mut flooded, &token, host(next))
        })
    });
    group.finish();
}

criterion_group!(benches, throttle_flood, throttle_flood_blocked);
criterion_main!(benches);
