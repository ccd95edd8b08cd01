//! API-key authentication for [tower] services: axum routers, tonic servers,
//! anything that speaks `http`.
//!
//! [`KeyAuthLayer`] takes the credential from a request (`Authorization:
//! Bearer`, `x-api-key`, or an `api-key` query fallback), checks its shape
//! and checksum without I/O, looks its id up in a [`KeyStore`], compares the
//! SHA-256 of the token with the stored hash in constant time, checks
//! revocation, expiry and tenancy, and hands the inner service a
//! [`Principal`]. Every refusal follows RFC 6750 (and gRPC status codes for
//! gRPC callers); a failing store refuses, never admits.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey, Principal};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let issued = store.issue(NewKey::org("acme")).await.unwrap();
//! println!("curl -H 'Authorization: Bearer {}' …", issued.token.expose_secret());
//!
//! let app: Router = Router::new()
//!     .route("/v1/whoami", get(|who: Principal| async move { who.org().to_string() }))
//!     .layer(KeyAuthLayer::new(store).public("/health/"));
//! # let _ = app;
//! # }
//! ```
//!
//! # The request path
//!
//! Each step in its own file, in the order a request meets them:
//!
//! | step | file | items |
//! |---|---|---|
//! | the layer's settings | `layer.rs`, `config.rs` | [`KeyAuthLayer`] |
//! | the service: sequence the steps | `service.rs` | [`KeyAuth`] |
//! | public paths | `public.rs` | [`KeyAuthLayer::public`] |
//! | find the credential | `extract.rs` | [`Extract`] |
//! | recognise `<prefix>_<id>.<secret><checksum>` | `format.rs` | [`KeyFormat`] |
//! | hash (SHA-256, or HMAC-SHA256 under a versioned pepper) and compare | `hash.rs`, `pepper.rs` | [`hash::KeyHash`], [`hash::Token`], [`pepper::Peppers`] |
//! | look the key up, compare its hash before anything else (an in-memory store lends the record) | `store/mod.rs` | [`KeyStore::with_key_matching_now`], [`KeyStore::find_key_matching`], [`store::KeyMatch`] |
//! | the stored key: revoked? (no clock asked) expired? (the clock, coarse by default) | `record.rs`, `clock.rs` | [`store::KeyRecord::is_revoked`], [`store::KeyRecord::is_expired_at`], [`clock::CoarseClock`] |
//! | a client address with too many refused keys: 429 before parsing | `throttle.rs` | `KeyAuthLayer::failed_attempts` |
//! | decide: tenancy, membership, note the use; admit or refuse | `verify.rs` | |
//! | the key's limits: IP allowlist, rate limits (all or nothing), credits | `enforce.rs`, `limit/`, `client_addr.rs` | [`limit::UsageLimits`], [`limit::RateLimiter`], [`limit::MemoryLimiter`], [`client_addr::TrustedProxies`] |
//! | the caller | `principal.rs`, `scope.rs`, `ids.rs` | [`Principal`], [`Scopes`] (at most [`Scopes::MAX_COUNT`]) |
//! | wait for the store, then the inner service | `future.rs`, `body.rs` | [`future::ResponseFuture`], [`body::AuthBody`] |
//! | why a request was refused | `error.rs` | [`AuthError`], [`AuthErrorKind`] |
//! | every refusal's challenge and body | `response.rs` | [`response::Responder`], [`response::Refusal`] |
//! | scopes per route or service | `require_scopes.rs` | [`RequireScopes`] |
//! | issue, list, rotate, revoke | `store/lifecycle.rs` | [`KeyLifecycle`], [`NewKey`] |
//! | the bundled stores | `store/` | [`MemoryStore`], `store::SqliteStore`, `store::PostgresStore`, `store::CachedStore` |
//! | when a key leaks: find, mask and revoke it | `scan/`, `secret_scanning.rs`, `audit.rs` | [`KeyFormat::find_tokens`], [`KeyFormat::redact`], `secret_scanning::SecretScanning`, [`audit::AuditSink`] |
//!
//! The crate root holds what ordinary code names; everything else lives in
//! the module of its step: [`store`] (the stores, records, lifecycle types
//! and errors), [`limit`] (usage limits and rate limiters), [`client_addr`],
//! [`pepper`], [`scan`], [`audit`],
//! [`response`], [`extract`], [`format`](mod@format), [`hash`], [`ids`],
//! [`principal`], [`scope`], [`clock`], [`future`], [`body`].
//!
//! # Outcomes
//!
//! | situation | HTTP | `error` | gRPC |
//! |---|---|---|---|
//! | no credential, or an `Authorization` header with another scheme or none (the message says how to send a key) | 401, `WWW-Authenticate: Bearer realm="api"` | `missing_credentials` | 16 |
//! | malformed credential | 400, `error="invalid_request"` | `invalid_request` | 16 |
//! | wrong format, bad checksum, unknown id, wrong secret | 401, `error="invalid_token"` | `invalid_token` | 16 |
//! | revoked or expired | 401, `error="invalid_token"` + description | `invalid_token` | 16 |
//! | personal token without org header | 401, `error="invalid_request"` | `missing_organization`, with `org_header` | 16 |
//! | wrong organization | 403 | `forbidden` | 7 |
//! | missing scope | 403, `error="insufficient_scope"` | `insufficient_scope` | 7 |
//! | client address not in the key's allowlist | 403 | `forbidden` | 7 |
//! | a rate limit of the key spent (nothing charged); too many refused keys from the address | 429, `Retry-After`, `RateLimit` fields | `rate_limited` | 8 |
//! | the key's credits spent (nothing charged) | 429, `Retry-After` when a refill is due | `quota_exhausted` | 8 |
//! | store error, timeout, corrupt record, a limiter that failed | 503 | `unavailable` | 14 |
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` | [`Principal`] and `Option<Principal>` extractors (rejecting with `axum::PrincipalRejection`), `IntoResponse` for [`AuthError`] |
//! | `tonic` | `NamedService` for [`KeyAuth`] and [`RequireScopesService`], `Status` from [`AuthError`], `tonic::RequestPrincipal` |
//! | `tokio` | `KeyAuthLayer::store_timeout`, on tokio's timer |
//! | `cache` | `CachedStore`: positive and negative TTLs, S3-FIFO eviction within a count and a memory budget, a separate bound for unknown ids, one store call per id under concurrent misses |
//! | `sqlite` | `SqliteStore`: keys in SQLite through sqlx, with embedded migrations |
//! | `postgres` | `PostgresStore`: keys in PostgreSQL through sqlx, with embedded migrations |
//! | `serde` | `Serialize` for [`Principal`], [`Scopes`], [`store::KeySummary`] and the limits ([`limit::UsageLimits`]); with `axum`, the mountable key API `key_api::KeyApi` |
//! | `metrics` | `keyauth_requests_total` (by `outcome`, `source`, `kind`) and `keyauth_store_lookup_seconds` through the `metrics` facade; see `metrics` |
//! | `redis` | `limit::RedisLimiter`: rate limits exact across instances, one round trip per request through a Lua script |
//! | `tracing-subscriber` | `scan::RedactingWriter`: a `tracing-subscriber` writer that masks every key's secret in what is logged (the scanner, [`KeyFormat::find_tokens`](format::KeyFormat::find_tokens) and `redact`, needs no feature) |
//! | `secret-scanning` | `secret_scanning::SecretScanning`: an endpoint for GitHub's secret scanning partner program that verifies the alert's signature and revokes leaked keys |
//! | `utoipa` | `openapi`: security schemes from an [`Extract`] policy and per-route scope requirements for a utoipa 5 OpenAPI document |
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
pub mod body;
pub mod client_addr;
pub mod clock;
mod config;
mod enforce;
mod error;
pub mod extract;
pub mod format;
pub mod future;
pub mod hash;
pub mod ids;
mod layer;
pub mod limit;
pub mod metadata;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(feature = "utoipa")]
#[cfg_attr(docsrs, doc(cfg(feature = "utoipa")))]
pub mod openapi;
pub mod pepper;
pub mod principal;
mod public;
mod record;
mod require_scopes;
pub mod response;
pub mod scan;
pub mod scope;
mod service;
pub mod store;
mod throttle;
mod verify;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(all(feature = "axum", feature = "serde"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "axum", feature = "serde"))))]
pub mod key_api;
#[cfg(feature = "secret-scanning")]
#[cfg_attr(docsrs, doc(cfg(feature = "secret-scanning")))]
pub mod secret_scanning;
#[cfg(feature = "serde")]
mod serde;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use error::{AuthError, AuthErrorKind};
pub use extract::Extract;
pub use format::KeyFormat;
pub use layer::{DEFAULT_ORG_HEADER, KeyAuthLayer};
pub use principal::Principal;
pub use require_scopes::{RequireScopes, RequireScopesService};
pub use scope::Scopes;
pub use service::KeyAuth;
pub use store::{KeyLifecycle, KeyStore, MemoryStore, NewKey};

/// The Rust blocks of README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
