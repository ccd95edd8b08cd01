//! The quickstart: an API behind `KeyAuthLayer`, with demo credentials.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It listens on 127.0.0.1:3000 (set `KEYAUTH_ADDR` to change that), mints
//! demo credentials, prints them as shell lines and a few curl commands to
//! try. Credentials are accepted as `Authorization: Bearer`, `x-api-key` or
//! the `api-key` query parameter; personal tokens name their organization in
//! `x-org-id`.
//!
//! | route | access |
//! |---|---|
//! | `GET /`, `/health/`, `/schema/`, `/docs/…` | public |
//! | `GET /v1/whoami` | any valid credential: the principal as JSON |
//! | `GET /v1/objects` | scope `objects.read` |
//! | `POST /v1/objects` | scope `objects.write` |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_keyauth::{
    Extract, KeyAuthLayer, KeyLifecycle, Membership, MemoryStore, NewKey, OrgId, Principal,
    RequireScopes, Scopes, UserId,
};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const ORG_HEADER: &str = "x-org-id";

/// Objects per organization: the API's "data".
type Objects = Arc<Mutex<HashMap<OrgId, Vec<Value>>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_keyauth=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let store = MemoryStore::new();
    let demo = mint_demo_credentials(&store).await?;

    let app = routes().layer(
        KeyAuthLayer::new(store)
            .extract(Extract::bearer_api_key_or_query())
            .org_header(ORG_HEADER)
            .public("/")
            .public("/health/")
            .public("/schema/")
            .public("/docs/*"),
    );

    let addr: SocketAddr = std::env::var("KEYAUTH_ADDR")
        .unwrap_or_else(|_| DEFAULT_ADDR.to_owned())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;

    print_demo(&demo, addr);
    println!("listening on http://{addr}");

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

fn routes() -> Router {
    let objects = Objects::default();
    Router::new()
        .route("/", get(home))
        .route(
            "/health/",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/schema/", get(schema))
        .route("/docs/", get(docs))
        .route("/docs/{*page}", get(docs))
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/objects",
            get(list_objects.layer(RequireScopes::new("objects.read")))
                .post(create_object.layer(RequireScopes::new("objects.write"))),
        )
        .with_state(objects)
}

struct DemoCredentials {
    org_key: String,
    read_key: String,
    pat: String,
}

async fn mint_demo_credentials(
    store: &MemoryStore,
) -> Result<DemoCredentials, Box<dyn std::error::Error>> {
    let org_key = store
        .issue(NewKey::org("acme").name("demo org key"))
        .await?;
    let read_key = store
        .issue(
            NewKey::workspace("acme", "docs")
                .name("demo docs reader")
                .scopes(Scopes::parse(["objects.read"])?),
        )
        .await?;
    let pat = store
        .issue(NewKey::personal("ada").name("ada's laptop"))
        .await?;
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
    Ok(DemoCredentials {
        org_key: org_key.token.expose_secret().to_owned(),
        read_key: read_key.token.expose_secret().to_owned(),
        pat: pat.token.expose_secret().to_owned(),
    })
}

fn print_demo(demo: &DemoCredentials, addr: SocketAddr) {
    let lines = [
        (
            format!("export ORG_KEY={}", demo.org_key),
            "# org \"acme\", full access",
        ),
        (
            format!("export READ_KEY={}", demo.read_key),
            "# workspace \"docs\" of org \"acme\", scope objects.read only",
        ),
        (
            format!("export PAT={}", demo.pat),
            "# personal token of user \"ada\", member of org \"acme\" with objects.read and objects.write",
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
    let base = format!("http://{addr}");
    println!("# try:");
    println!("curl -s {base}/v1/whoami -H \"Authorization: Bearer $ORG_KEY\"");
    println!("curl -s {base}/v1/objects -H \"x-api-key: $READ_KEY\"");
    println!(
        "curl -s -X POST {base}/v1/objects -H \"x-api-key: $READ_KEY\"    # 403: objects.read only"
    );
    println!(
        "curl -s -X POST {base}/v1/objects -H \"Authorization: Bearer $PAT\" -H \"{ORG_HEADER}: $ORG_ID\" -H 'content-type: application/json' -d '{{\"name\":\"report\"}}'"
    );
    println!("curl -s \"{base}/v1/whoami?api-key=$READ_KEY\"    # works, but URLs get logged");
    println!("curl -s -i {base}/v1/whoami    # 401");
}

async fn home(principal: Option<Principal>) -> Json<Value> {
    Json(json!({
        "service": "tower-keyauth quickstart",
        "authenticated_as": principal.as_ref().map(|p| p.key_id().as_str().to_owned()),
        "routes": ["/v1/whoami", "/v1/objects"],
    }))
}

async fn schema() -> Json<Value> {
    Json(json!({
        "security": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "header": { "type": "apiKey", "in": "header", "name": "x-api-key" },
            "query": { "type": "apiKey", "in": "query", "name": "api-key" },
        },
        "scopes": ["objects.read", "objects.write"],
    }))
}

async fn docs() -> &'static str {
    "Send your key as `Authorization: Bearer <key>`. Personal tokens also need `x-org-id`.\n"
}

async fn whoami(principal: Principal) -> Json<Principal> {
    Json(principal)
}

async fn list_objects(State(objects): State<Objects>, principal: Principal) -> Json<Value> {
    let objects = objects.lock().unwrap_or_else(|e| e.into_inner());
    let mine = objects.get(principal.org()).cloned().unwrap_or_default();
    Json(json!({ "org": principal.org().as_str(), "objects": mine }))
}

async fn create_object(
    State(objects): State<Objects>,
    principal: Principal,
    body: Option<Json<Value>>,
) -> (StatusCode, Json<Value>) {
    let name = body
        .as_ref()
        .and_then(|Json(body)| body.get("name").and_then(Value::as_str))
        .unwrap_or("untitled")
        .to_owned();
    let object = json!({ "name": name, "created_by": principal.key_id().as_str() });
    objects
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(principal.org().clone())
        .or_default()
        .push(object.clone());
    (StatusCode::CREATED, Json(object))
}
