//! A key API to mount instead of writing one (features `axum` and `serde`):
//! issue, list, show, rotate and revoke keys over HTTP, within the issuer's
//! bounds.
//!
//! ```
//! use axum::Router;
//! use tower_keyauth::key_api::KeyApi;
//! use tower_keyauth::{KeyAuthLayer, MemoryStore};
//!
//! let store = MemoryStore::new();
//! let app: Router = Router::new()
//!     .nest("/v1/keys", KeyApi::new(store.clone()).router())
//!     .layer(KeyAuthLayer::new(store));
//! # let _ = app;
//! ```
//!
//! | route | scope | answer |
//! |---|---|---|
//! | `POST /` `{"name", "scopes"?, "expires_in_seconds"?, "metadata"?, "rate_limits"?, "credits"?, "allowed_ips"?}` | `keys.write` | 201 `{"token", "key"}`: the token is shown this once |
//! | `GET /?limit=&cursor=` | `keys.read` | 200 `{"keys", "next_cursor"}`, newest first, masked |
//! | `GET /{id}` | `keys.read` | 200, the key, masked |
//! | `POST /{id}/rotate` `{"grace_seconds"?}` | `keys.write` | 201 `{"token", "key"}` of the successor |
//! | `DELETE /{id}` | `keys.write` | 204 |
//!
//! # Limits
//!
//! A new key may carry [usage limits](crate::limit::UsageLimits), which the
//! layer enforces on its every request:
//!
//! ```json
//! {
//!   "name": "partner",
//!   "rate_limits": [
//!     {"limit": 100, "window_seconds": 60},
//!     {"limit": 10, "window_seconds": 1, "name": "burst"},
//!     {"limit": 5000, "window_seconds": 60, "per": "organization"}
//!   ],
//!   "credits": {"remaining": 10000, "refill": {"amount": 10000, "interval_seconds": 2592000}},
//!   "allowed_ips": ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]
//! }
//! ```
//!
//! - `rate_limits`: at most 4, with distinct names, and distinct windows
//!   among those counted alike; `limit` from 1 to 10^9 requests,
//!   `window_seconds` from 1 to 31 622 400 (a year and a day), `name`
//!   (optional) 1 to 64 letters, digits, `-`, `_` or `.`, a letter first,
//!   `per` (optional) `key` (the default: this key's requests alone),
//!   `workspace` or `organization` (the requests of every key of the
//!   workspace or organization with a limit of that window counted the same
//!   way, in one count
//!   each key holds to its own limit; see
//!   [`CountedPer`]). A request over one of them
//!   is answered 429 `rate_limited` and charges none of them.
//! - `credits`: `remaining` from 0 to 10^15; `refill` (optional) sets them
//!   back to `amount` (1 to 10^15) every `interval_seconds` (1 to
//!   31 622 400). A request without credit left is answered 429
//!   `quota_exhausted`.
//! - `allowed_ips`: 1 to 64 IPv4 or IPv6 networks (`10.0.0.0/8`) or single
//!   addresses; a request from any other address is answered 403
//!   `forbidden`. A network with bits set after its prefix (`10.0.0.1/8`)
//!   is refused as a likely typo.
//!
//! A value out of its bounds answers 400 `invalid_request` naming the field
//! and the bound. Listings and `GET /{id}` show a key's limits in the same
//! shape (`null` when it has none; `credits.remaining` as the store last
//! read it).
//!
//! # Whose keys
//!
//! A workspace key manages its workspace's keys; an organization key every
//! organization and workspace key of its organization; a personal token its
//! user's personal tokens. Any other key answers 404, exactly like a key
//! that does not exist.
//!
//! # The issuer's bounds
//!
//! - A new key holds only scopes its issuer holds (without `scopes`, it
//!   gets the issuer's); a scope beyond them is refused with 403
//!   `insufficient_scope`. A rotation whose key holds a scope the caller
//!   lacks is refused the same way.
//! - A key never outlives its issuer. Without `expires_in_seconds`, a key
//!   issued by a key that expires gets the issuer's expiry; an
//!   `expires_in_seconds` reaching past it is refused with 403 `forbidden`
//!   (a silent cut would hand out a shorter key than asked for). A rotated
//!   key's successor is cut short to the caller's expiry.
//! - A key issued through a personal access token is a personal token of
//!   the same user: it acts through the user's memberships, so it stops
//!   working in an organization the moment the user leaves it.
//! - A key's limits are never looser than its issuer's. A field left out
//!   (or `null`) gives the new key the issuer's own `rate_limits`,
//!   `credits` (a copy of what it has left, and its refill) or
//!   `allowed_ips`; a field given must stay within them, or the request is
//!   refused with 403 `forbidden`, saying which bound:
//!   - **rate limits**: for each of the issuer's limits, the new key needs
//!     one with the same window, counted alike (`per`), and a limit no
//!     higher (it may add others, up to 4 in all); so a limit `per`
//!     organization on an organization's first key binds every key made
//!     from it;
//!   - **credits**: at most the issuer's `remaining`, as the layer read them
//!     for this request; a refill only if the issuer has one, with an
//!     `amount` no higher and an `interval_seconds` no shorter;
//!   - **allowed addresses**: each network inside one of the issuer's (an
//!     IPv4-mapped IPv6 network counts as the IPv4 one).
//!
//!   A rotation by a key with limits is refused the same way when the
//!   rotated key's limits (which its successor keeps) are looser than the
//!   caller's. The bounds hold each key on its own: limits counted `per`
//!   key and credits are not shared with the key that issued them, so a
//!   key with `keys.write` can mint several keys each as limited as
//!   itself. Limits counted `per` workspace or organization are shared:
//!   use them for a cap that minting more keys must not multiply.
//!
//! Every error, a malformed body included, answers `{"error", "message"}`.
//! Each operation is reported to the [`AuditSink`] (default
//! [`TracingAudit`]), with the calling key as the actor.

// Handlers answer `Result<Response, Response>`, the axum idiom; the
// response is built once per request, off any hot path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::axum::Router;
use ::axum::body::{Body, to_bytes};
use ::axum::extract::{Path, RawQuery, Request, State};
use ::axum::http::{StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{get, post};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::audit::{Actor, AuditAction, AuditEvent, AuditSink, TracingAudit};
use crate::client_addr::IpAllowlist;
use crate::error::AuthError;
use crate::ids::{KeyId, KeyKind, Label};
use crate::limit::{
    CountedPer, Credits, InvalidLimit, InvalidLimits, MAX_RATE_LIMITS, RateLimit, RateLimits,
    Refill, UnknownCountedPer, UsageLimits,
};
use crate::metadata::KeyMetadata;
use crate::principal::Principal;
use crate::record::{KeyRecord, Owner};
use crate::scope::Scopes;
use crate::store::{
    CreditSpend, IssuedKey, KeyLifecycle, KeyListing, KeySummary, LifecycleError, NewKey,
    PageCursor, PageRequest, Rotation,
};

/// The most bytes a request body may hold.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The longest lifetime a key may be given: ten years.
const MAX_LIFETIME_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// The longest grace period of a rotation: thirty days.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
/// The longest key name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// The key API: an axum router over any [`KeyLifecycle`] store, to nest
/// under a path of the application's choosing behind the same
/// [`KeyAuthLayer`](crate::KeyAuthLayer). See the [module](self) for its
/// routes and rules.
#[derive(Clone)]
pub struct KeyApi {
    store: Arc<dyn KeyLifecycle>,
    read_scope: Arc<str>,
    write_scope: Arc<str>,
    audit: Arc<dyn AuditSink>,
}

impl KeyApi {
    /// The API over `store`, guarded by the scopes `keys.read` and
    /// `keys.write`, auditing through [`TracingAudit`].
    ///
    /// Give it the same store (or a clone sharing it) as the layer's, so
    /// that a revocation through the API reaches the layer's cache at once.
    pub fn new(store: impl KeyLifecycle) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// The API over a store already shared as a trait object.
    pub fn from_shared(store: Arc<dyn KeyLifecycle>) -> Self {
        Self {
            store,
            read_scope: Arc::from("keys.read"),
            write_scope: Arc::from("keys.write"),
            audit: Arc::new(TracingAudit),
        }
    }

    /// The scope the reading routes require (default `keys.read`).
    pub fn read_scope(mut self, scope: &str) -> Self {
        self.read_scope = Arc::from(scope);
        self
    }

    /// The scope the writing routes require (default `keys.write`).
    pub fn write_scope(mut self, scope: &str) -> Self {
        self.write_scope = Arc::from(scope);
        self
    }

    /// Where the audit events of issues, rotations and revocations go.
    ///
    /// ```
    /// use tower_keyauth::audit::AuditEvent;
    /// use tower_keyauth::key_api::KeyApi;
    /// use tower_keyauth::MemoryStore;
    /// let api = KeyApi::new(MemoryStore::new())
    ///     .audit(|event: &AuditEvent| println!("{} {}", event.action, event.key_id));
    /// # let _ = api;
    /// ```
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// The routes, to [`nest`](Router::nest) under a path such as
    /// `/v1/keys`. Unknown methods on its routes answer 405 in the JSON
    /// error shape.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/", get(list_keys).post(issue_key))
            .route("/{id}", get(show_key).delete(revoke_key))
            .route("/{id}/rotate", post(rotate_key))
            .method_not_allowed_fallback(|| async {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "This route does not take that method.",
                )
            })
            .with_state(self)
    }

    fn record(&self, principal: &Principal, action: AuditAction, key: &KeyRecord) {
        let mut actor = Actor::key(principal.key_id().clone());
        actor.user = principal.user().cloned();
        self.audit.record(
            &AuditEvent::new(action, key.id.clone(), key.owner.clone())
                .by(actor)
                .at(SystemTime::now()),
        );
    }

    /// The caller's key of this id, or 404 for a missing key and for
    /// another tenant's alike.
    async fn visible_key(&self, principal: &Principal, id: String) -> Result<KeyRecord, Response> {
        let id = KeyId::from(id);
        match self.store.find_key(&id).await {
            Ok(Some(record)) if listing_of(principal).includes(&record.owner) => Ok(record),
            Ok(_) => Err(not_found()),
            Err(failure) => Err(store_failed(failure.into())),
        }
    }
}

impl std::fmt::Debug for KeyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyApi")
            .field("read_scope", &self.read_scope)
            .field("write_scope", &self.write_scope)
            .finish_non_exhaustive()
    }
}

/// Whose keys the caller manages (see the [module](self)).
fn listing_of(principal: &Principal) -> KeyListing {
    match (principal.kind(), principal.user(), principal.workspace()) {
        (KeyKind::Personal, Some(user), _) => KeyListing::owner(Owner::User(user.clone())),
        (_, _, Some(workspace)) => {
            KeyListing::owner(Owner::workspace(principal.org().clone(), workspace.clone()))
        }
        _ => KeyListing::org(principal.org().clone()),
    }
}

/// The owner of a key the caller issues: its workspace, its organization,
/// or, for a personal token, its user.
fn owner_for(principal: &Principal) -> Owner {
    match listing_of(principal) {
        KeyListing::Owner(owner) => owner,
        KeyListing::Org(org) => Owner::Organization(org),
    }
}

async fn list_keys(
    State(api): State<KeyApi>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    require(&principal, &api.read_scope)?;
    let page = page_request(query.as_deref().unwrap_or(""))?;
    let page = api
        .store
        .list_page(&listing_of(&principal), &page)
        .await
        .map_err(store_failed)?;
    Ok(Json(json!({
        "keys": page.keys,
        "next_cursor": page.next.map(|cursor| cursor.to_string()),
    }))
    .into_response())
}

/// `limit` (1 to 100, default 20) and `cursor` from the query; other
/// parameters are ignored.
fn page_request(query: &str) -> Result<PageRequest, Response> {
    let mut page = PageRequest::default();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| invalid("The query is not valid UTF-8."))?;
        match name {
            "limit" => {
                page.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|limit| (1..=PageRequest::MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        invalid(format!(
                            "`limit` must be a whole number from 1 to {}.",
                            PageRequest::MAX_LIMIT
                        ))
                    })?;
            }
            "cursor" => {
                page.after = Some(value.parse::<PageCursor>().map_err(|_| {
                    invalid("`cursor` must be the `next_cursor` of an earlier page.")
                })?);
            }
            _ => {}
        }
    }
    Ok(page)
}

async fn show_key(
    State(api): State<KeyApi>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    require(&principal, &api.read_scope)?;
    let record = api.visible_key(&principal, id).await?;
    Ok(Json(json!(KeySummary::from(&record))).into_response())
}

async fn issue_key(
    State(api): State<KeyApi>,
    principal: Principal,
    request: Request,
) -> Result<Response, Response> {
    require(&principal, &api.write_scope)?;
    let mut body = json_object(request).await?;
    allow_only(
        &body,
        &[
            "name",
            "scopes",
            "expires_in_seconds",
            "metadata",
            "rate_limits",
            "credits",
            "allowed_ips",
        ],
    )?;
    let name = match body.remove("name") {
        Some(Value::String(name))
            if !name.trim().is_empty() && name.chars().count() <= MAX_NAME_CHARS =>
        {
            name
        }
        _ => {
            return Err(invalid(format!(
                "`name` is required: a string of 1 to {MAX_NAME_CHARS} characters."
            )));
        }
    };
    let scopes = match body.remove("scopes") {
        None | Some(Value::Null) => principal.scopes().clone(),
        Some(Value::Array(names)) => {
            let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
            let names = names.ok_or_else(|| invalid("`scopes` must be a list of scope names."))?;
            Scopes::parse(names)
                .map_err(|invalid_scope| invalid(format!("`scopes`: {invalid_scope}.")))?
        }
        Some(_) => return Err(invalid("`scopes` must be a list of scope names.")),
    };
    // A key can never grant more than its issuer holds.
    holds_all(&principal, &scopes)?;
    let now = SystemTime::now();
    let expires_at = match body.remove("expires_in_seconds") {
        None | Some(Value::Null) => principal.expires_at(),
        Some(seconds) => {
            let seconds = seconds
                .as_u64()
                .filter(|s| (1..=MAX_LIFETIME_SECONDS).contains(s))
                .ok_or_else(|| {
                    invalid("`expires_in_seconds` must be a whole number of seconds from 1 to ten years.")
                })?;
            let at = now + Duration::from_secs(seconds);
            if let Some(issuer_stops) = principal.expires_at().filter(|stops| at > *stops) {
                let left = issuer_stops
                    .duration_since(now)
                    .unwrap_or_default()
                    .as_secs();
                tracing::info!(
                    key_id = %principal.key_id(),
                    outcome = "forbidden",
                    "key API: a key may not outlive the key that issues it"
                );
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "A key cannot outlive the key that issues it: this one stops working in {left} s, so `expires_in_seconds` may be at most {left}."
                    ),
                ));
            }
            Some(at)
        }
    };
    let metadata = match body.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(object)) => Some(
            KeyMetadata::try_from(object)
                .map_err(|reason| invalid(format!("`metadata`: {reason}.")))?,
        ),
        Some(_) => return Err(invalid("`metadata` must be a JSON object.")),
    };
    let asked = AskedLimits::from_body(&mut body)?;
    // Nothing asked is the issuer's; anything asked stays within it, its
    // credits as the store holds them now (the principal's may be a
    // cached read).
    let issuer_limits = current_limits(&api, &principal).await?;
    let limits = asked.or_inherit(issuer_limits.as_ref());
    within_limits_of(&principal, issuer_limits.as_ref(), limits.as_ref())?;
    let mut new_key = NewKey::new(owner_for(&principal))
        .name(Label::from(name.as_str()))
        .scopes(scopes);
    new_key.expires_at = expires_at;
    new_key.metadata = metadata;
    if let Some(limits) = limits {
        new_key = new_key.limits(limits);
    }
    let issued = api.store.issue(new_key).await.map_err(lifecycle_failed)?;
    api.record(&principal, AuditAction::Issued, &issued.record);
    Ok(issued_response(&issued))
}

async fn rotate_key(
    State(api): State<KeyApi>,
    principal: Principal,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, Response> {
    require(&principal, &api.write_scope)?;
    let has_body = request.headers().contains_key(header::CONTENT_TYPE)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0");
    let mut body = if has_body {
        json_object(request).await?
    } else {
        Map::new()
    };
    allow_only(&body, &["grace_seconds"])?;
    let grace = match body.remove("grace_seconds") {
        None | Some(Value::Null) => 0,
        Some(seconds) => seconds
            .as_u64()
            .filter(|s| *s <= MAX_GRACE_SECONDS)
            .ok_or_else(|| {
                invalid("`grace_seconds` must be a whole number of seconds from 0 to thirty days.")
            })?,
    };
    let old = api.visible_key(&principal, id).await?;
    // The successor keeps the old key's scopes and limits: the caller must
    // hold the scopes, and the limits must be within its own.
    holds_all(&principal, &old.scopes)?;
    within_limits(&principal, old.limits.as_deref())?;
    let mut rotation = Rotation::with_grace(Duration::from_secs(grace));
    rotation.expires_by = principal.expires_at();
    let issued = api
        .store
        .rotate_with(&old.id, rotation)
        .await
        .map_err(lifecycle_failed)?;
    api.record(
        &principal,
        AuditAction::Rotated {
            successor: issued.record.id.clone(),
        },
        &old,
    );
    api.record(&principal, AuditAction::Issued, &issued.record);
    Ok(issued_response(&issued))
}

async fn revoke_key(
    State(api): State<KeyApi>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    require(&principal, &api.write_scope)?;
    let record = api.visible_key(&principal, id).await?;
    // Revoking is idempotent; the trail records the first time only.
    if record.is_revoked() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    api.store
        .revoke(&record.id)
        .await
        .map_err(lifecycle_failed)?;
    api.record(&principal, AuditAction::Revoked, &record);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `insufficient_scope` unless the caller holds `scope`, logged like the
/// layer's own refusals.
fn require(principal: &Principal, scope: &str) -> Result<(), Response> {
    principal.require_scope(scope).map_err(|refusal| {
        tracing::info!(
            key_id = %principal.key_id(),
            outcome = "insufficient_scope",
            scope,
            "key API: credential lacks a required scope"
        );
        refusal.into_response()
    })
}

/// `insufficient_scope`, naming the first of `scopes` the caller lacks.
fn holds_all(principal: &Principal, scopes: &Scopes) -> Result<(), Response> {
    match scopes
        .iter()
        .find(|scope| !principal.has_scope(scope.as_str()))
    {
        Some(extra) => {
            tracing::info!(
                key_id = %principal.key_id(),
                outcome = "insufficient_scope",
                scope = %extra.as_str(),
                "key API: the caller cannot grant a scope it lacks"
            );
            Err(AuthError::insufficient_scope(extra.as_str()).into_response())
        }
        None => Ok(()),
    }
}

/// The limits a body of `POST /` asks for, each `None` when left out (or
/// `null`): then the new key gets the issuer's.
#[derive(Debug, Default)]
struct AskedLimits {
    rate_limits: Option<RateLimits>,
    credits: Option<Credits>,
    allowed_ips: Option<IpAllowlist>,
}

impl AskedLimits {
    /// `rate_limits`, `credits` and `allowed_ips`, checked by the limit
    /// types themselves; 400 naming the field and its bound otherwise.
    fn from_body(body: &mut Map<String, Value>) -> Result<Self, Response> {
        let mut asked = Self::default();
        if let Some(value) = body.remove("rate_limits").filter(|v| !v.is_null()) {
            asked.rate_limits = Some(rate_limits_from(value)?);
        }
        if let Some(value) = body.remove("credits").filter(|v| !v.is_null()) {
            asked.credits = Some(credits_from(value)?);
        }
        if let Some(value) = body.remove("allowed_ips").filter(|v| !v.is_null()) {
            asked.allowed_ips = Some(allowed_ips_from(value)?);
        }
        Ok(asked)
    }

    /// The new key's limits: what was asked, and the issuer's for what was
    /// not. `None` for no limits at all.
    fn or_inherit(self, issuer: Option<&UsageLimits>) -> Option<UsageLimits> {
        let rate_limits = self.rate_limits.unwrap_or_else(|| {
            issuer.map_or_else(RateLimits::new, |limits| limits.rate_limit_set().clone())
        });
        let credits = self
            .credits
            .or_else(|| issuer.and_then(|limits| limits.credits().copied()));
        let allowed_ips = self
            .allowed_ips
            .or_else(|| issuer.and_then(|limits| limits.allowed_ips().cloned()));
        let mut limits = UsageLimits::new().with_rate_limits(rate_limits);
        if let Some(credits) = credits {
            limits = limits.with_credits(credits);
        }
        if let Some(allowed_ips) = allowed_ips {
            limits = limits.with_allowed_ips(allowed_ips);
        }
        (!limits.is_empty()).then_some(limits)
    }
}

const RATE_LIMITS_SHAPE: &str =
    r#"`rate_limits` must be a list of objects such as {"limit": 100, "window_seconds": 60}."#;

/// `[{"limit", "window_seconds", "name"?, "per"?}]`, at most [`MAX_RATE_LIMITS`].
fn rate_limits_from(value: Value) -> Result<RateLimits, Response> {
    let Value::Array(items) = value else {
        return Err(invalid(RATE_LIMITS_SHAPE));
    };
    if items.len() > MAX_RATE_LIMITS {
        return Err(invalid(format!(
            "`rate_limits`: {}, not {}.",
            InvalidLimits::TooManyRateLimits,
            items.len()
        )));
    }
    let mut rate_limits = RateLimits::new();
    for (i, item) in items.into_iter().enumerate() {
        let place = format!("rate_limits[{i}]");
        let Value::Object(item) = item else {
            return Err(invalid(RATE_LIMITS_SHAPE));
        };
        allow_only_in(&item, &["limit", "window_seconds", "name", "per"], &place)?;
        let limit = whole_number(&item, "limit")
            .and_then(|limit| u32::try_from(limit).ok())
            .ok_or_else(|| invalid(format!("`{place}.limit`: {}.", InvalidLimit::Limit)))?;
        let window = whole_number(&item, "window_seconds").ok_or_else(|| {
            invalid(format!(
                "`{place}.window_seconds`: {}.",
                InvalidLimit::Window
            ))
        })?;
        let rate_limit = RateLimit::per(limit, Duration::from_secs(window)).map_err(|reason| {
            let field = match reason {
                InvalidLimit::Window => "window_seconds",
                _ => "limit",
            };
            invalid(format!("`{place}.{field}`: {reason}."))
        })?;
        let rate_limit = match item.get("name") {
            None | Some(Value::Null) => rate_limit,
            Some(Value::String(name)) => rate_limit
                .named(name)
                .map_err(|reason| invalid(format!("`{place}.name`: {reason}.")))?,
            Some(_) => {
                return Err(invalid(format!("`{place}.name`: {}.", InvalidLimit::Name)));
            }
        };
        let rate_limit = match item.get("per") {
            None | Some(Value::Null) => rate_limit,
            Some(per) => {
                let per: CountedPer = per
                    .as_str()
                    .and_then(|word| word.parse().ok())
                    .ok_or_else(|| invalid(format!("`{place}.per`: {}.", UnknownCountedPer)))?;
                rate_limit.counted_per(per)
            }
        };
        rate_limits = rate_limits
            .rate_limit(rate_limit)
            .map_err(|reason| invalid(format!("`rate_limits`: {reason}.")))?;
    }
    Ok(rate_limits)
}

/// `{"remaining", "refill"?: {"amount", "interval_seconds"}}`.
fn credits_from(value: Value) -> Result<Credits, Response> {
    let Value::Object(object) = value else {
        return Err(invalid(
            r#"`credits` must be an object such as {"remaining": 1000, "refill": {"amount": 1000, "interval_seconds": 86400}}."#,
        ));
    };
    allow_only_in(&object, &["remaining", "refill"], "credits")?;
    let credits = whole_number(&object, "remaining")
        .ok_or(InvalidLimits::Credits)
        .and_then(Credits::new)
        .map_err(|reason| invalid(format!("`credits.remaining`: {reason}.")))?;
    match object.get("refill") {
        None | Some(Value::Null) => Ok(credits),
        Some(Value::Object(refill)) => {
            allow_only_in(refill, &["amount", "interval_seconds"], "credits.refill")?;
            let amount = whole_number(refill, "amount").ok_or_else(|| {
                invalid(format!(
                    "`credits.refill.amount`: {}.",
                    InvalidLimits::Credits
                ))
            })?;
            let interval = whole_number(refill, "interval_seconds").ok_or_else(|| {
                invalid(format!(
                    "`credits.refill.interval_seconds`: {}.",
                    InvalidLimits::RefillInterval
                ))
            })?;
            let refill =
                Refill::every(amount, Duration::from_secs(interval)).map_err(|reason| {
                    let field = match reason {
                        InvalidLimits::RefillInterval => "interval_seconds",
                        _ => "amount",
                    };
                    invalid(format!("`credits.refill.{field}`: {reason}."))
                })?;
            Ok(credits.refill(refill))
        }
        Some(_) => Err(invalid(
            r#"`credits.refill` must be an object such as {"amount": 1000, "interval_seconds": 86400}."#,
        )),
    }
}

/// `["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]`: at least one entry.
fn allowed_ips_from(value: Value) -> Result<IpAllowlist, Response> {
    const SHAPE: &str = r#"`allowed_ips` must be a list of networks and addresses such as ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]."#;
    let Value::Array(items) = value else {
        return Err(invalid(SHAPE));
    };
    if items.is_empty() {
        return Err(invalid(
            "`allowed_ips` must hold at least one network: an empty list would allow no address (leave the field out instead).",
        ));
    }
    let entries: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
    let entries = entries.ok_or_else(|| invalid(SHAPE))?;
    IpAllowlist::parse(entries).map_err(|reason| invalid(format!("`allowed_ips`: {reason}.")))
}

/// The field as a whole number that is not negative, if it is one.
fn whole_number(object: &Map<String, Value>, field: &str) -> Option<u64> {
    object.get(field).and_then(Value::as_u64)
}

/// The caller's limits, with its credits as the store holds them now
/// (spending none, a due refill applied): a principal's may have been read
/// from a cache, and a key must not be issued more credits than its issuer
/// has left.
async fn current_limits(
    api: &KeyApi,
    principal: &Principal,
) -> Result<Option<UsageLimits>, Response> {
    let Some(limits) = principal.limits() else {
        return Ok(None);
    };
    let Some(credits) = limits.credits() else {
        return Ok(Some(limits.clone()));
    };
    let remaining = match api.store.spend_credits(principal.key_id(), 0).await {
        Ok(CreditSpend::Spent { remaining }) => remaining,
        Ok(CreditSpend::Exhausted { .. }) => 0,
        Ok(CreditSpend::Unlimited | CreditSpend::NotFound) => credits.remaining(),
        Err(failure) => {
            tracing::error!(key_id = %principal.key_id(), error = %failure, "key API: reading the caller's credits failed");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The key store is unavailable. Try again later.",
            ));
        }
    };
    Ok(Some(
        limits
            .clone()
            .with_credits(credits.with_remaining(remaining)),
    ))
}

/// 403 `forbidden` unless `limits` (of a key the caller issues, or of a
/// key whose successor it mints) are within the caller's own, logged like
/// the other refusals.
fn within_limits(principal: &Principal, limits: Option<&UsageLimits>) -> Result<(), Response> {
    within_limits_of(principal, principal.limits(), limits)
}

/// [`within_limits`], against `issuer` (the caller's limits as read now).
fn within_limits_of(
    principal: &Principal,
    issuer: Option<&UsageLimits>,
    limits: Option<&UsageLimits>,
) -> Result<(), Response> {
    match looser_than_issuer(issuer, limits) {
        None => Ok(()),
        Some(message) => {
            tracing::info!(
                key_id = %principal.key_id(),
                outcome = "forbidden",
                "key API: a key may not have looser limits than the key that issues it"
            );
            Err(error(StatusCode::FORBIDDEN, "forbidden", message))
        }
    }
}

/// Why `key`'s limits are looser than its issuer's, if they are (see the
/// [module](self#the-issuers-bounds) for the rules).
fn looser_than_issuer(issuer: Option<&UsageLimits>, key: Option<&UsageLimits>) -> Option<String> {
    let issuer = issuer?;
    let key_rate_limits = key.map_or(&[][..], UsageLimits::rate_limits);
    for held in issuer.rate_limits() {
        let window = held.window().as_secs();
        let matched = key_rate_limits.iter().any(|limit| {
            limit.window() == held.window()
                && limit.counted_for() == held.counted_for()
                && limit.limit() <= held.limit()
        });
        if !matched {
            let per = held.counted_for();
            return Some(format!(
                "A key cannot have looser rate limits than the key that issues it: this one allows {} requests per {window} s per {per}, so `rate_limits` needs a limit with `window_seconds` {window}, `per` \"{per}\" and a `limit` of at most {}.",
                held.limit(),
                held.limit()
            ));
        }
    }
    if let Some(held) = issuer.credits() {
        let Some(credits) = key.and_then(UsageLimits::credits) else {
            return Some(format!(
                "A key with credits cannot issue a key without credits: this one has {} left, so `credits.remaining` may be at most {}.",
                held.remaining(),
                held.remaining()
            ));
        };
        if credits.remaining() > held.remaining() {
            return Some(format!(
                "A key cannot have more credits than the key that issues it: this one has {} left, so `credits.remaining` may be at most {}.",
                held.remaining(),
                held.remaining()
            ));
        }
        match (held.refill_policy(), credits.refill_policy()) {
            (_, None) => {}
            (None, Some(_)) => {
                return Some(
                    "A key whose credits are not refilled cannot issue a key with a refill: leave `credits.refill` out.".to_owned(),
                );
            }
            (Some(held), Some(refill)) => {
                if refill.amount() > held.amount() || refill.interval() < held.interval() {
                    return Some(format!(
                        "A key's refill cannot be more generous than its issuer's: this one gets {} credits every {} s, so `credits.refill` may give at most {} every {} s or longer.",
                        held.amount(),
                        held.interval().as_secs(),
                        held.amount(),
                        held.interval().as_secs()
                    ));
                }
            }
        }
    }
    if let Some(held) = issuer.allowed_ips() {
        let Some(allowed) = key.and_then(UsageLimits::allowed_ips) else {
            return Some(format!(
                "A key cannot be used from more addresses than the key that issues it: this one is restricted to {held}, so `allowed_ips` must stay within those networks."
            ));
        };
        let held_networks: Vec<IpNet> = held.networks().filter_map(|net| network(&net)).collect();
        for entry in allowed.networks() {
            let inside = network(&entry).is_some_and(|net| {
                held_networks
                    .iter()
                    .any(|held| held.contains(&net) || held.contains(&mapped(net)))
            });
            if !inside {
                return Some(format!(
                    "A key cannot be used from more addresses than the key that issues it: {entry} in `allowed_ips` is outside this one's networks ({held})."
                ));
            }
        }
    }
    None
}

/// An IPv4 network as the IPv4-mapped IPv6 one (an IPv6 network stays):
/// an issuer's `::/0` holds every IPv4 address too.
fn mapped(net: IpNet) -> IpNet {
    match net {
        IpNet::V4(v4) => {
            IpNet::new(v4.addr().to_ipv6_mapped().into(), v4.prefix_len() + 96).unwrap_or(net)
        }
        IpNet::V6(_) => net,
    }
}

/// An allowlist's network, an IPv4-mapped IPv6 network as the IPv4 one it
/// maps (the allowlist matches addresses that way too).
fn network(text: &str) -> Option<IpNet> {
    let net: IpNet = text.parse().ok()?;
    Some(match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(v4.into(), v6.prefix_len() - 96).ok()?,
            None => net,
        },
        _ => net,
    })
}

fn issued_response(issued: &IssuedKey) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({
            "token": issued.token.expose_secret(),
            "key": KeySummary::from(&issued.record),
        })),
    )
        .into_response()
}

/// A JSON response (axum's `Json` would need its `json` feature).
struct Json(Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

/// The body as a JSON object: 415 without a JSON content type, 413 beyond
/// 16 KiB, 400 for anything but one object.
async fn json_object(request: Request) -> Result<Map<String, Value>, Response> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.len() > 5
                    && mime[..mime.len() - 5].contains('/')
                    && mime.to_ascii_lowercase().ends_with("+json"))
        });
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send a JSON body with `content-type: application/json`.",
        ));
    }
    let body: Body = request.into_body();
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The body may hold at most {MAX_BODY_BYTES} bytes."),
        )
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid("The body must be a JSON object.")),
        Err(reason) => Err(invalid(format!("The body is not valid JSON: {reason}."))),
    }
}

/// Refuses a body with fields other than `allowed`, naming the first.
fn allow_only(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), Response> {
    allow_only_in(body, allowed, "")
}

/// Refuses an object with fields other than `allowed`, naming the first,
/// as a field of `within` (`credits`, `rate_limits[0]`) unless that is
/// empty.
fn allow_only_in(
    body: &Map<String, Value>,
    allowed: &[&str],
    within: &str,
) -> Result<(), Response> {
    match body.keys().find(|field| !allowed.contains(&field.as_str())) {
        None => Ok(()),
        Some(field) => {
            let shown: String = field.chars().take(64).collect();
            let shown = if within.is_empty() {
                shown
            } else {
                format!("{within}.{shown}")
            };
            Err(invalid(format!(
                "Unknown field `{shown}`; expected one of {}.",
                allowed
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// A JSON error in the crate's shape.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "No such key.")
}

fn lifecycle_failed(failure: LifecycleError) -> Response {
    match failure {
        LifecycleError::NotFound(_) => not_found(),
        LifecycleError::LimitReached { limit, .. } => error(
            StatusCode::CONFLICT,
            "limit_reached",
            format!("This owner already holds {limit} keys, the most allowed."),
        ),
        LifecycleError::Revoked(_) => error(
            StatusCode::CONFLICT,
            "revoked",
            "The key is revoked, so it cannot be rotated.",
        ),
        LifecycleError::Expired(_) => error(
            StatusCode::CONFLICT,
            "expired",
            "The key has expired, so it cannot be rotated.",
        ),
        LifecycleError::AlreadyRotated(_) => error(
            StatusCode::CONFLICT,
            "already_rotated",
            "The key was rotated already and is in its grace period: rotate its successor instead.",
        ),
        LifecycleError::InvalidScopes(reason) => invalid(format!("`scopes`: {reason}.")),
        failure => store_failed(failure),
    }
}

fn store_failed(failure: LifecycleError) -> Response {
    tracing::error!(error = %failure, "key store failed in the key API");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The key store is unavailable. Try again later.",
    )
}

#[cfg(feature = "utoipa")]
impl KeyApi {
    /// The API's paths and schemas as an OpenAPI 3.1 document (feature
    /// `utoipa`), mounted at `mount` (such as `/v1/keys`), with the security
    /// schemes of `extract` and each operation's scope. Merge it into the
    /// application's own document.
    ///
    /// ```
    /// use tower_keyauth::key_api::KeyApi;
    /// use tower_keyauth::{Extract, MemoryStore};
    /// let openapi = KeyApi::new(MemoryStore::new()).openapi("/v1/keys", &Extract::bearer());
    /// let json = serde_json::to_value(&openapi).unwrap();
    /// assert!(json["paths"]["/v1/keys/{id}/rotate"]["post"].is_object());
    /// assert_eq!(json["paths"]["/v1/keys"]["get"]["security"][0]["bearer"][0], "keys.read");
    /// ```
    pub fn openapi(
        &self,
        mount: &str,
        extract: &crate::extract::Extract,
    ) -> utoipa::openapi::OpenApi {
        use crate::limit::{MAX_CREDITS, MAX_LIMIT, MAX_WINDOW};

        let mount = mount.trim_end_matches('/');
        let error = json!({ "$ref": "#/components/schemas/KeyApiError" });
        let error_response = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": error } } });
        let issued = json!({
            "description": "The key: `token` is shown this once.",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/IssuedKey" } } }
        });
        let id_parameter = json!({
            "name": "id", "in": "path", "required": true,
            "description": "The key's public id.", "schema": { "type": "string" }
        });
        let common_errors = |operation: &mut Value| {
            let responses = operation["responses"].as_object_mut().expect("responses");
            responses.insert("401".into(), error_response("No valid key."));
            responses.insert(
                "403".into(),
                error_response(
                    "The key lacks the scope, is used from an address outside its `allowed_ips` (`forbidden`), or the bound was passed.",
                ),
            );
            // The layer's answers to a key with limits.
            let mut spent = error_response(
                "The key's rate limit (`rate_limited`) or credits (`quota_exhausted`) are spent; nothing was charged.",
            );
            spent["headers"] = json!({
                "Retry-After": { "description": "Seconds until a request may pass.", "schema": { "type": "integer", "minimum": 0 } },
                "RateLimit-Policy": { "description": "The key's tightest rate limit (IETF httpapi draft).", "schema": { "type": "string" } },
                "RateLimit": { "description": "What is left of it, and when it resets.", "schema": { "type": "string" } }
            });
            responses.insert("429".into(), spent);
            responses.insert(
                "503".into(),
                error_response("The key store is unavailable."),
            );
        };
        let mut list = json!({
            "summary": "List the caller's keys, newest first",
            "operationId": "listKeys",
            "parameters": [
                { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": PageRequest::MAX_LIMIT, "default": 20 } },
                { "name": "cursor", "in": "query", "required": false, "description": "The `next_cursor` of the page before.", "schema": { "type": "string" } }
            ],
            "responses": {
                "200": { "description": "One page of keys.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/KeyPage" } } } },
                "400": error_response("A bad `limit` or `cursor`.")
            }
        });
        let mut issue = json!({
            "summary": "Issue a key",
            "operationId": "issueKey",
            "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewKey" } } } },
            "responses": {
                "201": issued,
                "400": error_response("A bad body."),
                "409": error_response("The owner holds as many keys as allowed."),
                "413": error_response("The body is too large."),
                "415": error_response("The body is not JSON.")
            }
        });
        let mut show = json!({
            "summary": "Show one key, masked",
            "operationId": "showKey",
            "parameters": [id_parameter],
            "responses": {
                "200": { "description": "The key.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/KeySummary" } } } },
                "404": error_response("No such key (or another tenant's).")
            }
        });
        let mut revoke = json!({
            "summary": "Revoke a key",
            "operationId": "revokeKey",
            "parameters": [id_parameter],
            "responses": {
                "204": { "description": "Revoked: its next request is refused." },
                "404": error_response("No such key (or another tenant's).")
            }
        });
        let mut rotate = json!({
            "summary": "Rotate a key",
            "operationId": "rotateKey",
            "parameters": [id_parameter],
            "requestBody": { "required": false, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Rotation" } } } },
            "responses": {
                "201": issued,
                "400": error_response("A bad body."),
                "404": error_response("No such key (or another tenant's)."),
                "409": error_response("The key is revoked, expired, or rotated already."),
                "413": error_response("The body is too large."),
                "415": error_response("The body is not JSON.")
            }
        });
        for operation in [&mut list, &mut issue, &mut show, &mut revoke, &mut rotate] {
            common_errors(operation);
        }
        let summary = json!({
            "type": "object",
            "required": ["id", "masked", "name", "kind", "scopes", "created_at"],
            "properties": {
                "id": { "type": "string" },
                "masked": { "type": "string", "example": "ak_Xb3kP9qLm2Ts.****" },
                "name": { "type": "string" },
                "kind": { "type": "string", "enum": ["organization", "workspace", "personal"] },
                "org": { "type": ["string", "null"] },
                "workspace": { "type": ["string", "null"] },
                "user": { "type": ["string", "null"] },
                "scopes": { "type": "array", "items": { "type": "string" } },
                "created_at": { "type": "integer", "description": "Seconds since the Unix epoch." },
                "expires_at": { "type": ["integer", "null"] },
                "grace_ends_at": { "type": ["integer", "null"] },
                "revoked_at": { "type": ["integer", "null"] },
                "last_used_at": { "type": ["integer", "null"] },
                "metadata": { "type": ["object", "null"] },
                "rate_limits": { "type": ["array", "null"], "items": { "$ref": "#/components/schemas/RateLimit" } },
                "credits": { "oneOf": [{ "$ref": "#/components/schemas/Credits" }, { "type": "null" }], "description": "`remaining` as the store last read it." },
                "allowed_ips": { "type": ["array", "null"], "items": { "type": "string" } }
            }
        });
        let document = json!({
            "openapi": "3.1.0",
            "info": { "title": "Keys", "version": "1" },
            "paths": {
                mount: { "get": list, "post": issue },
                format!("{mount}/{{id}}"): { "get": show, "delete": revoke },
                format!("{mount}/{{id}}/rotate"): { "post": rotate }
            },
            "components": { "schemas": {
                "KeyApiError": {
                    "type": "object", "required": ["error", "message"],
                    "properties": { "error": { "type": "string" }, "message": { "type": "string" } }
                },
                "KeySummary": summary,
                "KeyPage": {
                    "type": "object", "required": ["keys", "next_cursor"],
                    "properties": {
                        "keys": { "type": "array", "items": { "$ref": "#/components/schemas/KeySummary" } },
                        "next_cursor": { "type": ["string", "null"] }
                    }
                },
                "IssuedKey": {
                    "type": "object", "required": ["token", "key"],
                    "properties": {
                        "token": { "type": "string", "description": "The whole key, shown only this once." },
                        "key": { "$ref": "#/components/schemas/KeySummary" }
                    }
                },
                "NewKey": {
                    "type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS },
                        "scopes": { "type": "array", "items": { "type": "string" }, "description": "At most the caller's; default the caller's." },
                        "expires_in_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_LIFETIME_SECONDS, "description": "Default: the caller's expiry, if it has one; never past it." },
                        "metadata": { "type": "object", "description": "At most 4 KiB of JSON." },
                        "rate_limits": {
                            "type": "array", "maxItems": MAX_RATE_LIMITS, "items": { "$ref": "#/components/schemas/RateLimit" },
                            "description": "Distinct windows and names. Default: the caller's; for each of the caller's limits, one with the same window and a limit no higher."
                        },
                        "credits": {
                            "$ref": "#/components/schemas/Credits",
                            "description": "Default: the caller's (what it has left, and its refill); never more than the caller has left, a refill only within the caller's."
                        },
                        "allowed_ips": {
                            "type": "array", "minItems": 1, "maxItems": IpAllowlist::MAX_NETWORKS,
                            "items": { "type": "string", "maxLength": IpAllowlist::MAX_ENTRY_BYTES, "examples": ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"] },
                            "description": "IPv4 and IPv6 networks or addresses. Default: the caller's; each within one of the caller's networks."
                        }
                    }
                },
                "RateLimit": {
                    "type": "object", "required": ["limit", "window_seconds"], "additionalProperties": false,
                    "properties": {
                        "limit": { "type": "integer", "minimum": 1, "maximum": MAX_LIMIT },
                        "window_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_WINDOW.as_secs() },
                        "name": { "type": "string", "pattern": "^[A-Za-z][A-Za-z0-9._-]{0,63}$" },
                        "per": { "type": "string", "enum": ["key", "workspace", "organization"], "default": "key", "description": "Whose requests the limit counts: this key's, or every key's of its workspace or organization with a limit of the same window, in one count that each key holds to its own limit." }
                    }
                },
                "Credits": {
                    "type": "object", "required": ["remaining"], "additionalProperties": false,
                    "properties": {
                        "remaining": { "type": "integer", "minimum": 0, "maximum": MAX_CREDITS },
                        "refill": {
                            "type": ["object", "null"], "required": ["amount", "interval_seconds"], "additionalProperties": false,
                            "description": "Sets `remaining` back to `amount` every `interval_seconds`.",
                            "properties": {
                                "amount": { "type": "integer", "minimum": 1, "maximum": MAX_CREDITS },
                                "interval_seconds": { "type": "integer", "minimum": 1, "maximum": MAX_WINDOW.as_secs() }
                            }
                        }
                    }
                },
                "Rotation": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "grace_seconds": { "type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS, "default": 0 }
                    }
                }
            }}
        });
        let mut openapi: utoipa::openapi::OpenApi = serde_json::from_value(document)
            .expect("the key API's OpenAPI document is well-formed");
        crate::openapi::add_security_schemes(&mut openapi, extract);
        let (read, write) = (&*self.read_scope, &*self.write_scope);
        for operations in openapi.paths.paths.values_mut() {
            for (operation, scope) in [
                (operations.get.as_mut(), read),
                (operations.post.as_mut(), write),
                (operations.delete.as_mut(), write),
            ] {
                if let Some(operation) = operation {
                    operation.security =
                        Some(crate::openapi::security_requirement(extract, &[scope]));
                }
            }
        }
        openapi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(
        rate_limits: &[(u32, u64)],
        credits: Option<(u64, Option<(u64, u64)>)>,
        allowed_ips: Option<&[&str]>,
    ) -> UsageLimits {
        let mut limits = rate_limits
            .iter()
            .fold(UsageLimits::new(), |limits, &(limit, window)| {
                limits
                    .rate_limit(RateLimit::per(limit, Duration::from_secs(window)).unwrap())
                    .unwrap()
            });
        if let Some((remaining, refill)) = credits {
            let mut credits = Credits::new(remaining).unwrap();
            if let Some((amount, interval)) = refill {
                credits =
                    credits.refill(Refill::every(amount, Duration::from_secs(interval)).unwrap());
            }
            limits = limits.with_credits(credits);
        }
        if let Some(networks) = allowed_ips {
            limits = limits.with_allowed_ips(IpAllowlist::parse(networks).unwrap());
        }
        limits
    }

    fn within(issuer: &UsageLimits, key: &UsageLimits) -> bool {
        looser_than_issuer(Some(issuer), (!key.is_empty()).then_some(key)).is_none()
    }

    #[test]
    fn an_issuer_without_limits_bounds_nothing() {
        assert_eq!(looser_than_issuer(None, None), None);
        let any = limits(&[(1, 1)], Some((5, None)), Some(&["0.0.0.0/0"]));
        assert_eq!(looser_than_issuer(None, Some(&any)), None);
    }

    #[test]
    fn each_issuer_rate_limit_needs_one_as_strict_in_its_window() {
        let issuer = limits(&[(100, 60), (1000, 3600)], None, None);
        assert!(within(&issuer, &issuer));
        assert!(within(
            &issuer,
            &limits(&[(50, 60), (1000, 3600), (1, 1)], None, None)
        ));
        assert!(!within(&issuer, &limits(&[(100, 60)], None, None)));
        assert!(!within(
            &issuer,
            &limits(&[(101, 60), (1000, 3600)], None, None)
        ));
        assert!(!within(&issuer, &UsageLimits::new()));
    }

    #[test]
    fn credits_stay_within_the_issuers_remaining_and_refill() {
        let issuer = limits(&[], Some((1000, Some((500, 3600)))), None);
        assert!(within(&issuer, &issuer));
        assert!(within(&issuer, &limits(&[], Some((0, None)), None)));
        assert!(within(
            &issuer,
            &limits(&[], Some((1000, Some((500, 7200)))), None)
        ));
        assert!(!within(&issuer, &limits(&[], Some((1001, None)), None)));
        assert!(!within(
            &issuer,
            &limits(&[], Some((10, Some((501, 3600)))), None)
        ));
        assert!(!within(
            &issuer,
            &limits(&[], Some((10, Some((500, 3599)))), None)
        ));
        assert!(!within(&issuer, &UsageLimits::new()));
        let once = limits(&[], Some((1000, None)), None);
        assert!(!within(
            &once,
            &limits(&[], Some((10, Some((1, 86400)))), None)
        ));
    }

    #[test]
    fn allowed_networks_stay_inside_the_issuers() {
        let issuer = limits(&[], None, Some(&["10.0.0.0/8", "2001:db8::/32"]));
        for inside in [
            &["10.0.0.0/8"][..],
            &["10.1.2.3", "2001:db8:1::/48"],
            &["::ffff:10.0.0.0/104"],
        ] {
            assert!(
                within(&issuer, &limits(&[], None, Some(inside))),
                "{inside:?}"
            );
        }
        for outside in [
            &["0.0.0.0/0"][..],
            &["10.0.0.0/7"],
            &["11.0.0.1"],
            &["10.0.0.0/8", "2001:db9::/32"],
            &["::ffff:11.0.0.0/104"],
        ] {
            assert!(
                !within(&issuer, &limits(&[], None, Some(outside))),
                "{outside:?}"
            );
        }
        assert!(!within(&issuer, &UsageLimits::new()));
        // An issuer's mapped network bounds IPv4 networks as well.
        let mapped = limits(&[], None, Some(&["::ffff:192.0.2.0/120"]));
        assert!(within(&mapped, &limits(&[], None, Some(&["192.0.2.7"]))));
        let everywhere = limits(&[], None, Some(&["::/0"]));
        assert!(within(
            &everywhere,
            &limits(&[], None, Some(&["10.0.0.0/8"]))
        ));
        assert!(within(
            &everywhere,
            &limits(&[], None, Some(&["0.0.0.0/0"]))
        ));
    }

    #[test]
    fn nothing_asked_inherits_the_issuers_limits() {
        let issuer = limits(&[(100, 60)], Some((7, None)), Some(&["10.0.0.0/8"]));
        assert_eq!(
            AskedLimits::default().or_inherit(Some(&issuer)),
            Some(issuer.clone())
        );
        assert_eq!(AskedLimits::default().or_inherit(None), None);
        let asked = AskedLimits {
            rate_limits: Some(RateLimits::new()),
            ..AskedLimits::default()
        };
        let inherited = asked.or_inherit(Some(&issuer)).unwrap();
        assert!(inherited.rate_limits().is_empty());
        assert_eq!(inherited.credits(), issuer.credits());
    }
}
