//! [`RequireScopes`]: a layer that lets a request through only when its
//! [`Principal`] holds the scopes a route or service needs.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::AuthBody;
use crate::error::AuthError;
use crate::future::ResponseFuture;
use crate::principal::{Caller, Principal};
use crate::response::{not_behind_key_auth, principal_context};
use crate::scope::{InvalidScope, Scopes};

/// Requires every one of its scopes, per route (axum) or per service
/// (tonic). Put it inside [`KeyAuthLayer`](crate::KeyAuthLayer): it reads the
/// [`Principal`] the key layer inserted.
///
/// A principal that lacks a scope gets 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` (gRPC
/// callers get `PERMISSION_DENIED`), shaped by the key layer's responder.
///
/// ```
/// use axum::{Router, handler::Handler, routing::get};
/// use tower_keyauth::{KeyAuthLayer, MemoryStore, RequireScopes};
///
/// async fn list() -> &'static str { "[]" }
/// async fn create() -> &'static str { "created" }
///
/// let app: Router = Router::new()
///     .route(
///         "/v1/objects",
///         get(list.layer(RequireScopes::new("objects.read")))
///             .post(create.layer(RequireScopes::new("objects.write"))),
///     )
///     .layer(KeyAuthLayer::new(MemoryStore::new()));
/// # let _ = app;
/// ```
///
/// With tonic (feature `tonic`), wrap one service:
///
/// ```
/// # use std::{convert::Infallible, future::{Ready, ready}, task::{Context, Poll}};
/// # use tonic::body::Body;
/// # #[derive(Clone)]
/// # struct ObjectsServer;
/// # impl tonic::server::NamedService for ObjectsServer {
/// #     const NAME: &'static str = "demo.Objects";
/// # }
/// # impl tower::Service<http::Request<Body>> for ObjectsServer {
/// #     type Response = http::Response<Body>;
/// #     type Error = Infallible;
/// #     type Future = Ready<Result<Self::Response, Infallible>>;
/// #     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
/// #         Poll::Ready(Ok(()))
/// #     }
/// #     fn call(&mut self, _: http::Request<Body>) -> Self::Future {
/// #         ready(Ok(tonic::Status::unimplemented("").into_http()))
/// #     }
/// # }
/// use tower::Layer;
/// use tower_keyauth::{KeyAuthLayer, MemoryStore, RequireScopes};
///
/// let router = tonic::transport::Server::builder()
///     .layer(KeyAuthLayer::new(MemoryStore::new()))
///     .add_service(RequireScopes::new("objects.write").layer(ObjectsServer));
/// # let _ = router;
/// ```
#[derive(Clone)]
#[must_use]
pub struct RequireScopes {
    required: Scopes,
}

impl RequireScopes {
    /// Requires one scope.
    ///
    /// # Panics
    ///
    /// If `scope` is not a valid scope name (see [`Scope`](crate::scope::Scope)).
    pub fn new(scope: &str) -> Self {
        Self::all([scope])
    }

    /// Requires every scope of `scopes`.
    ///
    /// # Panics
    ///
    /// If a name is not a valid scope (see [`Scope`](crate::scope::Scope)).
    pub fn all<I>(scopes: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Self::try_all(scopes).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`all`](Self::all), returning the error instead of panicking.
    pub fn try_all<I>(scopes: I) -> Result<Self, InvalidScope>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Ok(Self {
            required: Scopes::parse(scopes)?,
        })
    }

    /// The scopes required.
    pub fn scopes(&self) -> &Scopes {
        &self.required
    }

    /// `Ok` when `principal` holds every required scope, else the
    /// `insufficient_scope` error naming all of them.
    pub fn check(&self, principal: &Principal) -> Result<(), AuthError> {
        if principal.scopes().allows_all(&self.required) {
            Ok(())
        } else {
            Err(AuthError::insufficient_scope(self.required.to_string()))
        }
    }
}

impl fmt::Debug for RequireScopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequireScopes")
            .field(&self.required)
            .finish()
    }
}

impl<Svc> Layer<Svc> for RequireScopes {
    type Service = RequireScopesService<Svc>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RequireScopesService {
            inner,
            rule: self.clone(),
        }
    }
}

/// The service of [`RequireScopes`].
#[derive(Clone)]
pub struct RequireScopesService<Svc> {
    inner: Svc,
    rule: RequireScopes,
}

impl<Svc> RequireScopesService<Svc> {
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

impl<Svc: fmt::Debug> fmt::Debug for RequireScopesService<Svc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesService")
            .field("inner", &self.inner)
            .field("required", &self.rule.required)
            .finish()
    }
}

impl<Svc, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopesService<Svc>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let refusal = match Caller::of(&parts.extensions) {
            Caller::Authenticated(principal) => match self.rule.check(principal) {
                Ok(()) => None,
                Err(error) => {
                    tracing::info!(
                        key_id = %principal.key_id(),
                        outcome = "insufficient_scope",
                        required = %self.rule.required,
                        "credential lacks a required scope"
                    );
                    Some(principal_context(&parts.extensions).respond(&error, &parts))
                }
            },
            Caller::Refused(error, context) => Some(context.respond(error, &parts)),
            Caller::NotBehindKeyAuth => Some(not_behind_key_auth(&parts)),
        };
        match refusal {
            None => ResponseFuture::calling(
                self.inner.call(Request::from_parts(parts, body)),
                None,
                None,
            ),
            Some(response) => ResponseFuture::refused(response),
        }
    }
}
