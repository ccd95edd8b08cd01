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

use axum_core::body::Body;
use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;

use crate::error::AuthError;
use crate::principal::{Principal, Unauthenticated};
use crate::response::{DefaultResponder, not_behind_key_auth};

/// What an extractor found in the extensions.
enum Found {
    Principal(Principal),
    /// A public path without a valid credential: the layer saw the request.
    Unauthenticated(Response),
    /// The layer never saw the request: a misconfigured router.
    NotBehindLayer(Response),
}

fn find(parts: &Parts) -> Found {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Found::Principal(principal.clone());
    }
    if let Some(marker) = parts.extensions.get::<Unauthenticated>() {
        let response = marker.context.respond(marker.rejection.clone(), parts);
        return Found::Unauthenticated(into_axum(response));
    }
    Found::NotBehindLayer(into_axum(not_behind_key_auth(parts)))
}

fn into_axum(response: http::Response<Bytes>) -> Response {
    response.map(Body::from)
}

/// Extracts the caller. On a public path without a valid credential it
/// answers what the layer would have (401 and friends); on a route the layer
/// does not cover it answers 500, since that is a server misconfiguration.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match find(parts) {
            Found::Principal(principal) => Ok(principal),
            Found::Unauthenticated(response) | Found::NotBehindLayer(response) => Err(response),
        }
    }
}

/// `Option<Principal>`: `None` on a public path without a valid credential;
/// still 500 on a route the layer does not cover.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match find(parts) {
            Found::Principal(principal) => Ok(Some(principal)),
            Found::Unauthenticated(_) => Ok(None),
            Found::NotBehindLayer(response) => Err(response),
        }
    }
}

/// The standard JSON refusal ([`DefaultResponder::json`]), so handlers can
/// use `?` on [`Principal::require_scope`].
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        into_axum(DefaultResponder::json(&self))
    }
}
