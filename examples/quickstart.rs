//! The quickstart: an API behind `KeyAuthLayer`, keys in SQLite.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It keeps its keys in `./quickstart.db` (set `DATABASE_URL` to another
//! `sqlite://…` file or to a `postgres://…` database) and listens on
//! 127.0.0.1:3000 (set `KEYAUTH_ADDR` to change that). On a fresh database
//! it mints demo credentials and prints them as shell lines, with a few curl
//! commands to try; tokens are shown only that once. Credentials are
//! accepted as `Authorization: Bearer`, `x-api-key` or the `api-key` query
//! parameter; personal tokens name their organization in `x-org-id`.
//! Lookups that take the store more than 2 s are refused with 503. Start-up
//! problems (a bad or busy address, a database that cannot be opened or does
//! not answer within 3 s) end it with one line naming the variable to change.
//!
//! | route | access |
//! |---|---|
//! | `GET /`, `/health/`, `/schema/`, `/docs/…` | public |
//! | `GET /v1/whoami` | any valid credential: the principal as JSON |
//! | `GET /v1/objects` | scope `objects.read` |
//! | `POST /v1/objects` | scope `objects.write` |
//! | `POST /v1/keys` | scope `keys.write`: issue a key, shown once, optionally with `rate_limits`, `credits` and `allowed_ips` |
//! | `GET /v1/keys` | scope `keys.read`: your tenant's keys, masked, newest first, paged |
//! | `GET /v1/keys/{id}` | scope `keys.read`: one key, masked |
//! | `POST /v1/keys/{id}/rotate` | scope `keys.write`: a successor, shown once |
//! | `DELETE /v1/keys/{id}` | scope `keys.write`: revoke a key |
//! | `POST /v1/secret-scanning` | public, signed by GitHub; only with `SECRET_SCANNING_KEYS` set |
//!
//! The `/v1/keys` routes are the crate's [`KeyApi`]: a key never mints a
//! broader, longer-lived or less limited key than itself, and each issue,
//! rotation and revocation is logged as an audit event (target
//! `tower_keyauth::audit`). The layer enforces each key's limits (429
//! `rate_limited` or `quota_exhausted`, with `Retry-After`; 403 from an
//! address outside its `allowed_ips`, read from the connection), and
//! `/v1/whoami` shows them.
//!
//! With `SECRET_SCANNING_KEYS` naming a file of GitHub's public keys (the
//! JSON that `https://api.github.com/meta/public_keys/secret_scanning`
//! serves), the crate's [`SecretScanning`] endpoint is mounted at
//! `/v1/secret-scanning`, public to the layer: GitHub posts the tokens it
//! finds in public places there, signed with one of those keys, and each
//! live key among them is revoked and answered `true_positive`. A file that
//! cannot be read or holds no such keys stops the start with one line.
//!
//! With `KEYAUTH_PEPPER` set (a random secret of at least 32 bytes, taken
//! as the text stands, not decoded; as
//! version `KEYAUTH_PEPPER_VERSION`, default 1), keys are hashed with
//! HMAC-SHA256 under it, so a copy of the database alone cannot test
//! guessed tokens. Keys stored before still verify and are re-hashed on
//! their next use; to rotate the pepper, move the old one to
//! `KEYAUTH_EARLIER_PEPPER` (with `KEYAUTH_EARLIER_PEPPER_VERSION`) and set
//! a new one with a higher version.
//!
//! The store sits behind a `CachedStore` (the set-up the README recommends
//! for both SQL stores), so an authenticated request reads its key from
//! memory, not from the database. A key revoked through this server is
//! refused on its next request (the cache forgets it at once). Another
//! process sharing the database learns of a revocation: on PostgreSQL at
//! once, through `LISTEN/NOTIFY`; on SQLite, which cannot announce changes,
//! within the cache's positive TTL, 30 s (plus the duration of a lookup that
//! was under way at the revocation). `examples/load.rs` measures this app
//! (`LOAD_STORE=sqlite` or `postgres`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_keyauth::ids::{OrgId, UserId};
use tower_keyauth::key_api::KeyApi;
use tower_keyauth::pepper::Peppers;
use tower_keyauth::secret_scanning::{PublicKeys, SecretScanning};
use tower_keyauth::store::{
    CacheOptions, CachedStore, InvalidationListener, Membership, Owner, PostgresStore, SqliteStore,
    StoreError, StoreOptions,
};
use tower_keyauth::{
    Extract, KeyAuthLayer, KeyLifecycle, NewKey, Principal, RequireScopes, Scopes,
};

const DEFAULT_ADDR: &str = "127.0.0.1:3000";
const DEFAULT_DATABASE: &str = "sqlite://quickstart.db";
const ORG_HEADER: &str = "x-org-id";
/// Where GitHub's secret scanning reports arrive, with `SECRET_SCANNING_KEYS`.
const SECRET_SCANNING_PATH: &str = "/v1/secret-scanning";
/// How long start-up waits for the database: a quickstart that hangs on an
/// unreachable server looks broken.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for the key store before it is refused with 503
/// (fail closed), as recommended for production.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Any bundled store: SQLite or PostgreSQL, chosen at run time, behind a
/// `CachedStore`.
pub(crate) type Store = Arc<dyn KeyLifecycle>;

/// The store and what keeps it up to date: on PostgreSQL, the listener that
/// feeds other instances' revocations to the cache (it stops when dropped).
pub(crate) struct Connected {
    pub(crate) store: Store,
    pub(crate) listener: Option<InvalidationListener>,
}

#[derive(Clone)]
struct AppState {
    store: Store,
    /// Objects per organization: the API's "data" (kept in memory).
    objects: Arc<Mutex<HashMap<OrgId, Vec<Value>>>>,
    /// The OpenAPI document `/schema/` serves.
    openapi: Arc<Value>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_keyauth=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // One line naming the cause and what to change, not a Debug dump.
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // A bad setting is reported before anything starts.
    failed_attempts_per_minute()?;
    let peppers = peppers()?;
    let secret_scanning = secret_scanning_keys()?;
    // The address first: a busy port is reported before any database wait.
    let listener = listen().await?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;

    let database = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE.to_owned());
    let Connected {
        store,
        listener: _listening,
    } = connect(&database, peppers.clone()).await?;
    let demo = match store.list(&Owner::org("acme")).await {
        Ok(keys) if keys.is_empty() => Some(
            mint_demo_credentials(&store)
                .await
                .map_err(|e| database_failed(&database, e.as_ref()))?,
        ),
        Ok(_) => None,
        Err(e) => return Err(database_failed(&database, &e)),
    };

    let app = app_with(
        store,
        secret_scanning.as_ref().map(|(_, keys)| keys.clone()),
    );

    match &demo {
        Some(demo) => print_demo(demo, addr),
        None => print_existing(&database),
    }
    let version = peppers.current_version();
    if version > 0 {
        let earlier = std::env::var_os("KEYAUTH_EARLIER_PEPPER").is_some();
        let also = if earlier {
            ", keys under KEYAUTH_EARLIER_PEPPER still verify"
        } else {
            ""
        };
        println!("peppered hashes: keys are hashed under KEYAUTH_PEPPER, version {version}{also}");
    }
    if let Some((path, _)) = &secret_scanning {
        println!(
            "secret scanning: GitHub's reports go to POST http://{addr}{SECRET_SCANNING_PATH}, signed with the keys in {path}"
        );
    }
    println!("listening on http://{addr}");

    // The peer's address, which keys with `allowed_ips` are checked against.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| format!("the server stopped: {e}"))
}

/// Binds `KEYAUTH_ADDR` (default 127.0.0.1:3000).
async fn listen() -> Result<tokio::net::TcpListener, String> {
    let configured = std::env::var("KEYAUTH_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_owned());
    let addr: SocketAddr = configured.parse().map_err(|_| {
        format!(
            "KEYAUTH_ADDR={configured:?} is not an address; set KEYAUTH_ADDR to an IP address and port such as {DEFAULT_ADDR}"
        )
    })?;
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let mut other_port = addr;
        other_port.set_port(addr.port().checked_add(1).unwrap_or(3001));
        let (cause, suggestion) = match e.kind() {
            std::io::ErrorKind::AddrInUse => (
                "address already in use".to_owned(),
                format!("a free address such as {other_port}"),
            ),
            std::io::ErrorKind::AddrNotAvailable => (
                "no such address on this machine".to_owned(),
                format!("an address of this machine such as {DEFAULT_ADDR}"),
            ),
            std::io::ErrorKind::PermissionDenied => (
                "permission denied (ports below 1024 need privileges)".to_owned(),
                format!("a port above 1023 such as {DEFAULT_ADDR}"),
            ),
            _ => (
                e.to_string(),
                format!("another address such as {other_port}"),
            ),
        };
        format!("cannot listen on {addr}: {cause}; set KEYAUTH_ADDR to {suggestion}")
    })
}

/// Refused keys one client address may send in a minute before it is
/// answered 429 without a lookup.
const DEFAULT_FAILED_ATTEMPTS_PER_MINUTE: u32 = 60;

/// `KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE` (default 60; 0 turns the
/// failed-attempt throttle off).
pub(crate) fn failed_attempts_per_minute() -> Result<u32, String> {
    match std::env::var("KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE") {
        Err(_) => Ok(DEFAULT_FAILED_ATTEMPTS_PER_MINUTE),
        Ok(text) => text.trim().parse().map_err(|_| {
            format!(
                "KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE={text:?} is not a whole number; set it to a count such as {DEFAULT_FAILED_ATTEMPTS_PER_MINUTE}, or 0 to turn the throttle off"
            )
        }),
    }
}

/// `KEYAUTH_PEPPER`: a server secret (at least 32 bytes) under which keys
/// are hashed with HMAC-SHA256, as version `KEYAUTH_PEPPER_VERSION`
/// (default 1); unset, plain SHA-256. Keys hashed before (plain, or under
/// an earlier version named by `KEYAUTH_EARLIER_PEPPER` and
/// `KEYAUTH_EARLIER_PEPPER_VERSION`) still verify and move to this one on
/// their next use. The variables' bytes are the secret as they stand (a
/// base64 or hex text is not decoded). Never printed.
pub(crate) fn peppers() -> Result<Peppers, String> {
    let Ok(secret) = std::env::var("KEYAUTH_PEPPER") else {
        if std::env::var_os("KEYAUTH_EARLIER_PEPPER").is_some() {
            return Err("KEYAUTH_EARLIER_PEPPER is set without KEYAUTH_PEPPER; set KEYAUTH_PEPPER to the current pepper (the earlier one only verifies keys not yet moved)".to_owned());
        }
        return Ok(Peppers::none());
    };
    let version = |name: &str, default: u16| match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&v| v >= 1)
            .ok_or_else(|| {
                format!(
                    "{name}={text:?} is not a version; set it to a whole number from 1 to 65535"
                )
            }),
    };
    let current = version("KEYAUTH_PEPPER_VERSION", 1)?;
    let mut peppers = Peppers::new(current, secret.as_bytes()).map_err(|e| {
        format!(
            "KEYAUTH_PEPPER cannot be used: {e}; set it to a random secret of at least 32 bytes"
        )
    })?;
    if let Ok(earlier) = std::env::var("KEYAUTH_EARLIER_PEPPER") {
        let earlier_version = version(
            "KEYAUTH_EARLIER_PEPPER_VERSION",
            current.saturating_sub(1).max(1),
        )?;
        peppers = peppers
            .earlier(earlier_version, earlier.as_bytes())
            .map_err(|e| format!("KEYAUTH_EARLIER_PEPPER cannot be used: {e}; set it to the previous KEYAUTH_PEPPER with KEYAUTH_EARLIER_PEPPER_VERSION its version"))?;
    }
    Ok(peppers)
}

/// `SECRET_SCANNING_KEYS`: the file of GitHub's public keys and the keys
/// in it, or `None` when it is not set (or empty).
fn secret_scanning_keys() -> Result<Option<(String, PublicKeys)>, String> {
    let path = match std::env::var("SECRET_SCANNING_KEYS") {
        Ok(path) if !path.is_empty() => path,
        _ => return Ok(None),
    };
    let fix = "set SECRET_SCANNING_KEYS to a file holding the JSON of https://api.github.com/meta/public_keys/secret_scanning, or unset it";
    let json = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read SECRET_SCANNING_KEYS={path:?}: {e}; {fix}"))?;
    let keys = PublicKeys::from_json(&json).map_err(|e| {
        format!("SECRET_SCANNING_KEYS={path:?} does not hold GitHub's public keys: {e}; {fix}")
    })?;
    Ok(Some((path, keys)))
}

/// The API: its routes behind the key layer, with `store` for both, and
/// the failed-attempt throttle as the environment sets it (an address that
/// sent that many refused keys in a minute is answered 429 for the rest of
/// it). Without secret scanning: `examples/load.rs` measures it.
// The quickstart itself calls `app_with`.
#[allow(dead_code)]
pub(crate) fn app(store: Store) -> Router {
    app_with(store, None)
}

/// [`app`], with GitHub's secret scanning reports taken at
/// `/v1/secret-scanning` when its public keys are given.
pub(crate) fn app_with(store: Store, secret_scanning: Option<PublicKeys>) -> Router {
    let failed_attempts =
        failed_attempts_per_minute().unwrap_or(DEFAULT_FAILED_ATTEMPTS_PER_MINUTE);
    let extract = Extract::bearer_api_key_or_query();
    let state = AppState {
        // The same (cached) store, so a revocation through the API makes
        // the cache forget the key at once.
        store: store.clone(),
        objects: Arc::default(),
        openapi: Arc::new(openapi(&store, &extract)),
    };
    let mut app = routes(state);
    let mounted = secret_scanning.is_some();
    if let Some(keys) = secret_scanning {
        // The same (cached) store, so a leaked key is refused at once.
        app = app.nest(
            SECRET_SCANNING_PATH,
            SecretScanning::from_shared(store.clone(), keys).router(),
        );
    }
    let layer = KeyAuthLayer::new(store)
        .extract(extract)
        .org_header(ORG_HEADER)
        .store_timeout(STORE_TIMEOUT)
        .failed_attempts(failed_attempts, Duration::from_secs(60))
        .public("/")
        .public("/health")
        .public("/health/")
        .public("/schema")
        .public("/schema/")
        .public("/docs/*");
    // GitHub proves itself with its signature; it holds no key of ours.
    let layer = if mounted {
        layer.public(SECRET_SCANNING_PATH)
    } else {
        layer
    };
    app.layer(layer)
}

/// Opens the store at `database` behind a cache, giving up after
/// `CONNECT_TIMEOUT`. The cache's default positive TTL (30 s) bounds how
/// long a key revoked by another process sharing a SQLite file is still
/// accepted here; on PostgreSQL the listener makes the cache forget it at
/// once.
pub(crate) async fn connect(database: &str, peppers: Peppers) -> Result<Connected, String> {
    let postgres = database.starts_with("postgres://") || database.starts_with("postgresql://");
    let options = CacheOptions::default();
    let store_options = StoreOptions::default().peppers(peppers);
    let connecting = async {
        Ok::<Connected, StoreError>(if postgres {
            let store = PostgresStore::connect_with(database, store_options).await?;
            let cached = CachedStore::with_options(store.clone(), options);
            let listener = store.listen_for_invalidations(cached.invalidator()).await?;
            Connected {
                store: Arc::new(cached),
                listener: Some(listener),
            }
        } else {
            let store = SqliteStore::connect_with(database, store_options).await?;
            Connected {
                store: Arc::new(CachedStore::with_options(store, options)),
                listener: None,
            }
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(e)) => Err(database_failed(database, &e)),
        // sqlx retries a refused connection until its own timeout, so a
        // closed port and a silent host both end here.
        Err(_) => Err(format!(
            "the database at {} did not answer within {} s (is the server running, on that host and port?); set DATABASE_URL to a reachable database",
            redacted(database),
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

/// One line for a database failure, with the backend's own cause (the
/// store's message alone says only that the store failed).
fn database_failed(database: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let cause = match cause.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(e)) => e.message().to_owned(),
        Some(sqlx::Error::PoolTimedOut) => "no answer in time".to_owned(),
        _ => cause.to_string(),
    };
    match database.strip_prefix("sqlite://") {
        Some(path) => format!(
            "cannot open the SQLite database {path}: {cause}; check that its directory exists and is writable, or set DATABASE_URL to another sqlite:// file"
        ),
        None => format!(
            "cannot use the database at {}: {cause}; set DATABASE_URL to a reachable database",
            redacted(database)
        ),
    }
}

/// `url` with any password replaced by `***`, fit to print.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

fn routes(state: AppState) -> Router {
    let read = || RequireScopes::new("objects.read");
    let write = || RequireScopes::new("objects.write");
    Router::new()
        .route("/", get(home))
        // With and without the trailing slash: both are what people type.
        .route("/health", get(health))
        .route("/health/", get(health))
        .route("/schema", get(schema))
        .route("/schema/", get(schema))
        .route("/docs/", get(docs))
        .route("/docs/{*page}", get(docs))
        .route("/v1/whoami", get(whoami))
        .route(
            "/v1/objects",
            get(list_objects.layer(read())).post(create_object.layer(write())),
        )
        // The crate's key API: issue, list, show, rotate, revoke, within
        // the caller's bounds, each operation logged as an audit event.
        .nest(
            "/v1/keys",
            KeyApi::from_shared(state.store.clone()).router(),
        )
        // Unknown routes and methods answer in the same JSON shape as
        // every other error.
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "No such route.") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This route does not take that method.",
            )
        })
        .with_state(state)
}

/// An optional JSON body (none without a content type), whose rejections
/// (415 for another content type, 400 or 422 for bad JSON, 413 for too
/// much) are answered in the crate's JSON error shape instead of axum's
/// plain text.
struct JsonBody(Option<Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match Option::<Json<Value>>::from_request(request, state).await {
            Ok(body) => Ok(Self(body.map(|Json(body)| body))),
            Err(rejection) => Err(rejected(&rejection)),
        }
    }
}

fn rejected(rejection: &JsonRejection) -> Response {
    let status = rejection.status();
    let code = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        _ => "invalid_request",
    };
    error(status, code, rejection.body_text())
}

struct DemoCredentials {
    org_key: String,
    read_key: String,
    pat: String,
}

async fn mint_demo_credentials(
    store: &Store,
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
    // `-w` ends every answer with a newline (JSON bodies have none), and
    // shows the status where the comment promises one.
    let with_status = r"-w '\nHTTP %{http_code}\n'";
    println!("curl -s -w '\\n' {base}/v1/whoami -H \"Authorization: Bearer $ORG_KEY\"");
    println!("curl -s -w '\\n' {base}/v1/objects -H \"x-api-key: $READ_KEY\"");
    println!(
        "curl -s {with_status} -X POST {base}/v1/objects -H \"x-api-key: $READ_KEY\"    # 403: objects.read only"
    );
    println!(
        "curl -s -w '\\n' -X POST {base}/v1/objects -H \"Authorization: Bearer $PAT\" -H \"{ORG_HEADER}: $ORG_ID\" -H 'content-type: application/json' -d '{{\"name\":\"report\"}}'"
    );
    println!(
        "curl -s -w '\\n' -X POST {base}/v1/keys -H \"Authorization: Bearer $ORG_KEY\" -H 'content-type: application/json' -d '{{\"name\":\"ci\",\"scopes\":[\"objects.read\"],\"expires_in_seconds\":86400}}'"
    );
    println!(
        "curl -s -w '\\n' -X POST {base}/v1/keys -H \"Authorization: Bearer $ORG_KEY\" -H 'content-type: application/json' -d '{{\"name\":\"partner\",\"rate_limits\":[{{\"limit\":5,\"window_seconds\":60}}]}}'    # a key for 5 requests a minute: its sixth gets 429"
    );
    println!("curl -s -w '\\n' {base}/v1/keys -H \"Authorization: Bearer $ORG_KEY\"");
    println!(
        "curl -s -w '\\n' \"{base}/v1/whoami?api-key=$READ_KEY\"    # works, but URLs get logged"
    );
    println!("curl -s -i -w '\\n' {base}/v1/whoami    # 401");
}

fn print_existing(database: &str) {
    println!(
        "# This database already holds the demo keys; tokens are shown only once, when they are issued."
    );
    match database.strip_prefix("sqlite://") {
        Some(path) if !database.starts_with("postgres") => println!(
            "# To start over with new demo keys, stop the server, delete {path} (and {path}-wal, {path}-shm) and run it again."
        ),
        _ => println!(
            "# To start over with new demo keys, point DATABASE_URL at an empty database and run it again."
        ),
    }
}

async fn home(principal: Option<Principal>) -> Json<Value> {
    Json(json!({
        "service": "tower-keyauth quickstart",
        "authenticated_as": principal.as_ref().map(|p| p.key_id().as_str().to_owned()),
        "routes": ["/v1/whoami", "/v1/objects", "/v1/keys"],
    }))
}

/// The OpenAPI document of the whole API: its own routes, the crate's key
/// API under `/v1/keys`, and the security schemes of the layer's extraction
/// policy, generated when the app is built.
fn openapi(store: &Store, extract: &Extract) -> Value {
    let described = |summary: &str| json!({ "summary": summary, "responses": { "200": { "description": "OK" } } });
    let created = |summary: &str| json!({ "summary": summary, "responses": { "201": { "description": "Created" } } });
    let own: utoipa::openapi::OpenApi = serde_json::from_value(json!({
        "openapi": "3.1.0",
        "info": { "title": "tower-keyauth quickstart", "version": "1" },
        "paths": {
            "/": { "get": described("What this service is") },
            "/health/": { "get": described("Health check") },
            "/v1/whoami": { "get": described("The caller, as the layer sees it") },
            "/v1/objects": {
                "get": described("The organization's objects"),
                "post": created("Create an object")
            }
        }
    }))
    .expect("the quickstart's OpenAPI document is well-formed");
    let mut document = own;
    document.merge(KeyApi::from_shared(store.clone()).openapi("/v1/keys", extract));
    for (path, method, scope) in [
        ("/v1/whoami", utoipa::openapi::HttpMethod::Get, None),
        (
            "/v1/objects",
            utoipa::openapi::HttpMethod::Get,
            Some("objects.read"),
        ),
        (
            "/v1/objects",
            utoipa::openapi::HttpMethod::Post,
            Some("objects.write"),
        ),
    ] {
        let scopes: Vec<&str> = scope.into_iter().collect();
        tower_keyauth::openapi::require(&mut document, path, method, extract, &scopes);
    }
    serde_json::to_value(&document).expect("an OpenAPI document serializes")
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn schema(State(state): State<AppState>) -> Json<Value> {
    Json(Value::clone(&state.openapi))
}

async fn docs() -> &'static str {
    "Send your key as `Authorization: Bearer <key>`. Personal tokens also need `x-org-id`.\n"
}

async fn whoami(principal: Principal) -> Json<Principal> {
    Json(principal)
}

async fn list_objects(State(state): State<AppState>, principal: Principal) -> Json<Value> {
    let objects = state.objects.lock().unwrap_or_else(|e| e.into_inner());
    let mine = objects.get(principal.org()).cloned().unwrap_or_default();
    Json(json!({ "org": principal.org().as_str(), "objects": mine }))
}

async fn create_object(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody,
) -> (StatusCode, Json<Value>) {
    let name = body
        .as_ref()
        .and_then(|body| body.get("name").and_then(Value::as_str))
        .unwrap_or("untitled")
        .to_owned();
    let object = json!({ "name": name, "created_by": principal.key_id().as_str() });
    state
        .objects
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(principal.org().clone())
        .or_default()
        .push(object.clone());
    (StatusCode::CREATED, Json(object))
}

/// A JSON error in the same shape as the layer's.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({ "error": code, "message": message }))).into_response()
}
