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
//! | step | module |
//! |---|---|
//! | find the credential | [`Extract`] |
//! | recognise `<prefix>_<id>.<secret><checksum>` | [`KeyFormat`] |
//! | hash and compare | [`KeyHash`], [`Token`] |
//! | look the key up, compare its hash before anything else | [`KeyStore::find_key_matching`], [`KeyMatch`], [`KeyRecord`] |
//! | revoked? (no clock asked) expired? (the [`Clock`]) | [`KeyRecord::is_revoked`], [`KeyRecord::is_expired_at`] |
//! | the caller | [`Principal`], [`Scopes`] (at most [`Scopes::MAX_COUNT`]) |
//! | refusals | [`AuthError`], [`Responder`] |
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
//! | store error, timeout, corrupt record | 503 | `unavailable` | 14 |
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` | [`Principal`] and `Option<Principal>` extractors, `IntoResponse` for [`AuthError`] |
//! | `tonic` | `NamedService` for [`KeyAuth`] and [`RequireScopesService`], `Status` from [`AuthError`], [`tonic::RequestPrincipal`] |
//! | `tokio` | `KeyAuthLayer::store_timeout`, on tokio's timer |
//! | `cache` | `CachedStore`: positive and negative TTLs, a capacity bound, one store call per id under concurrent misses |
//! | `sqlite` | `SqliteStore`: keys in SQLite through sqlx, with embedded migrations |
//! | `postgres` | `PostgresStore`: keys in PostgreSQL through sqlx, with embedded migrations |
//! | `serde` | `Serialize` for [`Principal`], [`Scopes`] and [`KeySummary`] |
//!
//! [tower]: https://docs.rs/tower

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod clock;
mod error;
mod extract;
mod format;
mod future;
mod guard;
mod hash;
mod ids;
mod layer;
mod principal;
mod public;
mod record;
mod require_scopes;
mod response;
mod scope;
mod service;
mod store;
mod verify;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "serde")]
mod serde;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use body::AuthBody;
pub use clock::{Clock, SystemClock};
pub use error::{AuthError, AuthErrorKind};
pub use extract::{API_KEY_HEADER, API_KEY_QUERY, Extract, ExtractCredential, MAX_CREDENTIAL_LEN};
pub use format::{Environment, KeyFormat, MintError, MintedToken, ParseError, ParsedToken};
pub use future::ResponseFuture;
pub use hash::{KeyHash, Token};
pub use ids::{KeyId, Label, OrgId, UserId, WorkspaceId};
pub use layer::{DEFAULT_ORG_HEADER, KeyAuthLayer};
pub use principal::{CredentialSource, Principal, Tenant};
pub use record::{KeyKind, KeyRecord, Membership, Owner};
pub use require_scopes::{RequireScopes, RequireScopesService};
pub use response::{DefaultResponder, Responder, is_grpc};
pub use scope::{InvalidScope, Scope, Scopes};
pub use service::KeyAuth;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
#[cfg(feature = "cache")]
pub use store::{CacheInvalidator, CacheOptions, CachedStore};
pub use store::{
    DEFAULT_LAST_USED_INTERVAL, Invalidate, Invalidation, IssuedKey, KeyLifecycle, KeyMatch,
    KeyPolicy, KeyStore, KeySummary, LifecycleError, MemoryStore, NewKey, StoreError, StoreOptions,
};
#[cfg(feature = "postgres")]
pub use store::{INVALIDATION_CHANNEL, InvalidationListener, PostgresStore};

/// The Rust blocks of README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
