//! tonic integration: add [`KeyAuth`] and [`RequireScopes`] services with
//! `add_service`, turn an [`AuthError`] into a [`Status`], and read the
//! [`Principal`] of a request.
//!
//! The layer itself needs no feature: it works around any tonic server, and
//! answers gRPC callers with trailers-only responses carrying
//! `grpc-status` 16 (`UNAUTHENTICATED`), 7 (`PERMISSION_DENIED`) or 14
//! (`UNAVAILABLE`). This module adds the conveniences.
//!
//! ```
//! use tonic::{Request, Response, Status};
//! use tower_keyauth::tonic::RequestPrincipal;
//!
//! async fn delete_object(request: Request<()>) -> Result<Response<()>, Status> {
//!     let principal = request.principal()?;
//!     principal.require_scope("objects.write")?;
//!     // … delete in principal.org() …
//!     Ok(Response::new(()))
//! }
//! ```
//!
//! [`RequireScopes`]: crate::RequireScopes

use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::error::AuthError;
use crate::principal::{Caller, Principal};
use crate::require_scopes::RequireScopesService;
use crate::service::KeyAuth;

/// `add_service(RequireScopes::new("…").layer(MyServer::new(…)))` keeps the
/// wrapped service's gRPC name.
impl<Svc: NamedService> NamedService for RequireScopesService<Svc> {
    const NAME: &'static str = Svc::NAME;
}

/// `add_service(KeyAuthLayer::new(store).layer(MyServer::new(…)))`
/// authenticates one service only.
impl<Svc: NamedService, S> NamedService for KeyAuth<Svc, S> {
    const NAME: &'static str = Svc::NAME;
}

/// The status of the outcome table: `UNAUTHENTICATED`, `PERMISSION_DENIED`
/// or `UNAVAILABLE`, with the error's message.
///
/// ```
/// use tower_keyauth::AuthError;
/// let status = tonic::Status::from(AuthError::insufficient_scope("objects.write"));
/// assert_eq!(status.code(), tonic::Code::PermissionDenied);
/// ```
impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        Status::new(Code::from_i32(error.grpc_code()), error.message())
    }
}

/// Reads the [`Principal`] of a tonic request.
pub trait RequestPrincipal {
    /// The principal `KeyAuthLayer` inserted, or the status to return:
    /// `UNAUTHENTICATED` on a public path without a valid credential,
    /// `INTERNAL` when the layer never saw the request (a misconfiguration).
    fn principal(&self) -> Result<&Principal, Status>;
}

impl<T> RequestPrincipal for tonic::Request<T> {
    fn principal(&self) -> Result<&Principal, Status> {
        match Caller::of(self.extensions()) {
            Caller::Authenticated(principal) => Ok(principal),
            Caller::Refused(error, _) => Err(error.clone().into()),
            Caller::NotBehindKeyAuth => {
                tracing::error!(
                    "a gRPC handler reads a Principal but KeyAuthLayer does not cover it"
                );
                Err(Status::internal(
                    "This service needs a Principal but is not behind KeyAuthLayer.",
                ))
            }
        }
    }
}
