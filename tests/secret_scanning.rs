//! The secret scanning endpoint as GitHub meets it: reports signed with a
//! P-256 key pair made here, sent through a real router behind the key
//! layer, and the keys they name tried again afterwards.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64ct::Encoding;
use common::{Reply, bearer, capture_tracing, get_with, send};
use http::{Request, StatusCode};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_keyauth::audit::{AuditAction, AuditEvent};
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::{KeyId, KeyKind, OrgId, UserId};
use tower_keyauth::secret_scanning::{
    MAX_ALERTS, MAX_BODY_BYTES, PublicKey, PublicKeys, SecretScanning, SignatureError,
};
use tower_keyauth::store::{
    IssuedKey, KeyListing, KeyPage, KeyRecord, KeySummary, LifecycleError, Membership, Owner,
    PageRequest, Rotation, StoreError,
};
use tower_keyauth::{
    KeyAuthLayer, KeyFormat, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal,
};

const MOUNT: &str = "/v1/secret-scanning";

/// GitHub's side: a key pair and the identifier it publishes the public
/// key under.
struct Github {
    signing: SigningKey,
    identifier: String,
}

impl Github {
    fn new(identifier: &str) -> Self {
        Self {
            signing: SigningKey::generate(),
            identifier: identifier.to_owned(),
        }
    }

    /// Its public key in the JSON shape GitHub publishes.
    fn published_keys(&self) -> String {
        let pem = self
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        json!({
            "public_keys": [
                { "key_identifier": "an-older-key", "key": Github::new("x").pem(), "is_current": false },
                { "key_identifier": self.identifier, "key": pem, "is_current": true },
            ]
        })
        .to_string()
    }

    fn pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    fn keys(&self) -> PublicKeys {
        PublicKeys::from_json(&self.published_keys()).unwrap()
    }

    /// The `Github-Public-Key-Signature` of `body`.
    fn sign(&self, body: &[u8]) -> String {
        let signature: DerSignature = self.signing.sign(body);
        let mut buffer = [0; 128];
        base64ct::Base64::encode(signature.as_bytes(), &mut buffer)
            .unwrap()
            .to_owned()
    }

    /// A report of `tokens`, signed.
    fn report(&self, tokens: &[&str]) -> Request<Body> {
        let body = report_body(tokens);
        let signature = self.sign(body.as_bytes());
        post(
            body,
            &[
                ("github-public-key-identifier", &self.identifier),
                ("github-public-key-signature", &signature),
            ],
        )
    }
}

/// The body GitHub sends for `tokens`, in its own compact form.
fn report_body(tokens: &[&str]) -> String {
    let alerts: Vec<Value> = tokens
        .iter()
        .map(|token| {
            json!({
                "token": token,
                "type": "acme_api_key",
                "url": "https://github.com/octocat/hello/blob/0123456/config.env",
                "source": "content",
            })
        })
        .collect();
    Value::Array(alerts).to_string()
}

/// `POST /v1/secret-scanning` with a JSON body and `headers`.
fn post(body: String, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post(MOUNT).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body)).unwrap()
}

/// The events an audit sink was given.
#[derive(Clone, Default)]
struct Audited(Arc<Mutex<Vec<AuditEvent>>>);

impl Audited {
    fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap().clone()
    }

    fn sink(&self) -> impl Fn(&AuditEvent) + Send + Sync + 'static {
        let events = self.0.clone();
        move |event: &AuditEvent| events.lock().unwrap().push(event.clone())
    }
}

/// A router with `/v1/whoami` behind the key layer and the endpoint public.
fn app(store: impl KeyLifecycle + Clone, endpoint: SecretScanning) -> Router {
    Router::new()
        .route(
            "/v1/whoami",
            get(|principal: Principal| async move { principal.key_id().to_string() }),
        )
        .nest(MOUNT, endpoint.router())
        .layer(KeyAuthLayer::new(store).public(MOUNT))
}

struct Setup {
    github: Github,
    store: MemoryStore,
    audited: Audited,
    app: Router,
}

fn setup_with(configure: impl FnOnce(SecretScanning) -> SecretScanning) -> Setup {
    let github = Github::new("90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a");
    let store = MemoryStore::new();
    let audited = Audited::default();
    let endpoint =
        configure(SecretScanning::new(store.clone(), github.keys()).audit(audited.sink()));
    let app = app(store.clone(), endpoint);
    Setup {
        github,
        store,
        audited,
        app,
    }
}

fn setup() -> Setup {
    setup_with(|endpoint| endpoint)
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn whoami(app: &Router, token: &str) -> StatusCode {
    send(
        app,
        get_with("/v1/whoami", &[("authorization", &bearer(token))]),
    )
    .await
    .status
}

async fn issue(store: &MemoryStore) -> IssuedKey {
    store.issue(NewKey::org("acme").name("ci")).await.unwrap()
}

fn labels(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|answer| answer["label"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_signed_report_revokes_the_key_and_labels_it_a_true_positive() {
    let (captured, _guard) = capture_tracing();
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup();
    let issued = issue(&store).await;
    let token = issued.token.expose_secret().to_owned();
    assert_eq!(whoami(&app, &token).await, StatusCode::OK);

    let reply = send(&app, github.report(&[&token])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "{:?}",
        reply.headers
    );
    assert_eq!(
        reply.json(),
        json!([{
            "token_hash": sha256_hex(&token),
            "token_type": "acme_api_key",
            "label": "true_positive",
        }])
    );

    // Its next request is refused.
    assert_eq!(whoami(&app, &token).await, StatusCode::UNAUTHORIZED);
    let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
    assert!(record.is_revoked());

    // Audited as leaked, then revoked, with the key's id and owner, no
    // actor, and no secret.
    let events = audited.events();
    let actions: Vec<&AuditAction> = events.iter().map(|event| &event.action).collect();
    assert_eq!(actions, [&AuditAction::Leaked, &AuditAction::Revoked]);
    for event in &events {
        assert_eq!(event.key_id, issued.record.id);
        assert_eq!(event.owner, Owner::org("acme"));
        assert!(event.actor.is_none());
    }
    assert_eq!(AuditAction::Leaked.as_str(), "leaked");
    let secret = token.split_once('.').unwrap().1;
    let shown = format!("{events:?}");
    assert!(!shown.contains(secret), "{shown}");

    // The log names the key, never the token.
    let log = captured.text();
    assert!(log.contains(issued.record.id.as_str()), "{log}");
    assert!(!log.contains(secret), "{log}");
}

#[tokio::test]
async fn refused_reports_change_nothing() {
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup();
    let issued = issue(&store).await;
    let token = issued.token.expose_secret().to_owned();
    let body = report_body(&[&token]);
    let signature = github.sign(body.as_bytes());
    let id = github.identifier.as_str();

    // Signed for one body, sent with another.
    let tampered = body.replace("acme_api_key", "acme_api_kez");
    // Signed by someone else under GitHub's identifier.
    let forged = Github::new(id).sign(body.as_bytes());
    // The signature of a report of nothing, on this report.
    let replayed = github.sign(b"[]");
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "tampered body",
            post(
                tampered,
                &[
                    ("github-public-key-identifier", id),
                    ("github-public-key-signature", &signature),
                ],
            ),
            StatusCode::FORBIDDEN,
            "invalid_signature",
        ),
        (
            "wrong signature",
            post(
                body.clone(),
                &[
                    ("github-public-key-identifier", id),
                    ("github-public-key-signature", &forged),
                ],
            ),
            StatusCode::FORBIDDEN,
            "invalid_signature",
        ),
        (
            "another body's signature",
            post(
                body.clone(),
                &[
                    ("github-public-key-identifier", id),
                    ("github-public-key-signature", &replayed),
                ],
            ),
            StatusCode::FORBIDDEN,
            "invalid_signature",
        ),
        (
            "unknown key id",
            post(
                body.clone(),
                &[
                    ("github-public-key-identifier", "bcb53661c06b4728"),
                    ("github-public-key-signature", &signature),
                ],
            ),
            StatusCode::FORBIDDEN,
            "invalid_signature",
        ),
        (
            "no key id header",
            post(body.clone(), &[("github-public-key-signature", &signature)]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no signature header",
            post(body.clone(), &[("github-public-key-identifier", id)]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no headers",
            post(body.clone(), &[]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "signature not base64",
            post(
                body.clone(),
                &[
                    ("github-public-key-identifier", id),
                    ("github-public-key-signature", "not base64!"),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "signature repeated",
            post(
                body.clone(),
                &[
                    ("github-public-key-identifier", id),
                    ("github-public-key-signature", &signature),
                    ("github-public-key-signature", &signature),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "not JSON",
            Request::post(MOUNT)
                .header("content-type", "text/plain")
                .header("github-public-key-identifier", id)
                .header("github-public-key-signature", &signature)
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (case, request, status, error) in cases {
        let reply = send(&app, request).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.text);
        assert_eq!(reply.error(), error, "{case}");
        assert!(!reply.text.contains(&token), "{case}: {}", reply.text);
    }

    // A GET is not a report.
    let reply = send(&app, get_with(MOUNT, &[])).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

    assert_eq!(whoami(&app, &token).await, StatusCode::OK);
    assert!(audited.events().is_empty());
    // The genuine report still works afterwards.
    assert_eq!(
        labels(&send(&app, github.report(&[&token])).await),
        ["true_positive"]
    );
}

#[tokio::test]
async fn false_positives_are_labelled_so_and_revoke_nothing() {
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup();
    let live = issue(&store).await;
    let live_token = live.token.expose_secret().to_owned();

    let format = KeyFormat::default();
    // Of our format, with a valid checksum, but no such key.
    let unknown = format.mint(KeyKind::Organization, None).unwrap();
    // A real key's id with another secret (a valid checksum all the same).
    let look_alike = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(KeyRecord::new(
        look_alike.id.clone(),
        KeyHash::of(&format!("ak_{}.the-real-secret", look_alike.id)),
        Owner::org("acme"),
    ));
    // A key revoked before it was reported, and one that expired.
    let revoked = issue(&store).await;
    store.revoke(&revoked.record.id).await.unwrap();
    let expired = store
        .issue(NewKey::org("acme").expires_at(SystemTime::now() - Duration::from_secs(60)))
        .await
        .unwrap();

    let tokens = [
        "ghp_notOneOfOurs0123456789abcdefghij",
        unknown.token.expose_secret(),
        look_alike.token.expose_secret(),
        revoked.token.expose_secret(),
        expired.token.expose_secret(),
        &format!("{live_token}x"),
    ];
    let reply = send(&app, github.report(&tokens)).await;
    assert_eq!(labels(&reply), ["false_positive"; 6]);
    for (answer, token) in reply.json().as_array().unwrap().iter().zip(tokens) {
        assert_eq!(answer["token_hash"], sha256_hex(token));
        assert_eq!(answer["token_type"], "acme_api_key");
    }

    assert_eq!(whoami(&app, &live_token).await, StatusCode::OK);
    assert!(audited.events().is_empty());
    assert!(
        store
            .find_key(&look_alike.id)
            .await
            .unwrap()
            .is_some_and(|record| !record.is_revoked())
    );
}

#[tokio::test]
async fn a_mixed_report_is_answered_in_order_and_a_repeated_token_once() {
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup();
    let first = issue(&store).await;
    let second = issue(&store).await;
    let (first_token, second_token) = (
        first.token.expose_secret().to_owned(),
        second.token.expose_secret().to_owned(),
    );

    let reply = send(
        &app,
        github.report(&[&first_token, "made-up", &first_token, &second_token]),
    )
    .await;
    assert_eq!(
        labels(&reply),
        [
            "true_positive",
            "false_positive",
            "true_positive",
            "true_positive"
        ]
    );
    assert_eq!(whoami(&app, &first_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&app, &second_token).await, StatusCode::UNAUTHORIZED);
    let leaked: Vec<KeyId> = audited
        .events()
        .into_iter()
        .filter(|event| event.action == AuditAction::Leaked)
        .map(|event| event.key_id)
        .collect();
    assert_eq!(leaked, [first.record.id.clone(), second.record.id.clone()]);

    // Delivered again: the keys are revoked now, so nothing is live.
    let again = send(&app, github.report(&[&first_token])).await;
    assert_eq!(labels(&again), ["false_positive"]);

    // An empty report is answered with an empty list.
    let empty = send(&app, github.report(&[])).await;
    assert_eq!(empty.json(), json!([]));
}

#[tokio::test]
async fn report_only_labels_and_audits_but_does_not_revoke() {
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup_with(|endpoint| endpoint.report_only(true));
    let issued = issue(&store).await;
    let token = issued.token.expose_secret().to_owned();

    let reply = send(&app, github.report(&[&token])).await;
    assert_eq!(labels(&reply), ["true_positive"]);
    assert_eq!(whoami(&app, &token).await, StatusCode::OK);
    let actions: Vec<AuditAction> = audited
        .events()
        .into_iter()
        .map(|event| event.action)
        .collect();
    assert_eq!(actions, [AuditAction::Leaked]);
}

#[tokio::test]
async fn personal_tokens_and_workspace_keys_are_revoked_too() {
    let Setup {
        github, store, app, ..
    } = setup();
    let pat = store
        .issue(NewKey::personal("ada").name("laptop"))
        .await
        .unwrap();
    let workspace = store
        .issue(NewKey::workspace("acme", "docs").name("reader"))
        .await
        .unwrap();
    let reply = send(
        &app,
        github.report(&[pat.token.expose_secret(), workspace.token.expose_secret()]),
    )
    .await;
    assert_eq!(labels(&reply), ["true_positive", "true_positive"]);
    for id in [&pat.record.id, &workspace.record.id] {
        assert!(store.find_key(id).await.unwrap().unwrap().is_revoked());
    }
}

#[tokio::test]
async fn an_over_large_report_is_refused_unread() {
    let Setup {
        github,
        store,
        audited,
        app,
    } = setup();
    let issued = issue(&store).await;
    let token = issued.token.expose_secret().to_owned();

    // More bytes than the bound, the live token first.
    let filler = "x".repeat(2000);
    let count = MAX_BODY_BYTES / 2000 + 1;
    let mut tokens = vec![token.as_str()];
    tokens.extend(std::iter::repeat_n(filler.as_str(), count));
    let body = report_body(&tokens);
    assert!(body.len() > MAX_BODY_BYTES);
    let signature = github.sign(body.as_bytes());
    let request = post(
        body,
        &[
            ("github-public-key-identifier", &github.identifier),
            ("github-public-key-signature", &signature),
        ],
    );
    let reply = send(&app, request).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error(), "payload_too_large");

    // More tokens than the bound, within the bytes.
    let mut tokens = vec![token.as_str()];
    tokens.extend(std::iter::repeat_n("t", MAX_ALERTS));
    let reply = send(&app, github.report(&tokens)).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );

    assert_eq!(whoami(&app, &token).await, StatusCode::OK);
    assert!(audited.events().is_empty());

    // At the bound, it is handled.
    tokens.pop();
    assert_eq!(
        labels(&send(&app, github.report(&tokens)).await).len(),
        MAX_ALERTS
    );
    assert_eq!(whoami(&app, &token).await, StatusCode::UNAUTHORIZED);
}

/// A `MemoryStore` whose key lookups can be made to fail.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
}

#[async_trait]
impl KeyStore for Flaky {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend(std::io::Error::other("database down")));
        }
        self.inner.find_key(id).await
    }
}

#[async_trait]
impl KeyLifecycle for Flaky {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        self.inner.issue(new_key).await
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError> {
        self.inner.list(owner).await
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        self.inner.list_in_org(org).await
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        self.inner.revoke(id).await
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError> {
        self.inner.rotate_with(id, rotation).await
    }

    async fn list_page(
        &self,
        listing: &KeyListing,
        page: &PageRequest,
    ) -> Result<KeyPage, LifecycleError> {
        self.inner.list_page(listing, page).await
    }

    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError> {
        self.inner.set_membership(user, org, membership).await
    }
}

#[tokio::test]
async fn a_failing_store_fails_closed_and_revokes_nothing() {
    let github = Github::new("k1");
    let store = Flaky::default();
    let audited = Audited::default();
    let app = app(
        store.clone(),
        SecretScanning::new(store.clone(), github.keys()).audit(audited.sink()),
    );
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let token = issued.token.expose_secret().to_owned();

    store.failing.store(true, Ordering::SeqCst);
    let reply = send(&app, github.report(&[&token])).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error(), "unavailable");
    assert!(reply.json().get(0).is_none(), "no labels: {}", reply.text);
    assert!(audited.events().is_empty());

    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(whoami(&app, &token).await, StatusCode::OK);
    // GitHub delivers again, and the key is revoked then.
    assert_eq!(
        labels(&send(&app, github.report(&[&token])).await),
        ["true_positive"]
    );
    assert_eq!(whoami(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[test]
fn public_keys_come_from_githubs_json_and_an_older_key_still_verifies() {
    let github = Github::new("k-current");
    let keys = github.keys();
    assert_eq!(keys.len(), 2);
    assert!(keys.get("k-current").unwrap().is_current());
    assert!(!keys.get("an-older-key").unwrap().is_current());
    let shown = format!("{keys:?}");
    assert!(
        shown.contains("k-current") && shown.contains("an-older-key"),
        "{shown}"
    );

    // A report signed with the key GitHub has just replaced verifies too.
    let older = Github::new("k-older");
    let keys = PublicKeys::new([
        PublicKey::from_pem("k-older", &older.pem())
            .unwrap()
            .current(false),
        PublicKey::from_pem("k-current", &github.pem()).unwrap(),
    ])
    .unwrap();
    let body = br#"[{"token":"t","type":"x"}]"#;
    assert_eq!(keys.verify("k-older", &older.sign(body), body), Ok(()));
    assert_eq!(keys.verify("k-current", &github.sign(body), body), Ok(()));
    assert_eq!(
        keys.verify("k-current", &older.sign(body), body),
        Err(SignatureError::Mismatch)
    );
}

#[tokio::test]
async fn a_key_under_an_unknown_pepper_version_fails_only_its_own_token() {
    let Setup {
        github, store, app, ..
    } = setup();
    let live = issue(&store).await;
    let live_token = live.token.expose_secret().to_owned();
    // A key stored under pepper version 5, which this store does not have.
    let format = KeyFormat::default();
    let stranded = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(KeyRecord::new(
        stranded.id.clone(),
        KeyHash::of(stranded.token.expose_secret()).with_version(5),
        Owner::org("acme"),
    ));
    let tokens = [stranded.token.expose_secret(), live_token.as_str()];
    let reply = send(&app, github.report(&tokens)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Not proven ours, so not revoked; the live key in the same report is.
    assert_eq!(labels(&reply), ["false_positive", "true_positive"]);
    assert_eq!(whoami(&app, &live_token).await, StatusCode::UNAUTHORIZED);
}
