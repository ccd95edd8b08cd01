//! [`KeyAuth`]: the service that sequences the request path.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::AuthBody;
use crate::config::Config;
use crate::future::ResponseFuture;
use crate::layer::KeyAuthLayer;
use crate::store::KeyStore;
use crate::verify::{self, Admission, Check, refuse};

/// The service of [`KeyAuthLayer`]: authenticates, then calls the inner
/// service with a [`Principal`](crate::Principal) in the request extensions,
/// or answers the refusal itself.
///
/// Generic over request and response bodies; refusals travel in
/// [`AuthBody`].
pub struct KeyAuth<Svc, S> {
    inner: Svc,
    config: Arc<Config<S>>,
}

impl<Svc, S: KeyStore> KeyAuth<Svc, S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: Svc, layer: &KeyAuthLayer<S>) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }
}

impl<Svc, S> KeyAuth<Svc, S> {
    pub(crate) fn from_config(inner: Svc, config: Arc<Config<S>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<Svc: Clone, S> Clone for KeyAuth<Svc, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<Svc: fmt::Debug, S> fmt::Debug for KeyAuth<Svc, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyAuth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<Svc, S, ReqBody, ResBody> Service<Request<ReqBody>> for KeyAuth<Svc, S>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S: KeyStore,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let config = &self.config;
        let public = config.public.matches(&parts);
        match verify::check(config, &mut parts, public) {
            Check::Admitted(fields) => {
                config.answers.mark(&mut parts.extensions);
                ResponseFuture::calling(
                    self.inner.call(Request::from_parts(parts, body)),
                    Some(config.answers.clone()),
                    fields,
                )
            }
            Check::Refused(error) => match refuse(error, public, &config.context, parts) {
                Admission::Pass(parts, fields) => ResponseFuture::calling(
                    self.inner.call(Request::from_parts(parts, body)),
                    Some(config.answers.clone()),
                    fields,
                ),
                Admission::Refuse(refusal) => ResponseFuture::refused(refusal),
            },
            Check::Enforce => unreachable!("verify::check enforces the policy"),
            Check::Pending(verdict) => {
                // The future must call the instance that `poll_ready` readied
                // (tower-service's rule), so it takes that one along.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::checking(
                    verdict,
                    parts,
                    body,
                    inner,
                    public,
                    config.answers.clone(),
                    Arc::clone(&config.context),
                )
            }
        }
    }
}
