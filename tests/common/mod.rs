//! Helpers shared by the integration tests: a router like the quickstart's,
//! stores that count or fail, and a way to send a request and read the
//! answer.

#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod example;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_keyauth::ids::{KeyId, OrgId, UserId};
use tower_keyauth::store::{KeyRecord, Membership, StoreError};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal};

/// The principal as the quickstart's `/v1/whoami` shows it.
pub fn principal_json(principal: &Principal) -> Value {
    serde_json::to_value(principal).unwrap()
}

/// Routes: `/`, `/health/` and `/docs/*` public; `/v1/whoami` shows the
/// principal; `/v1/echo` shows the URI and headers the handler received;
/// `/v1/maybe` takes an `Option<Principal>`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/",
            get(|principal: Option<Principal>| async move {
                axum::Json(json!({ "principal": principal.as_ref().map(principal_json) }))
            }),
        )
        .route("/health/", get(|| async { "ok" }))
        .route("/docs/", get(|| async { "docs" }))
        .route("/docs/{*rest}", get(|| async { "docs" }))
        .route(
            "/v1/whoami",
            get(|principal: Principal| async move { axum::Json(principal_json(&principal)) }),
        )
        .route(
            "/v1/echo",
            get(|request: Request<Body>| async move {
                let headers: serde_json::Map<String, Value> = request
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            Value::from(value.to_str().unwrap_or("<binary>")),
                        )
                    })
                    .collect();
                axum::Json(json!({ "uri": request.uri().to_string(), "headers": headers }))
            }),
        )
}

/// The routes behind `layer`.
pub fn app<S: KeyStore>(layer: KeyAuthLayer<S>) -> Router {
    routes().layer(layer)
}

/// The default public paths of the quickstart.
pub fn with_public_paths<S: KeyStore>(layer: KeyAuthLayer<S>) -> KeyAuthLayer<S> {
    layer.public("/").public("/health/").public("/docs/*")
}

/// An answer, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    pub fn challenge(&self) -> Option<String> {
        self.headers
            .get(http::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// `GET uri` with the given headers.
pub fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

/// `GET path` with `Authorization: Bearer <token>`.
pub async fn get_bearer(app: &Router, path: &str, token: &str) -> Reply {
    send(app, get_with(path, &[("authorization", &bearer(token))])).await
}

/// `token` with its last character changed (never to itself).
pub fn with_typo(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    let replacement = if last == "x" { 'y' } else { 'x' };
    format!("{head}{replacement}")
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Counts the calls that reach the wrapped store, and can be told to
/// answer slowly or to fail. Does not answer `find_key_now`, so every
/// lookup takes the asynchronous path.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    pub inner: S,
    pub finds: AtomicUsize,
    pub memberships: AtomicUsize,
    pub delay: Option<std::time::Duration>,
    pub failing: std::sync::atomic::AtomicBool,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> Arc<Self> {
        Self::with_delay(inner, None)
    }

    /// Every lookup of keys takes `delay`.
    pub fn slow(inner: S, delay: std::time::Duration) -> Arc<Self> {
        Self::with_delay(inner, Some(delay))
    }

    fn with_delay(inner: S, delay: Option<std::time::Duration>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            finds: AtomicUsize::new(0),
            memberships: AtomicUsize::new(0),
            delay,
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, key lookups fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn finds(&self) -> usize {
        self.finds.load(Ordering::SeqCst)
    }

    pub fn memberships(&self) -> usize {
        self.memberships.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<S: KeyStore> KeyStore for CountingStore<S> {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.finds.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other("database down")));
        }
        self.inner.find_key(id).await
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        self.memberships.fetch_add(1, Ordering::SeqCst);
        self.inner.membership(user, org).await
    }
}

/// A store whose backend is down.
#[derive(Debug, Default)]
pub struct FailingStore;

#[async_trait]
impl KeyStore for FailingStore {
    async fn find_key(&self, _id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::backend(std::io::Error::other(
            "connection refused",
        )))
    }
}

/// A store that finds keys but cannot answer membership questions.
#[derive(Debug)]
pub struct MembershipDown(pub MemoryStore);

#[async_trait]
impl KeyStore for MembershipDown {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.0.find_key(id).await
    }

    async fn membership(&self, _: &UserId, _: &OrgId) -> Result<Option<Membership>, StoreError> {
        Err(StoreError::Timeout)
    }
}

/// A store with the quickstart's demo credentials.
pub struct Demo {
    pub store: MemoryStore,
    pub org_key: String,
    pub org_key_id: KeyId,
    pub read_key: String,
    pub pat: String,
}

impl Demo {
    /// `GET /v1/whoami` with the personal token, acting for org "acme".
    pub fn pat_whoami(&self) -> Request<Body> {
        get_with(
            "/v1/whoami",
            &[("authorization", &bearer(&self.pat)), ("x-org-id", "acme")],
        )
    }
}

pub async fn demo() -> Demo {
    let store = MemoryStore::new();
    let org = store
        .issue(NewKey::org("acme").name("org key"))
        .await
        .unwrap();
    let read = store
        .issue(
            NewKey::workspace("acme", "docs")
                .name("docs reader")
                .scopes(tower_keyauth::Scopes::parse(["objects.read"]).unwrap()),
        )
        .await
        .unwrap();
    let pat = store
        .issue(NewKey::personal("ada").name("ada's token"))
        .await
        .unwrap();
    store
        .set_membership(
            &UserId::from("ada"),
            &OrgId::from("acme"),
            Some(Membership::new(
                tower_keyauth::Scopes::parse(["objects.read", "objects.write"]).unwrap(),
            )),
        )
        .await
        .unwrap();
    Demo {
        org_key: org.token.expose_secret().to_owned(),
        org_key_id: org.record.id.clone(),
        read_key: read.token.expose_secret().to_owned(),
        pat: pat.token.expose_secret().to_owned(),
        store,
    }
}

/// A wall clock for `StoreOptions::clock` and `KeyAuthLayer::clock` that a
/// test moves forward instead of waiting: the real time plus what was
/// advanced so far. Real time rather than a frozen one, because
/// `NewKey::expires_in` reads the real clock.
#[derive(Clone, Default)]
pub struct TestClock(Arc<std::sync::atomic::AtomicU64>);

impl TestClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock `by` ahead.
    pub fn advance(&self, by: std::time::Duration) {
        let nanos = u64::try_from(by.as_nanos()).expect("a shorter advance");
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl tower_keyauth::clock::Clock for TestClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
            + std::time::Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// Tokio's clock as wall time, for `CacheOptions::clock`: it stands still
/// while tokio's time is paused, and `tokio::time::advance` moves it, so a
/// test ages cached answers without waiting.
pub fn tokio_clock() -> impl tower_keyauth::clock::Clock {
    let (wall, start) = (std::time::SystemTime::now(), tokio::time::Instant::now());
    move || wall + start.elapsed()
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::AtomicU64;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "keyauth-{label}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The variable naming the PostgreSQL server for tests. CI always sets it.
pub const POSTGRES_URL_VAR: &str = "KEYAUTH_TEST_POSTGRES_URL";

/// The URL of the PostgreSQL server for tests, or `None` when
/// `KEYAUTH_TEST_POSTGRES_URL` is unset or empty.
pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

/// The URL, for a trial that needs the server. Such trials only run
/// without it under `--include-ignored`, and then fail rather than pass.
pub fn require_postgres_url() -> String {
    postgres_url().unwrap_or_else(|| panic!("this test needs {POSTGRES_URL_VAR}, which is unset"))
}

/// `trial` as a test of the PostgreSQL server: ignored, with the reason
/// shown as its kind and counted in the summary, when the server is not
/// named. A named server that does not answer fails the trial instead.
pub fn needs_postgres(trial: libtest_mimic::Trial) -> libtest_mimic::Trial {
    if postgres_url().is_some() {
        trial
    } else {
        trial
            .with_ignored_flag(true)
            .with_kind("needs KEYAUTH_TEST_POSTGRES_URL")
    }
}

/// Runs a test body on its own multi-thread runtime with two workers, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` would.
pub fn run_multi_thread(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

/// Runs a test body on its own current-thread runtime, as `#[tokio::test]`
/// would.
pub fn run_current_thread(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

/// A fresh, empty schema on the test server, and connect options that use
/// it, so tests never see each other's keys.
pub async fn fresh_postgres_schema(url: &str) -> sqlx::postgres::PgConnectOptions {
    use std::str::FromStr;
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "keyauth_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    run_on_postgres(url, format!("CREATE SCHEMA {schema}")).await;
    sqlx::postgres::PgConnectOptions::from_str(url)
        .unwrap()
        .options([("search_path", schema.as_str())])
}

/// A fresh, empty database on the test server; returns its URL.
pub async fn fresh_postgres_database(url: &str) -> String {
    let name = format!(
        "keyauth_test_db_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    run_on_postgres(url, format!("CREATE DATABASE {name}")).await;
    let (server, _database) = url.rsplit_once('/').expect("a URL ending in /<database>");
    format!("{server}/{name}")
}

/// Runs one statement on the test server.
async fn run_on_postgres(url: &str, statement: String) {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        // A named server that does not answer fails the test, and soon.
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| {
            panic!("{POSTGRES_URL_VAR} is set but the server does not answer: {e}")
        });
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}

/// Everything a `tracing` subscriber writes, kept for a test to read.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every `tracing` event of this thread, down to TRACE, until the
/// guard is dropped.
pub fn capture_tracing() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// What a test writes behind a SQL store's back into one key's row.
#[allow(dead_code)]
pub enum Tamper {
    /// One scope more than a set may hold.
    TooManyScopes,
    /// A single scope far longer than a scope may be.
    OneOverlongScope,
    /// Exactly as many scopes as a set may hold.
    ScopesAtTheBound,
    /// A stored hash that no token has.
    WrongHash,
}

/// `count` distinct valid scope names.
#[allow(dead_code)]
pub fn scope_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("objects.n{i:05}")).collect()
}

/// A stored record beyond the scope bound is corrupt: its own token gets a
/// 503 (logged, never a pass), while a token whose hash does not match is
/// refused on the hash alone, before the scopes are read. `tamper` writes
/// the row as the store's dialect needs.
#[allow(dead_code)]
pub async fn a_record_beyond_the_scope_bound_is_corrupt<S, F, Fut>(store: S, tamper: F)
where
    S: tower_keyauth::KeyLifecycle + Clone,
    F: Fn(Tamper, KeyId) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    let forged = store.issue(NewKey::org("acme")).await.unwrap();
    tamper(Tamper::TooManyScopes, valid.record.id.clone()).await;
    tamper(Tamper::TooManyScopes, forged.record.id.clone()).await;
    // The forged key's token now names a real id with the wrong secret.
    tamper(Tamper::WrongHash, forged.record.id.clone()).await;

    let app = app(KeyAuthLayer::new(store));
    let (logs, _guard) = capture_tracing();
    let reply = get_bearer(&app, "/v1/whoami", forged.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(reply.error(), "invalid_token");
    assert!(!logs.text().contains("unexpected data"), "{}", logs.text());

    let reply = get_bearer(&app, "/v1/whoami", valid.token.expose_secret()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert!(
        logs.text().contains("at most 256 scopes"),
        "{}",
        logs.text()
    );

    tamper(Tamper::OneOverlongScope, valid.record.id.clone()).await;
    let reply = get_bearer(&app, "/v1/whoami", valid.token.expose_secret()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );

    tamper(Tamper::ScopesAtTheBound, valid.record.id.clone()).await;
    let reply = get_bearer(&app, "/v1/whoami", valid.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json()["scopes"].as_array().unwrap().len(),
        tower_keyauth::Scopes::MAX_COUNT
    );
}
