//! The gRPC rows of the outcome table, with a real tonic server and a real
//! tonic client over loopback.

mod common;

#[path = "../examples/grpc/demo.rs"]
mod demo;

use std::net::SocketAddr;

use common::*;
use demo::{DemoClient, ObjectsServer, WhoamiServer};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tower::Layer;
use tower_keyauth::{Extract, KeyAuthLayer, KeyLifecycle, KeyStore, RequireScopes};

/// Serves both demo services behind `layer` on a free loopback port; the
/// objects service also needs `objects.write`.
async fn serve<S: KeyStore>(layer: KeyAuthLayer<S>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .layer(layer.extract(Extract::bearer_or_api_key()))
        .add_service(WhoamiServer)
        .add_service(RequireScopes::new("objects.write").layer(ObjectsServer))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}

async fn client(addr: SocketAddr) -> DemoClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    DemoClient::new(channel)
}

#[tokio::test]
async fn no_key_is_unauthenticated() {
    let demo = demo().await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    let status = client.clone().whoami().await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "An API key is required. \
         Send the key as `Authorization: Bearer <key>` or in the `x-api-key` header."
    );
}

#[tokio::test]
async fn bad_keys_are_unauthenticated() {
    let demo = demo().await;
    let client = client(serve(KeyAuthLayer::new(demo.store.clone())).await).await;
    let typo = with_typo(&demo.org_key);
    for token in ["ak_nope.nope", typo.as_str()] {
        let status = client
            .clone()
            .with_bearer(token)
            .whoami()
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token}");
        assert_eq!(status.message(), "The API key is invalid.");
    }
    // Malformed syntax (HTTP 400) is UNAUTHENTICATED for gRPC too.
    let status = client
        .clone()
        .with_bearer(&demo.org_key)
        .with_header("x-api-key", &demo.read_key)
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // A revoked key, after its secret matched.
    demo.store.revoke(&demo.org_key_id).await.unwrap();
    let status = client
        .clone()
        .with_bearer(&demo.org_key)
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"));
}

#[tokio::test]
async fn a_missing_scope_is_permission_denied() {
    let demo = demo().await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    let status = client
        .clone()
        .with_header("x-api-key", &demo.read_key)
        .create_object("report")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("objects.write"),
        "{}",
        status.message()
    );
    // The same key may still call what needs no scope.
    let reply = client
        .clone()
        .with_header("x-api-key", &demo.read_key)
        .whoami()
        .await
        .unwrap();
    assert_eq!(reply.workspace.as_deref(), Some("docs"));
}

#[tokio::test]
async fn a_store_that_is_down_is_unavailable() {
    let client = client(serve(KeyAuthLayer::new(FailingStore)).await).await;
    let token = tower_keyauth::KeyFormat::default()
        .mint(tower_keyauth::ids::KeyKind::Organization, None)
        .unwrap();
    let status = client
        .clone()
        .with_bearer(token.token.expose_secret())
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.message().contains("connection refused"));
}

#[tokio::test]
async fn a_valid_key_reaches_the_handler_with_its_principal() {
    let demo = demo().await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    let reply = client
        .clone()
        .with_bearer(&demo.org_key)
        .whoami()
        .await
        .unwrap();
    assert_eq!(reply.key_id, demo.org_key_id.as_str());
    assert_eq!(reply.kind, "organization");
    assert_eq!(reply.org, "acme");
    assert_eq!(reply.workspace, None);
    assert_eq!(reply.scopes, vec!["*".to_owned()]);
    let created = client
        .clone()
        .with_bearer(&demo.org_key)
        .create_object("report")
        .await
        .unwrap();
    assert_eq!(
        (created.org.as_str(), created.name.as_str()),
        ("acme", "report")
    );
}

#[tokio::test]
async fn personal_tokens_need_an_organization_they_belong_to() {
    let demo = demo().await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    let status = client
        .clone()
        .with_bearer(&demo.pat)
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "Token is missing organization claim.");

    let status = client
        .clone()
        .with_bearer(&demo.pat)
        .with_header("x-org-id", "globex")
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let reply = client
        .clone()
        .with_bearer(&demo.pat)
        .with_header("x-org-id", "acme")
        .whoami()
        .await
        .unwrap();
    assert_eq!(reply.user.as_deref(), Some("ada"));
    assert_eq!(
        reply.scopes,
        vec!["objects.read".to_owned(), "objects.write".to_owned()]
    );
}

#[tokio::test]
async fn scopes_without_the_key_layer_are_an_internal_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(RequireScopes::new("objects.write").layer(ObjectsServer))
        .add_service(WhoamiServer)
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    let client = client(addr).await;
    let status = client.clone().create_object("x").await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("KeyAuthLayer"));
    let status = client.clone().whoami().await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
}

#[tokio::test]
async fn one_service_can_be_authenticated_alone() {
    let demo = demo().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(KeyAuthLayer::new(demo.store).layer(WhoamiServer))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    let client = client(addr).await;
    assert_eq!(
        client.clone().whoami().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .clone()
            .with_bearer(&demo.org_key)
            .whoami()
            .await
            .unwrap()
            .org,
        "acme"
    );
}

/// A key with `limits`, issued in the demo store.
async fn limited_key(
    store: &tower_keyauth::MemoryStore,
    limits: tower_keyauth::limit::UsageLimits,
) -> String {
    store
        .issue(tower_keyauth::NewKey::org("acme").limits(limits))
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn a_spent_rate_limit_is_resource_exhausted() {
    let demo = demo().await;
    let one_a_minute = tower_keyauth::limit::UsageLimits::new()
        .rate_limit(
            tower_keyauth::limit::RateLimit::per(1, std::time::Duration::from_secs(60)).unwrap(),
        )
        .unwrap();
    let token = limited_key(&demo.store, one_a_minute).await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    client.clone().with_bearer(&token).whoami().await.unwrap();
    let status = client
        .clone()
        .with_bearer(&token)
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "The API key's rate limit is spent. Try again later."
    );
}

#[tokio::test]
async fn the_allowlist_reads_tonic_s_remote_address() {
    let demo = demo().await;
    let allow = |networks: &[&str]| {
        tower_keyauth::limit::UsageLimits::new()
            .with_allowed_ips(tower_keyauth::client_addr::IpAllowlist::parse(networks).unwrap())
    };
    let loopback = limited_key(&demo.store, allow(&["127.0.0.1"])).await;
    let elsewhere = limited_key(&demo.store, allow(&["10.0.0.0/8"])).await;
    let client = client(serve(KeyAuthLayer::new(demo.store)).await).await;
    client
        .clone()
        .with_bearer(&loopback)
        .whoami()
        .await
        .unwrap();
    let status = client
        .clone()
        .with_bearer(&elsewhere)
        .whoami()
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}
