//! axum integration: [`Principal`] and `Option<Principal>` extractors, and
//! [`AuthError`] as a response.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_keyauth::{AuthError, KeyAuthLayer, MemoryStore, Principal};
//!
//! async fn objects(principal: Principal) -> Result<String, AuthError> {
//!     principal.require_scope("objects.read")?;
//!     Ok(format!("objects of {}", principal.org()))
//! }
//!
//! async fn home(principal: Option<Principal>) -> String {
//!     match principal {
//!         Some(principal) => format!("hello, {}", principal.key_id()),
//!         None => "hello, stranger".to_owned(),
//!     }
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(home))
//!     .route("/v1/objects", get(objects))
//!     .layer(KeyAuthLayer::new(MemoryStore::new()).public("/"));
//! # let _ = app;
//! ```

use std::fmt;

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;

use crate::error::AuthError;
use crate::principal::{Caller, Principal};
use crate::response::{
    DefaultResponder, HandlerRefusal, NOT_BEHIND_KEY_AUTH, Refusal, not_behind_key_auth,
};

/// Why the [`Principal`] extractor refused a request: on a public path, the
/// layer found no valid credential (answered as the layer answers it, with
/// its responder); on a route the layer does not cover, a server
/// misconfiguration (500, naming `KeyAuthLayer`).
///
/// ```
/// use axum::response::IntoResponse;
/// use tower_keyauth::Principal;
/// use tower_keyauth::axum::PrincipalRejection;
///
/// async fn whoami(principal: Result<Principal, PrincipalRejection>) -> axum::response::Response {
///     match principal {
///         Ok(principal) => principal.org().to_string().into_response(),
///         Err(rejection) if rejection.is_not_behind_key_auth() => {
///             (http::StatusCode::INTERNAL_SERVER_ERROR, "misconfigured").into_response()
///         }
///         Err(rejection) => rejection.into_response(),
///     }
/// }
/// # let _ = whoami;
/// ```
pub struct PrincipalRejection {
    /// The layer's reason, when the layer saw the request.
    error: Option<AuthError>,
    /// The answer, built when the request was at hand (a responder may read
    /// it). Boxed: extraction results stay small on the path that succeeds.
    response: Box<http::Response<Bytes>>,
}

impl PrincipalRejection {
    /// The layer's reason for refusing the credential, or `None` when the
    /// layer never saw the request.
    pub fn auth_error(&self) -> Option<&AuthError> {
        self.error.as_ref()
    }

    /// Whether the route is not behind [`KeyAuthLayer`](crate::KeyAuthLayer):
    /// a server misconfiguration.
    pub fn is_not_behind_key_auth(&self) -> bool {
        self.error.is_none()
    }

    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }
}

impl PrincipalRejection {
    /// The 500 of a route the layer does not cover.
    fn not_behind_key_auth(parts: &Parts) -> Self {
        Self {
            error: None,
            response: Box::new(not_behind_key_auth(parts)),
        }
    }
}

impl IntoResponse for PrincipalRejection {
    fn into_response(self) -> Response {
        into_axum(*self.response)
    }
}

impl fmt::Debug for PrincipalRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalRejection")
            .field("error", &self.error)
            .field("status", &self.response.status())
            .finish()
    }
}

impl fmt::Display for PrincipalRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(error) => fmt::Display::fmt(error, f),
            None => f.write_str(NOT_BEHIND_KEY_AUTH),
        }
    }
}

impl std::error::Error for PrincipalRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.as_ref().map(|error| error as _)
    }
}

/// The caller of `parts`, or the rejection with its answer built while the
/// request is at hand.
fn find(parts: &Parts) -> Result<Principal, PrincipalRejection> {
    match Caller::of(&parts.extensions) {
        Caller::Authenticated(principal) => Ok(principal.clone()),
        Caller::Refused(error, context) => Err(PrincipalRejection {
            error: Some(error.clone()),
            response: Box::new(context.respond(error, parts)),
        }),
        Caller::NotBehindKeyAuth => Err(PrincipalRejection::not_behind_key_auth(parts)),
    }
}

fn into_axum(response: http::Response<Bytes>) -> Response {
    response.map(Body::from)
}

/// Extracts the caller. On a public path without a valid credential it
/// answers what the layer would have (401 and friends); on a route the layer
/// does not cover it answers 500, since that is a server misconfiguration.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        find(parts)
    }
}

/// `Option<Principal>`: `None` on a public path without a valid credential;
/// still 500 on a route the layer does not cover.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match Caller::of(&parts.extensions) {
            Caller::Authenticated(principal) => Ok(Some(principal.clone())),
            Caller::Refused(..) => Ok(None),
            Caller::NotBehindKeyAuth => Err(PrincipalRejection::not_behind_key_auth(parts)),
        }
    }
}

/// The standard JSON refusal, so handlers can use `?` on
/// [`Principal::require_scope`]. Inside a
/// [`KeyAuthLayer`](crate::KeyAuthLayer), its challenge names the layer's
/// realm.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let mut response = DefaultResponder::json(&Refusal::new(&self));
        response.extensions_mut().insert(HandlerRefusal(self));
        into_axum(response)
    }
}
