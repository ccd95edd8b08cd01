//! [`KeyAuthLayer`]: the builder of the configuration every service it
//! wraps shares.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, Method, Uri};
use tower_layer::Layer;

use crate::audit::AuditSink;
use crate::client_addr::TrustedProxies;
use crate::clock::{Clock, SharedClock};
use crate::config::Config;
use crate::extract::Extract;
use crate::format::KeyFormat;
use crate::limit::RateLimiter;
use crate::response::Responder;
use crate::service::KeyAuth;
use crate::store::KeyStore;

pub use crate::config::DEFAULT_ORG_HEADER;

/// Authenticates every request with an API key from a [`KeyStore`].
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_keyauth::{Extract, KeyAuthLayer, MemoryStore, Principal};
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} of {}", principal.key_id(), principal.org())
/// }
///
/// let store = MemoryStore::new();
/// let app: Router = Router::new()
///     .route("/v1/whoami", get(whoami))
///     .route("/health/", get(|| async { "ok" }))
///     .layer(
///         KeyAuthLayer::new(store)
///             .extract(Extract::bearer_or_api_key())
///             .public("/health/"),
///     );
/// # let _ = app;
/// ```
///
/// Requests on public paths pass without a credential; one that is sent
/// and valid still yields a [`Principal`](crate::Principal), an invalid one
/// is ignored there. Everything else needs a valid key, and gets the
/// responses of the outcome table otherwise (see
/// [`AuthError`](crate::AuthError)).
#[must_use]
pub struct KeyAuthLayer<S> {
    config: Arc<Config<S>>,
}

impl<S: KeyStore> KeyAuthLayer<S> {
    /// A layer over `store` with the defaults: Bearer tokens only, the
    /// default [`KeyFormat`], no public paths, realm `api`, org header
    /// `x-org-id`, JSON errors.
    pub fn new(store: S) -> Self {
        Self::from_shared_store(Arc::new(store))
    }

    /// A layer over a store already behind an `Arc`.
    ///
    /// The layer hashes presented tokens with the store's
    /// [`peppers`](KeyStore::peppers), read here, once.
    pub fn from_shared_store(store: Arc<S>) -> Self {
        let peppers = store.peppers();
        let mut config = Config::new(store);
        config.peppers = peppers;
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> KeyAuthLayer<S> {
    fn config_mut(&mut self) -> &mut Config<S> {
        Arc::make_mut(&mut self.config)
    }

    /// Where to look for the credential (default: [`Extract::bearer`]).
    pub fn extract(mut self, policy: Extract) -> Self {
        self.config_mut().set_extract(policy);
        self
    }

    /// The key format to recognise; give the store that mints the keys the
    /// same one.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.config_mut().format = format;
        self
    }

    /// Lets requests to `path` through without a credential: an exact path
    /// (`/health/`) or everything below a prefix (`/docs/*`, which matches
    /// `/docs/` and `/docs/…` but not `/docs`). Paths are compared as
    /// received, as axum's router does.
    ///
    /// A valid key sent to a public path still identifies its caller (an
    /// `Option<Principal>` extractor sees it), but is charged nothing: its
    /// rate limits and credits are neither checked nor spent there. Its
    /// address allowlist does apply: a key used from an address it may not
    /// be used from identifies no one. A refused key is ignored on a public
    /// path and does not count against the failed-attempt throttle.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/` or has a `*` other than a final `/*`.
    pub fn public(mut self, path: &str) -> Self {
        self.config_mut().public.add(path);
        self
    }

    /// Lets requests through without a credential when `predicate` says so,
    /// for rules that paths cannot express (CORS preflights, a method).
    pub fn public_when<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&Method, &Uri) -> bool + Send + Sync + 'static,
    {
        self.config_mut().public.add_predicate(Arc::new(predicate));
        self
    }

    /// The realm named in `WWW-Authenticate` challenges (default `api`).
    pub fn realm(mut self, realm: &str) -> Self {
        self.config_mut().set_realm(Arc::from(realm));
        self
    }

    /// The header personal tokens name their organization in (default
    /// `x-org-id`). For org and workspace keys a different organization in
    /// it is refused with 403.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn org_header(mut self, name: &str) -> Self {
        let name = HeaderName::try_from(name)
            .unwrap_or_else(|_| panic!("{name:?} is not a valid header name"));
        self.config_mut().org_header = name;
        self
    }

    /// Shapes refusals (default: [`DefaultResponder`](crate::response::DefaultResponder), JSON for HTTP and
    /// trailers-only for gRPC).
    pub fn responder(mut self, responder: impl Responder) -> Self {
        self.config_mut().set_responder(Arc::new(responder));
        self
    }

    /// Removes the credential headers (`Authorization` and any key header of
    /// the policy) before the inner service sees the request, so it cannot
    /// log or forward them. Query credentials are always removed.
    pub fn hide_credentials(mut self, hide: bool) -> Self {
        self.config_mut().hide_credentials = hide;
        self
    }

    /// Refuses a request with 503 when the store has not answered within
    /// `limit` (by default the layer waits as long as the store does). A
    /// store that panics is refused with 503 either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    /// let layer = KeyAuthLayer::new(MemoryStore::new()).store_timeout(Duration::from_millis(250));
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "tokio")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
    pub fn store_timeout(mut self, limit: std::time::Duration) -> Self {
        self.config_mut().store_timeout = Some(limit);
        self
    }

    /// Where the layer reads the time to decide expiry and a rotation's
    /// grace period, and to note a key's use (default
    /// [`CoarseClock`](crate::clock::CoarseClock): the system clock to
    /// within one kernel tick; give [`SystemClock`](crate::clock::SystemClock)
    /// for the exact one). Revocation never asks it.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.config_mut().clock = SharedClock::new(clock);
        self
    }

    /// Where the layer reports a request refused because its key, whose
    /// secret matched, is revoked ([`AuditAction::RefusedRevoked`]) or
    /// expired ([`AuditAction::RefusedExpired`]): one [`AuditEvent`] per
    /// refused request, with the key's id and owner, no actor and no secret.
    /// Default: [`TracingAudit`](crate::audit::TracingAudit). The sink is
    /// called on the request's task; hand the event off, do not wait on I/O.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower_keyauth::audit::AuditEvent;
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    ///
    /// let refused: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
    /// let layer = KeyAuthLayer::new(MemoryStore::new()).audit({
    ///     let refused = refused.clone();
    ///     move |event: &AuditEvent| refused.lock().unwrap().push(event.clone())
    /// });
    /// # let _ = layer;
    /// ```
    ///
    /// [`AuditAction::RefusedRevoked`]: crate::audit::AuditAction::RefusedRevoked
    /// [`AuditAction::RefusedExpired`]: crate::audit::AuditAction::RefusedExpired
    /// [`AuditEvent`]: crate::audit::AuditEvent
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.config_mut().audit = Arc::new(sink);
        self
    }

    /// Counts the rate limits of keys that have them
    /// ([`KeyRecord::limits`](crate::store::KeyRecord::limits)). Default: a
    /// [`MemoryLimiter`](crate::limit::MemoryLimiter) of this layer's own,
    /// exact for one instance; give every instance the same
    /// `RedisLimiter` (feature `redis`) to share limits between them.
    ///
    /// ```
    /// use tower_keyauth::limit::MemoryLimiter;
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    ///
    /// let layer = KeyAuthLayer::new(MemoryStore::new())
    ///     .rate_limiter(MemoryLimiter::new().capacity(100_000));
    /// # let _ = layer;
    /// ```
    pub fn rate_limiter(mut self, limiter: impl RateLimiter) -> Self {
        self.config_mut().limiter = Arc::new(limiter);
        self
    }

    /// What a request costs: the units charged to its key's rate limits
    /// and spent from its credits, 1 unless `cost` says otherwise (0
    /// charges and spends nothing, and answers no `RateLimit` fields). A
    /// cost above one of the key's limits can never be admitted: it is
    /// refused with `rate_limited` and a `Retry-After` of the whole window.
    ///
    /// ```
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    ///
    /// // Exports cost ten requests' worth.
    /// let layer = KeyAuthLayer::new(MemoryStore::new())
    ///     .request_cost(|request| if request.uri.path().starts_with("/v1/exports") { 10 } else { 1 });
    /// # let _ = layer;
    /// ```
    pub fn request_cost(
        mut self,
        cost: impl Fn(&http::request::Parts) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.config_mut().request_cost = Some(Arc::new(cost));
        self
    }

    /// Lets requests pass, unlimited, when the rate limiter fails (a Redis
    /// that is down) or spending credits fails (the store), instead of
    /// refusing them with 503.
    ///
    /// **Warning**: while the limiter or the store is down, no key is
    /// limited at all. Choose this only where availability matters more
    /// than the limits, and alert on the `rate limiter failed` and
    /// `spending credits failed` log lines. Default: off (fail
    /// closed).
    pub fn limits_fail_open(mut self, fail_open: bool) -> Self {
        self.config_mut().limits_fail_open = fail_open;
        self
    }

    /// The proxies in front of the service, whose forwarding header
    /// (`X-Forwarded-For` by default) names the client for keys with an IP
    /// allowlist. Without them (the default), the client is the
    /// connection's peer (axum's `ConnectInfo`, tonic's remote address, or
    /// a [`PeerAddr`](crate::client_addr::PeerAddr) the application
    /// inserts), and forwarding headers are never read: anyone could send
    /// one.
    ///
    /// ```
    /// use tower_keyauth::client_addr::TrustedProxies;
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    ///
    /// let layer = KeyAuthLayer::new(MemoryStore::new())
    ///     .trusted_proxies(TrustedProxies::parse(["10.0.0.0/8"]).unwrap());
    /// # let _ = layer;
    /// ```
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.config_mut().trusted_proxies = proxies;
        self
    }

    /// Turns on the failed-attempt throttle: after `limit` refused
    /// credentials (401: invalid, revoked or expired keys) from one client
    /// address within `window`, that address is answered 429
    /// `rate_limited` with `Retry-After`, before its credential is parsed
    /// or the store is asked, until the window closes. IPv6 addresses count
    /// by their /64. A `limit` of 0 turns it off (the default).
    ///
    /// The client's address is read as for IP allowlists (see
    /// [`trusted_proxies`](Self::trusted_proxies)); a request whose address
    /// is unknown is not throttled. Counts are kept in this process, for up
    /// to 131 072 addresses and 16 384 networks at once (at most 9.7 MB);
    /// while nobody is blocked the throttle costs a request one atomic load.
    /// Under a flood that fills the table with open windows, newcomers count
    /// by their network (IPv4 /24, IPv6 /48) and, past that, by a shared
    /// overflow bucket: the flood is still blocked, at the price of blocking
    /// the flooding network's neighbours too, for one window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::{KeyAuthLayer, MemoryStore};
    ///
    /// let layer = KeyAuthLayer::new(MemoryStore::new())
    ///     .failed_attempts(60, Duration::from_secs(60));
    /// # let _ = layer;
    /// ```
    pub fn failed_attempts(mut self, limit: u32, window: std::time::Duration) -> Self {
        self.config_mut().throttle = (limit > 0 && !window.is_zero())
            .then(|| Arc::new(crate::throttle::Throttle::new(limit, window)));
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.config.store
    }
}

impl<S> Clone for KeyAuthLayer<S> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<S, Svc> Layer<Svc> for KeyAuthLayer<S> {
    type Service = KeyAuth<Svc, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        KeyAuth::from_config(inner, Arc::clone(&self.config))
    }
}

impl<S> fmt::Debug for KeyAuthLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}
