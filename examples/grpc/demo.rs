//! A small gRPC API, written by hand so that no `protoc` is needed: what
//! `tonic-build` would generate from `demo.proto` beside this file (package
//! `keyauth.demo`, services `Whoami` and `Objects`). That file is the
//! contract for clients in other languages; `tests/grpc_proto.rs` fails
//! when these messages or the method paths drift from it.
//!
//! The handlers read the `Principal` that `KeyAuthLayer` put into the
//! request extensions.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tower::Service;
use tower_keyauth::Principal;
use tower_keyauth::tonic::RequestPrincipal;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WhoamiReply {
    #[prost(string, tag = "1")]
    pub key_id: String,
    #[prost(string, tag = "2")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub org: String,
    #[prost(string, optional, tag = "4")]
    pub workspace: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub user: Option<String>,
    #[prost(string, repeated, tag = "6")]
    pub scopes: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateObjectRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectReply {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub org: String,
    #[prost(string, tag = "3")]
    pub created_by: String,
}

pub const WHOAMI_GET: &str = "/keyauth.demo.Whoami/Get";
pub const OBJECTS_CREATE: &str = "/keyauth.demo.Objects/Create";

/// The handler of `Whoami.Get`: the principal, read from the extensions.
async fn whoami(request: Request<WhoamiRequest>) -> Result<Response<WhoamiReply>, Status> {
    let principal: &Principal = request.principal()?;
    Ok(Response::new(WhoamiReply {
        key_id: principal.key_id().to_string(),
        kind: principal.kind().to_string(),
        org: principal.org().to_string(),
        workspace: principal.workspace().map(ToString::to_string),
        user: principal.user().map(ToString::to_string),
        scopes: principal.scopes().iter().map(ToString::to_string).collect(),
    }))
}

/// The handler of `Objects.Create`. The scope is enforced by a
/// `RequireScopes` layer around the service; the handler only reads who
/// asked.
async fn create_object(
    request: Request<CreateObjectRequest>,
) -> Result<Response<ObjectReply>, Status> {
    let principal = request.principal()?.clone();
    Ok(Response::new(ObjectReply {
        name: request.into_inner().name,
        org: principal.org().to_string(),
        created_by: principal.key_id().to_string(),
    }))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Serves one unary method with `handler`, as generated code does.
fn serve_unary<Req, Rep, Fut>(
    request: http::Request<Body>,
    handler: fn(Request<Req>) -> Fut,
) -> BoxFuture<Result<http::Response<Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    Rep: prost::Message + Send + 'static,
    Fut: Future<Output = Result<Response<Rep>, Status>> + Send + 'static,
{
    struct Handler<Req, Fut>(fn(Request<Req>) -> Fut);
    impl<Req, Rep, Fut> UnaryService<Req> for Handler<Req, Fut>
    where
        Fut: Future<Output = Result<Response<Rep>, Status>>,
    {
        type Response = Rep;
        type Future = Fut;
        fn call(&mut self, request: Request<Req>) -> Fut {
            (self.0)(request)
        }
    }
    Box::pin(async move {
        let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Rep, Req>::default());
        Ok(grpc.unary(Handler(handler), request).await)
    })
}

fn unimplemented() -> BoxFuture<Result<http::Response<Body>, Infallible>> {
    Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
}

/// The `keyauth.demo.Whoami` service.
#[derive(Clone, Debug, Default)]
pub struct WhoamiServer;

impl NamedService for WhoamiServer {
    const NAME: &'static str = "keyauth.demo.Whoami";
}

impl Service<http::Request<Body>> for WhoamiServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            WHOAMI_GET => serve_unary(request, whoami),
            _ => unimplemented(),
        }
    }
}

/// The `keyauth.demo.Objects` service.
#[derive(Clone, Debug, Default)]
pub struct ObjectsServer;

impl NamedService for ObjectsServer {
    const NAME: &'static str = "keyauth.demo.Objects";
}

impl Service<http::Request<Body>> for ObjectsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            OBJECTS_CREATE => serve_unary(request, create_object),
            _ => unimplemented(),
        }
    }
}

/// A client for both services, with the credential sent as metadata.
#[derive(Clone)]
pub struct DemoClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    headers: Vec<(&'static str, String)>,
}

impl DemoClient {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            grpc: tonic::client::Grpc::new(channel),
            headers: Vec::new(),
        }
    }

    /// Sends `authorization: Bearer <token>` with every call.
    pub fn with_bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {token}")));
        self
    }

    /// Sends this metadata with every call (`x-org-id`, `x-api-key`, …).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    async fn call<Req, Rep>(&mut self, path: &'static str, message: Req) -> Result<Rep, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Rep: prost::Message + Default + Send + Sync + 'static,
    {
        let mut request = Request::new(message);
        for (name, value) in &self.headers {
            let value = value
                .parse()
                .map_err(|_| Status::invalid_argument("metadata is not ASCII"))?;
            request.metadata_mut().insert(*name, value);
        }
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Rep>::default();
        let response = self
            .grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(response.into_inner())
    }

    pub async fn whoami(&mut self) -> Result<WhoamiReply, Status> {
        self.call(WHOAMI_GET, WhoamiRequest {}).await
    }

    pub async fn create_object(&mut self, name: &str) -> Result<ObjectReply, Status> {
        self.call(
            OBJECTS_CREATE,
            CreateObjectRequest {
                name: name.to_owned(),
            },
        )
        .await
    }
}
