//! A tonic server behind `KeyAuthLayer`, with one service that also needs a
//! scope (`RequireScopes`), and handlers that read the `Principal` from the
//! request extensions.
//!
//! ```sh
//! cargo run --example grpc
//! ```
//!
//! It mints demo keys and prints them as `export` lines, serves
//! `keyauth.demo.Whoami` (any valid key) and `keyauth.demo.Objects` (scope
//! `objects.write`) on 127.0.0.1:50051 (`KEYAUTH_ADDR` overrides), calls
//! itself once with each key to show the gRPC statuses, and keeps serving
//! until Ctrl-C.
//!
//! The API is defined in `examples/grpc/demo.proto`; any gRPC client can be
//! generated from that file alone. Paste the `export` lines into a shell,
//! then, from the crate's root:
//!
//! ```sh
//! grpcurl -plaintext -import-path examples/grpc -proto demo.proto -H "authorization: Bearer $ORG_KEY" 127.0.0.1:50051 keyauth.demo.Whoami/Get
//! grpcurl -plaintext -import-path examples/grpc -proto demo.proto -H "x-api-key: $READ_KEY" -d '{"name": "report"}' 127.0.0.1:50051 keyauth.demo.Objects/Create   # PermissionDenied
//! ```
//!
//! or in Python (`pip install grpcio grpcio-tools`; `tests/grpc_client.py`
//! is a fuller version that the tests run):
//!
//! ```python
//! import os, sys, grpc
//! sys.path.insert(0, "examples/grpc")
//! pb, services = grpc.protos_and_services("demo.proto")
//! channel = grpc.insecure_channel("127.0.0.1:50051")
//! whoami = services.WhoamiStub(channel)
//! print(whoami.Get(pb.WhoamiRequest(),
//!                  metadata=[("authorization", "Bearer " + os.environ["ORG_KEY"])]))
//! ```
//!
//! Metadata carries the credential: `authorization: Bearer <key>` or
//! `x-api-key: <key>`, plus `x-org-id: <org>` with a personal token.

mod demo;

use std::net::SocketAddr;

use demo::{DemoClient, ObjectsServer, WhoamiServer};
use tonic::transport::server::TcpIncoming;
use tower::Layer;
use tower_keyauth::ids::{OrgId, UserId};
use tower_keyauth::store::Membership;
use tower_keyauth::{
    Extract, KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey, RequireScopes, Scopes,
};

const DEFAULT_ADDR: &str = "127.0.0.1:50051";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let store = MemoryStore::new();
    let org_key = store
        .issue(NewKey::org("acme").name("grpc org key"))
        .await?;
    let read_key = store
        .issue(
            NewKey::workspace("acme", "docs")
                .name("grpc reader")
                .scopes(Scopes::parse(["objects.read"])?),
        )
        .await?;
    let pat = store.issue(NewKey::personal("ada")).await?;
    store
        .set_membership(
            &UserId::from("ada"),
            &OrgId::from("acme"),
            Some(Membership::new(Scopes::parse([
                "objects.read",
                "objects.write",
            ])?)),
        )
        .await?;

    let addr: SocketAddr = std::env::var("KEYAUTH_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    print_demo(
        org_key.token.expose_secret(),
        read_key.token.expose_secret(),
        pat.token.expose_secret(),
        addr,
    );

    let server = tonic::transport::Server::builder()
        .layer(
            KeyAuthLayer::new(store)
                .extract(Extract::bearer_or_api_key())
                .org_header("x-org-id"),
        )
        .add_service(WhoamiServer)
        .add_service(RequireScopes::new("objects.write").layer(ObjectsServer))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        });
    let server = tokio::spawn(server);

    println!("listening on http://{addr}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = DemoClient::new(channel);
    let org_key = org_key.token.expose_secret();
    let read_key = read_key.token.expose_secret();
    let pat = pat.token.expose_secret();

    let show = |label: &str, outcome: Result<String, tonic::Status>| match outcome {
        Ok(reply) => println!("{label:<44} OK  {reply}"),
        Err(status) => println!("{label:<44} {:?}: {}", status.code(), status.message()),
    };
    show(
        "Whoami.Get without a key",
        client.clone().whoami().await.map(|r| format!("{r:?}")),
    );
    show(
        "Whoami.Get with the org key",
        client
            .clone()
            .with_bearer(org_key)
            .whoami()
            .await
            .map(|r| format!("{r:?}")),
    );
    show(
        "Objects.Create with the read-only key",
        client
            .clone()
            .with_header("x-api-key", read_key)
            .create_object("report")
            .await
            .map(|r| format!("{r:?}")),
    );
    show(
        "Objects.Create with ada's token for acme",
        client
            .clone()
            .with_bearer(pat)
            .with_header("x-org-id", "acme")
            .create_object("report")
            .await
            .map(|r| format!("{r:?}")),
    );
    println!("serving until Ctrl-C");
    server.await??;
    Ok(())
}

/// Prints the demo keys as shell `export` lines, like the quickstart, so
/// that a client outside this process (grpcurl, a generated client) can
/// use them; the tests read the keys from these lines too.
fn print_demo(org_key: &str, read_key: &str, pat: &str, addr: SocketAddr) {
    let lines = [
        (
            format!("export ORG_KEY={org_key}"),
            "# org \"acme\", full access",
        ),
        (
            format!("export READ_KEY={read_key}"),
            "# workspace \"docs\" of org \"acme\", scope objects.read only",
        ),
        (
            format!("export PAT={pat}"),
            "# personal token of user \"ada\", member of org \"acme\" with objects.read and objects.write; send x-org-id: $ORG_ID",
        ),
    ];
    let column = lines
        .iter()
        .map(|(export, _)| export.len())
        .max()
        .unwrap_or(0)
        + 4;
    for (export, comment) in &lines {
        println!("{export:<column$} {comment}");
    }
    println!("export ORG_ID=acme");
    println!();
    println!("# try, from the crate's root:");
    println!(
        "grpcurl -plaintext -import-path examples/grpc -proto demo.proto -H \"authorization: Bearer $ORG_KEY\" {addr} keyauth.demo.Whoami/Get"
    );
    println!();
}
