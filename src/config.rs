//! [`Config`]: what every service of one [`KeyAuthLayer`](crate::KeyAuthLayer)
//! shares, read on each request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;

use crate::audit::{AuditSink, TracingAudit};
use crate::client_addr::TrustedProxies;
use crate::clock::SharedClock;
use crate::extract::Extract;
use crate::format::KeyFormat;
use crate::limit::{MemoryLimiter, RateLimiter};
use crate::pepper::Peppers;
use crate::public::PublicPaths;
use crate::response::{
    Answers, DEFAULT_REALM, DefaultResponder, Refusals, Responder, ResponseContext,
};
use crate::store::rehash::Rehasher;
use crate::throttle::Throttle;

/// The organization header personal tokens name their organization in.
pub const DEFAULT_ORG_HEADER: &str = "x-org-id";

/// What every [`KeyAuth`](crate::KeyAuth) service of one layer shares.
pub(crate) struct Config<S> {
    pub(crate) store: Arc<S>,
    pub(crate) format: KeyFormat,
    pub(crate) extract: Extract,
    pub(crate) public: PublicPaths,
    pub(crate) org_header: HeaderName,
    pub(crate) hide_credentials: bool,
    responder: Arc<dyn Responder>,
    /// Whether `responder` is the default one.
    standard_responder: bool,
    realm: Arc<str>,
    /// The responder and the refusals prepared for this realm and
    /// extraction policy; rebuilt whenever one of them changes.
    pub(crate) context: Arc<ResponseContext>,
    /// What admitted requests carry of `context`.
    pub(crate) answers: Answers,
    pub(crate) store_timeout: Option<Duration>,
    pub(crate) clock: SharedClock,
    /// Where refused uses of revoked or expired keys are reported.
    pub(crate) audit: Arc<dyn AuditSink>,
    /// Counts the rate limits of keys that have them.
    pub(crate) limiter: Arc<dyn RateLimiter>,
    /// The units a request costs, when not 1.
    pub(crate) request_cost: Option<RequestCost>,
    /// Whether a failed limiter lets requests pass (unlimited) instead of
    /// refusing them with 503.
    pub(crate) limits_fail_open: bool,
    /// The proxies whose forwarding headers name the client.
    pub(crate) trusted_proxies: TrustedProxies,
    /// The failed-attempt throttle, when on.
    pub(crate) throttle: Option<Arc<Throttle>>,
    /// What presented tokens are hashed with: the store's.
    pub(crate) peppers: Peppers,
    /// Re-hashes keys of earlier pepper versions after their use.
    pub(crate) rehasher: Rehasher,
}

/// What a request costs, from its parts.
pub(crate) type RequestCost = Arc<dyn Fn(&Parts) -> u32 + Send + Sync>;

impl<S> Clone for Config<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            format: self.format.clone(),
            extract: self.extract.clone(),
            public: self.public.clone(),
            org_header: self.org_header.clone(),
            hide_credentials: self.hide_credentials,
            responder: Arc::clone(&self.responder),
            standard_responder: self.standard_responder,
            realm: Arc::clone(&self.realm),
            context: Arc::clone(&self.context),
            answers: self.answers.clone(),
            store_timeout: self.store_timeout,
            clock: self.clock.clone(),
            audit: Arc::clone(&self.audit),
            limiter: Arc::clone(&self.limiter),
            request_cost: self.request_cost.clone(),
            limits_fail_open: self.limits_fail_open,
            trusted_proxies: self.trusted_proxies.clone(),
            throttle: self.throttle.clone(),
            peppers: self.peppers.clone(),
            rehasher: self.rehasher.clone(),
        }
    }
}

impl<S> Config<S> {
    /// The defaults: Bearer tokens only, the default key format, no public
    /// paths, realm `api`, org header `x-org-id`, JSON errors.
    pub(crate) fn new(store: Arc<S>) -> Self {
        let extract = Extract::default();
        let responder: Arc<dyn Responder> = Arc::new(DefaultResponder);
        let realm: Arc<str> = Arc::from(DEFAULT_REALM);
        let context = Self::context(&responder, &realm, &extract);
        let answers = Answers::of(&realm, true, &context);
        Self {
            store,
            format: KeyFormat::default(),
            extract,
            public: PublicPaths::default(),
            org_header: HeaderName::from_static(DEFAULT_ORG_HEADER),
            hide_credentials: false,
            responder,
            standard_responder: true,
            realm,
            context,
            answers,
            store_timeout: None,
            clock: SharedClock::coarse(),
            audit: Arc::new(TracingAudit),
            limiter: Arc::new(MemoryLimiter::new()),
            request_cost: None,
            limits_fail_open: false,
            trusted_proxies: TrustedProxies::none(),
            throttle: None,
            peppers: Peppers::none(),
            rehasher: Rehasher::default(),
        }
    }

    pub(crate) fn set_extract(&mut self, extract: Extract) {
        self.extract = extract;
        self.refresh_context();
    }

    pub(crate) fn set_realm(&mut self, realm: Arc<str>) {
        self.realm = realm;
        self.refresh_context();
    }

    pub(crate) fn set_responder(&mut self, responder: Arc<dyn Responder>) {
        self.responder = responder;
        self.standard_responder = false;
        self.refresh_context();
    }
    fn context(
        responder: &Arc<dyn Responder>,
        realm: &Arc<str>,
        extract: &Extract,
    ) -> Arc<ResponseContext> {
        let refusals = Refusals::new(Arc::clone(realm), extract.advice());
        Arc::new(ResponseContext::new(Arc::clone(responder), refusals))
    }

    fn refresh_context(&mut self) {
        self.context = Self::context(&self.responder, &self.realm, &self.extract);
        self.answers = Answers::of(&self.realm, self.standard_responder, &self.context);
    }
}

impl<S> fmt::Debug for Config<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAuthLayer")
            .field("store", &std::any::type_name::<S>())
            .field("format", &self.format)
            .field("extract", &self.extract)
            .field("public", &self.public)
            .field("org_header", &self.org_header)
            .field("hide_credentials", &self.hide_credentials)
            .field("realm", &self.realm)
            .field("store_timeout", &self.store_timeout)
            .field("clock", &self.clock)
            .field("peppers", &self.peppers)
            .finish()
    }
}
