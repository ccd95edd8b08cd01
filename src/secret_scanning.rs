//! An endpoint for GitHub's secret scanning partner program (feature
//! `secret-scanning`): GitHub finds your keys in public repositories,
//! gists, issues, discussions and npm packages and reports them here; the
//! endpoint checks GitHub's signature, looks each reported token up,
//! revokes the ones that still work and answers which were real.
//!
//! ```
//! use axum::Router;
//! use tower_keyauth::secret_scanning::{PublicKeys, SecretScanning};
//! use tower_keyauth::{KeyAuthLayer, MemoryStore};
//!
//! // GitHub's keys, saved from https://api.github.com/meta/public_keys/secret_scanning
//! let github_keys = r#"{"public_keys": [{
//!     "key_identifier": "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c",
//!     "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n",
//!     "is_current": true
//! }]}"#;
//! let keys = PublicKeys::from_json(github_keys).unwrap();
//!
//! let store = MemoryStore::new();
//! let app: Router = Router::new()
//!     .nest("/v1/secret-scanning", SecretScanning::new(store.clone(), keys).router())
//!     // GitHub signs its requests; it has no API key of yours.
//!     .layer(KeyAuthLayer::new(store).public("/v1/secret-scanning"));
//! # let _ = app;
//! ```
//!
//! Tell GitHub the endpoint's URL when you join the partner program, with
//! a regular expression for your tokens (their prefix, id and checksum make
//! one precise: `(?:ak|pat)_[A-Za-z0-9-]{1,64}\.[A-Za-z0-9]{28,}` for the
//! default [`KeyFormat`]).
//!
//! # Mounting it
//!
//! - **Public to the key layer.** GitHub authenticates by signing the body
//!   with its own key, not with one of your API keys: list the mount path
//!   with [`KeyAuthLayer::public`](crate::KeyAuthLayer::public), or the
//!   layer answers GitHub 401 `missing_credentials`.
//! - **The layer's store.** Give it the same store (or a clone sharing it)
//!   as the layer, so that a revocation reaches the layer's cache at once.
//! - **The layer's format.** Tokens are recognised with
//!   [`format`](SecretScanning::format), [`KeyFormat::default`] unless set;
//!   set the one the layer uses.
//!
//! # A request
//!
//! GitHub `POST`s a JSON array of the tokens it found,
//! `[{"token": "ak_…", "type": "acme_api_key", "url": "https://github.com/…", "source": "content"}]`,
//! signed with ECDSA P-256 over SHA-256 of the raw body: the
//! `Github-Public-Key-Signature` header holds the DER signature in base64,
//! and `Github-Public-Key-Identifier` names which of GitHub's
//! [`PublicKeys`] made it. The endpoint answers, in this order:
//!
//! | request | answer | `error` |
//! |---|---|---|
//! | a content type other than `application/json` | 415 | `unsupported_media_type` |
//! | either header missing, repeated or malformed (not base64 of a DER signature) | 400 | `invalid_request` |
//! | a key identifier that none of the public keys has | 403 | `invalid_signature` |
//! | a body over [`MAX_BODY_BYTES`] (1 MiB) | 413 | `payload_too_large` |
//! | a signature that does not verify the body as received | 403 | `invalid_signature` |
//! | a body that is not a JSON array of objects with a string `token` and `type` | 400 | `invalid_request` |
//! | more than [`MAX_ALERTS`] tokens | 413 | `payload_too_large` |
//! | the store failed | 503 | `unavailable` |
//! | otherwise | 200, one answer per token, in order | |
//!
//! A refused request changes nothing: the body is read only once the
//! headers name a known key, and nothing is looked up before the
//! signature verifies and the whole body is understood. 403 rather than
//! 401 because there is no `WWW-Authenticate` challenge to send: the
//! signature scheme is GitHub's.
//!
//! # The answer
//!
//! ```json
//! [{"token_hash": "<hex SHA-256 of the token>", "token_type": "acme_api_key", "label": "true_positive"}]
//! ```
//!
//! A token is a `true_positive` when it is a live key of yours: it has the
//! shape and checksum of the [`KeyFormat`], the store holds a key with its
//! id whose hash matches the whole token (a look-alike with a real id and a
//! wrong secret is not one), of a kind its prefix allows, neither revoked
//! nor expired. Everything else is a `false_positive`: made-up tokens,
//! other services' tokens, keys already revoked or expired (also when an
//! earlier delivery of the same report revoked them). A token reported
//! twice in one request gets the same label twice.
//!
//! Each true positive is revoked through [`KeyLifecycle::revoke`] (its
//! next request is refused with 401) unless the endpoint
//! [reports only](SecretScanning::report_only). A store that fails, when
//! looking keys up or revoking them, is answered 503 with no labels, so
//! that GitHub tries again: every lookup comes before the first
//! revocation, and a failed revocation leaves the key to the next
//! delivery.
//!
//! # Audit and logs
//!
//! Each true positive is reported to the [`AuditSink`] (default
//! [`TracingAudit`]) as [`AuditAction::Leaked`], followed by
//! [`AuditAction::Revoked`] once it is revoked, with no actor (no key of
//! yours made the report). Logs name key ids, never a token: a token
//! that is not of the format is only counted.
//!
//! # Bounds
//!
//! A request costs at most [`MAX_BODY_BYTES`] of body, [`MAX_ALERTS`]
//! store lookups and as many revocations, and memory linear in the body.
//! A slow store makes a slow answer: wrap the router in a timeout (tower's
//! `TimeoutLayer`) if the store can hang; GitHub retries what fails.

// Handlers answer `Result<Response, Response>`, the axum idiom; the
// response is built once per request, off any hot path.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use ::axum::Router;
use ::axum::body::to_bytes;
use ::axum::extract::{Request, State};
use ::axum::http::{HeaderMap, StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::post;
use base64ct::Encoding;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{AuditAction, AuditEvent, AuditSink, TracingAudit};
use crate::format::KeyFormat;
use crate::hash::KeyHash;
use crate::ids::KeyId;
use crate::record::KeyRecord;
use crate::store::{KeyLifecycle, KeyMatch, LifecycleError};

/// The most bytes a report's body may hold: 1 MiB, a few thousand tokens.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The most tokens one report may hold, each costing a store lookup (and
/// a revocation). GitHub sends a few at a time; a larger report is
/// refused with 413.
pub const MAX_ALERTS: usize = 1000;

/// The most public keys a [`PublicKeys`] holds (GitHub publishes a few).
pub const MAX_PUBLIC_KEYS: usize = 64;

/// The header naming the public key that signed the body.
pub const KEY_IDENTIFIER_HEADER: &str = "github-public-key-identifier";

/// The header holding the signature: base64 of a DER-encoded ECDSA P-256
/// signature of the SHA-256 of the raw body.
pub const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The longest key identifier, in bytes (GitHub's are 64 hex digits).
const MAX_IDENTIFIER_LEN: usize = 256;

/// A DER ECDSA P-256 signature: a sequence of two integers of at most 33
/// bytes each, 72 bytes in all.
const MAX_SIGNATURE_DER_LEN: usize = 72;

/// Its padded base64.
const MAX_SIGNATURE_BASE64_LEN: usize = MAX_SIGNATURE_DER_LEN.div_ceil(3) * 4;

/// One of GitHub's public keys: an ECDSA P-256 key and the identifier that
/// requests name it by.
///
/// ```
/// use tower_keyauth::secret_scanning::PublicKey;
/// let pem = "-----BEGIN PUBLIC KEY-----
/// MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd
/// AjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==
/// -----END PUBLIC KEY-----";
/// let key = PublicKey::from_pem("bcb53661c06b4728", pem).unwrap().current(false);
/// assert_eq!(key.identifier(), "bcb53661c06b4728");
/// assert!(!key.is_current());
/// assert!(PublicKey::from_pem("bcb53661c06b4728", "not a key").is_err());
/// ```
#[derive(Clone)]
pub struct PublicKey {
    identifier: Box<str>,
    key: VerifyingKey,
    is_current: bool,
}

impl PublicKey {
    /// The key in PEM (`-----BEGIN PUBLIC KEY-----`, a SubjectPublicKeyInfo
    /// of an ECDSA P-256 key), as GitHub publishes it, named `identifier`
    /// (1 to 256 visible ASCII characters). It is current unless
    /// [`current`](Self::current) says otherwise.
    pub fn from_pem(identifier: &str, pem: &str) -> Result<Self, PublicKeysError> {
        check_identifier(identifier)?;
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
            PublicKeysError::InvalidKey {
                identifier: identifier.to_owned(),
            }
        })?;
        Ok(Self {
            identifier: identifier.into(),
            key,
            is_current: true,
        })
    }

    /// Marks the key as GitHub's current one, or as one it used before
    /// (GitHub's `is_current`). Both verify: a report may be signed with a
    /// key GitHub has just replaced.
    pub fn current(mut self, is_current: bool) -> Self {
        self.is_current = is_current;
        self
    }

    /// The identifier that requests name the key by.
    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    /// Whether GitHub marks it as its current key.
    pub fn is_current(&self) -> bool {
        self.is_current
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("identifier", &self.identifier)
            .field("is_current", &self.is_current)
            .finish_non_exhaustive()
    }
}

fn check_identifier(identifier: &str) -> Result<(), PublicKeysError> {
    let valid = !identifier.is_empty()
        && identifier.len() <= MAX_IDENTIFIER_LEN
        && identifier.bytes().all(|byte| byte.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(PublicKeysError::InvalidIdentifier(
            identifier.chars().take(80).collect(),
        ))
    }
}

/// The public keys GitHub signs reports with, from the JSON it publishes
/// at <https://api.github.com/meta/public_keys/secret_scanning>.
///
/// Keep a copy with the application's configuration and update it when
/// GitHub adds a key: a report signed by a key not in it is refused (403)
/// until then. At least one and at most [`MAX_PUBLIC_KEYS`] keys, each
/// identifier once.
///
/// ```
/// use tower_keyauth::secret_scanning::{PublicKey, PublicKeys, SignatureError};
/// let json = r#"{"public_keys": [{
///     "key_identifier": "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c",
///     "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n",
///     "is_current": true
/// }]}"#;
/// let keys = PublicKeys::from_json(json).unwrap();
/// assert_eq!(keys.len(), 1);
///
/// // The signed sample request of GitHub's partner documentation.
/// let body = br#"[{"source":"commit","token":"some_token","type":"some_type","url":"https://example.com/base-repo-url/"}]"#;
/// let signature = "MEQCIQDaMKqrGnE27S0kgMrEK0eYBmyG0LeZismAEz/BgZyt7AIfXt9fErtRS4XaeSt/AO1RtBY66YcAdjxji410VQV4xg==";
/// let id = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";
/// assert_eq!(keys.verify(id, signature, body), Ok(()));
/// assert_eq!(keys.verify(id, signature, b"[]"), Err(SignatureError::Mismatch));
/// assert_eq!(keys.verify("another", signature, body), Err(SignatureError::UnknownKey));
///
/// // Keys parsed elsewhere:
/// let again = PublicKeys::new(keys.iter().cloned()).unwrap();
/// assert!(again.get(id).is_some_and(|key| key.is_current()));
/// ```
#[derive(Clone)]
pub struct PublicKeys {
    keys: Arc<[PublicKey]>,
}

impl PublicKeys {
    /// These keys. Fails without any, with more than [`MAX_PUBLIC_KEYS`],
    /// or with an identifier twice.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, PublicKeysError> {
        let mut collected: Vec<PublicKey> = Vec::new();
        for key in keys {
            if collected.len() == MAX_PUBLIC_KEYS {
                return Err(PublicKeysError::TooMany);
            }
            if collected
                .iter()
                .any(|seen| seen.identifier == key.identifier)
            {
                return Err(PublicKeysError::Duplicate(key.identifier.into()));
            }
            collected.push(key);
        }
        if collected.is_empty() {
            return Err(PublicKeysError::Empty);
        }
        Ok(Self {
            keys: collected.into(),
        })
    }

    /// Parses GitHub's JSON:
    /// `{"public_keys": [{"key_identifier": "…", "key": "-----BEGIN PUBLIC KEY-----…", "is_current": true}]}`.
    /// Other fields are ignored; `is_current` may be left out (current).
    pub fn from_json(json: &str) -> Result<Self, PublicKeysError> {
        let document: Value = serde_json::from_str(json)
            .map_err(|_| PublicKeysError::Malformed("it is not valid JSON".to_owned()))?;
        let Some(entries) = document.get("public_keys").and_then(Value::as_array) else {
            return Err(PublicKeysError::Malformed(
                "it needs a `public_keys` list".to_owned(),
            ));
        };
        if entries.len() > MAX_PUBLIC_KEYS {
            return Err(PublicKeysError::TooMany);
        }
        let keys = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let field = |name: &str| entry.get(name).and_then(Value::as_str);
                let missing = |name: &str| {
                    PublicKeysError::Malformed(format!(
                        "`public_keys[{index}].{name}` must be a string"
                    ))
                };
                let identifier =
                    field("key_identifier").ok_or_else(|| missing("key_identifier"))?;
                let pem = field("key").ok_or_else(|| missing("key"))?;
                let is_current = match entry.get("is_current") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(current)) => *current,
                    Some(_) => {
                        return Err(PublicKeysError::Malformed(format!(
                            "`public_keys[{index}].is_current` must be true or false"
                        )));
                    }
                };
                Ok(PublicKey::from_pem(identifier, pem)?.current(is_current))
            })
            .collect::<Result<Vec<_>, PublicKeysError>>()?;
        Self::new(keys)
    }

    /// The key named `identifier`.
    pub fn get(&self, identifier: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|key| &*key.identifier == identifier)
    }

    /// The keys, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }

    /// How many keys there are (at least one).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a `PublicKeys` holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks that `signature` (base64 of a DER-encoded ECDSA signature,
    /// the `Github-Public-Key-Signature` header) is the key `identifier`'s
    /// signature of `body`, the raw bytes as received (not re-encoded
    /// JSON). The endpoint does this for every request; it is here for
    /// applications that receive reports their own way.
    pub fn verify(
        &self,
        identifier: &str,
        signature: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let key = self.get(identifier).ok_or(SignatureError::UnknownKey)?;
        let signature = decode_signature(signature)?;
        verify_with(key, &signature, body)
    }
}

impl fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter()).finish()
    }
}

fn decode_signature(text: &str) -> Result<DerSignature, SignatureError> {
    if text.len() > MAX_SIGNATURE_BASE64_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut buffer = [0; MAX_SIGNATURE_DER_LEN];
    let der = base64ct::Base64::decode(text, &mut buffer).map_err(|_| SignatureError::Malformed)?;
    DerSignature::try_from(der).map_err(|_| SignatureError::Malformed)
}

fn verify_with(
    key: &PublicKey,
    signature: &DerSignature,
    body: &[u8],
) -> Result<(), SignatureError> {
    key.key
        .verify(body, signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// Why [`PublicKeys`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeysError {
    /// The JSON is not in GitHub's shape; the message says where.
    #[error("the public keys are not in GitHub's JSON shape: {0}")]
    Malformed(String),
    /// An identifier is empty, longer than 256 bytes, or holds anything but
    /// visible ASCII (it has to match a header).
    #[error("public key identifier {0:?} must be 1 to 256 visible ASCII characters")]
    InvalidIdentifier(String),
    /// A key is not an ECDSA P-256 public key in PEM.
    #[error(
        "public key {identifier} is not an ECDSA P-256 public key in PEM (-----BEGIN PUBLIC KEY-----)"
    )]
    InvalidKey {
        /// The key's identifier.
        identifier: String,
    },
    /// Two keys have the same identifier.
    #[error("public key identifier {0} appears twice")]
    Duplicate(String),
    /// There is no key, so no report could be verified.
    #[error("there are no public keys, so no report could be verified")]
    Empty,
    /// More than [`MAX_PUBLIC_KEYS`] keys.
    #[error("there are more than {MAX_PUBLIC_KEYS} public keys")]
    TooMany,
}

/// Why a signature was not accepted ([`PublicKeys::verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No public key has the identifier.
    #[error("no public key has this identifier")]
    UnknownKey,
    /// The signature is not base64 of a DER-encoded ECDSA signature.
    #[error("the signature is not base64 of a DER-encoded ECDSA signature")]
    Malformed,
    /// The signature is well-formed but does not verify the body.
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The endpoint: an axum router to mount (public to the key layer) where
/// GitHub sends its reports. See the [module](self) for what it does.
///
/// ```
/// use tower_keyauth::audit::{AuditAction, AuditEvent};
/// use tower_keyauth::secret_scanning::{PublicKeys, SecretScanning};
/// use tower_keyauth::{KeyFormat, MemoryStore};
///
/// # fn keys() -> PublicKeys {
/// #     let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n";
/// #     PublicKeys::new([tower_keyauth::secret_scanning::PublicKey::from_pem("k1", pem).unwrap()]).unwrap()
/// # }
/// let endpoint = SecretScanning::new(MemoryStore::new(), keys())
///     .format(KeyFormat::default())
///     .audit(|event: &AuditEvent| {
///         if event.action == AuditAction::Leaked {
///             println!("key {} of {} leaked", event.key_id, event.owner);
///         }
///     });
/// let router: axum::Router = endpoint.router();
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct SecretScanning {
    store: Arc<dyn KeyLifecycle>,
    keys: PublicKeys,
    format: KeyFormat,
    report_only: bool,
    audit: Arc<dyn AuditSink>,
}

impl SecretScanning {
    /// The endpoint over `store`, accepting reports signed by `keys`,
    /// recognising tokens of [`KeyFormat::default`], revoking leaked keys
    /// and auditing through [`TracingAudit`].
    pub fn new(store: impl KeyLifecycle, keys: PublicKeys) -> Self {
        Self::from_shared(Arc::new(store), keys)
    }

    /// The endpoint over a store already shared as a trait object.
    pub fn from_shared(store: Arc<dyn KeyLifecycle>, keys: PublicKeys) -> Self {
        Self {
            store,
            keys,
            format: KeyFormat::default(),
            report_only: false,
            audit: Arc::new(TracingAudit),
        }
    }

    /// The format of your tokens: give it the layer's. Tokens it does not
    /// recognise are false positives, with no store call.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// With `true`, labels and audits leaked keys but does not revoke them.
    ///
    /// # Warning
    ///
    /// A leaked key stays usable, by anyone who read it, until you revoke it
    /// yourself: GitHub finds keys in public places. Use it to watch what
    /// the endpoint would do before trusting it to revoke, and act on the
    /// [`AuditAction::Leaked`] events.
    pub fn report_only(mut self, report_only: bool) -> Self {
        self.report_only = report_only;
        self
    }

    /// Where the [`AuditAction::Leaked`] and [`AuditAction::Revoked`]
    /// events go (default [`TracingAudit`]).
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Arc::new(sink);
        self
    }

    /// The route, `POST /`, to [`nest`](Router::nest) under a path such as
    /// `/v1/secret-scanning` that the key layer treats as public. Other
    /// methods answer 405 in the JSON error shape.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        Router::new()
            .route("/", post(receive_report))
            .method_not_allowed_fallback(|| async {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "Send reports with POST.",
                )
            })
            .with_state(self)
    }
}

impl fmt::Debug for SecretScanning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretScanning")
            .field("keys", &self.keys)
            .field("format", &self.format)
            .field("report_only", &self.report_only)
            .finish_non_exhaustive()
    }
}

/// One reported token, as GitHub sent it.
struct Alert {
    token: String,
    token_type: String,
}

/// What a reported token turned out to be.
enum Verdict {
    /// A live key of ours: revoke it.
    Live(Box<KeyRecord>),
    /// Anything else; the reason goes to the log with the key id, if any.
    NotLive {
        key_id: Option<KeyId>,
        reason: &'static str,
    },
}

async fn receive_report(
    State(endpoint): State<SecretScanning>,
    request: Request,
) -> Result<Response, Response> {
    require_json(request.headers())?;
    let (identifier, signature) = signature_headers(request.headers())?;
    let Some(key) = endpoint.keys.get(&identifier) else {
        return Err(refused_signature(
            &identifier,
            "no public key has this identifier",
        ));
    };
    let body = to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large(format!("The body may hold at most {MAX_BODY_BYTES} bytes.")))?;
    if verify_with(key, &signature, &body).is_err() {
        return Err(refused_signature(
            &identifier,
            "the signature does not match the body",
        ));
    }
    let alerts = parse_alerts(&body)?;
    let answer = endpoint.handle(alerts).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response())
}

impl SecretScanning {
    /// Looks every token up first, then revokes the live ones: a store
    /// failure during the lookups changes nothing.
    async fn handle(&self, alerts: Vec<Alert>) -> Result<Value, Response> {
        let now = SystemTime::now();
        // One verdict per distinct token, so a token reported twice gets
        // one label (the second lookup would find it revoked).
        let mut verdicts: Vec<Verdict> = Vec::new();
        let mut distinct: HashMap<[u8; 32], usize> = HashMap::new();
        let mut answers: Vec<(String, usize)> = Vec::with_capacity(alerts.len());
        for alert in &alerts {
            let digest: [u8; 32] = Sha256::digest(alert.token.as_bytes()).into();
            let index = match distinct.entry(digest) {
                Entry::Occupied(seen) => *seen.get(),
                Entry::Vacant(slot) => {
                    verdicts.push(self.judge(&alert.token, now).await?);
                    *slot.insert(verdicts.len() - 1)
                }
            };
            answers.push((hex(&digest), index));
        }

        let mut not_ours = 0_usize;
        for verdict in &verdicts {
            match verdict {
                Verdict::Live(record) => self.act_on_leak(record).await?,
                Verdict::NotLive {
                    key_id: Some(key_id),
                    reason,
                } => tracing::info!(
                    key_id = %key_id,
                    reason,
                    "secret scanning: reported token is a false positive"
                ),
                Verdict::NotLive { key_id: None, .. } => not_ours += 1,
            }
        }
        let live = verdicts
            .iter()
            .filter(|verdict| matches!(verdict, Verdict::Live(_)))
            .count();
        tracing::info!(
            tokens = alerts.len(),
            live_keys = live,
            not_of_the_format = not_ours,
            report_only = self.report_only,
            "secret scanning: report handled"
        );

        let answer = alerts
            .iter()
            .zip(answers)
            .map(|(alert, (token_hash, index))| {
                let label = match verdicts[index] {
                    Verdict::Live(_) => "true_positive",
                    Verdict::NotLive { .. } => "false_positive",
                };
                json!({
                    "token_hash": token_hash,
                    "token_type": alert.token_type,
                    "label": label,
                })
            })
            .collect();
        Ok(Value::Array(answer))
    }

    /// Whether `token` is a live key of ours, exactly as the layer would
    /// decide whether it authenticates (but for tenancy and limits).
    async fn judge(&self, token: &str, now: SystemTime) -> Result<Verdict, Response> {
        let Ok(parsed) = self.format.parse(token) else {
            return Ok(Verdict::NotLive {
                key_id: None,
                reason: "not of the format",
            });
        };
        // Hashed as the layer hashes it: opaque tokens plain, any other
        // under the store's current pepper, then again under the record's
        // version when it is another.
        let peppers = self.store.peppers();
        let hash = if parsed.is_opaque() {
            KeyHash::of(token)
        } else {
            peppers.hash(token)
        };
        let id = parsed.lookup_id(&hash);
        let found = self
            .store
            .find_key_matching(&id, &hash)
            .await
            .map_err(|failure| store_failed(&failure.into()))?;
        let found = match found {
            KeyMatch::OtherVersion(record) => match peppers.verify(&record.hash, token) {
                Some(true) => KeyMatch::Matches(record),
                Some(false) => KeyMatch::Differs,
                // A key under a pepper version the store no longer has
                // cannot be verified, so it is not revoked on an unproven
                // token (anyone can publish a look-alike with a real id);
                // it cannot be used either. That token alone is answered,
                // the rest of the report goes on.
                None => {
                    if !record.is_revoked() && !record.is_expired_at(now) {
                        tracing::warn!(
                            key_id = %record.id,
                            hash_version = record.hash.version(),
                            "secret scanning: a reported key is hashed under a pepper version the store lacks; it cannot be verified, so it is not revoked (configure that version as an earlier pepper)"
                        );
                    }
                    return Ok(Verdict::NotLive {
                        key_id: Some(id),
                        reason: "hashed under an unknown pepper version",
                    });
                }
            },
            decided => decided,
        };
        let reason = match found {
            KeyMatch::Matches(record) if !parsed.accepts(record.kind()) => {
                "wrong kind for its prefix"
            }
            KeyMatch::Matches(record) if record.is_revoked() => "revoked",
            KeyMatch::Matches(record) if record.is_expired_at(now) => "expired",
            KeyMatch::Matches(record) => return Ok(Verdict::Live(Box::new(record))),
            KeyMatch::Differs | KeyMatch::OtherVersion(_) => "wrong secret",
            KeyMatch::Unknown => "unknown key",
        };
        Ok(Verdict::NotLive {
            key_id: Some(id),
            reason,
        })
    }

    /// Audits a live leaked key and, unless reporting only, revokes it.
    async fn act_on_leak(&self, record: &KeyRecord) -> Result<(), Response> {
        self.audit.record(&AuditEvent::new(
            AuditAction::Leaked,
            record.id.clone(),
            record.owner.clone(),
        ));
        if self.report_only {
            tracing::warn!(
                key_id = %record.id,
                "secret scanning: a live key leaked; reporting only, so it stays usable"
            );
            return Ok(());
        }
        self.store
            .revoke(&record.id)
            .await
            .map_err(|failure| store_failed(&failure))?;
        self.audit.record(&AuditEvent::new(
            AuditAction::Revoked,
            record.id.clone(),
            record.owner.clone(),
        ));
        tracing::warn!(key_id = %record.id, "secret scanning: a live key leaked and was revoked");
        Ok(())
    }
}

/// 415 unless the content type is `application/json` (parameters such as
/// `charset` allowed).
fn require_json(headers: &HeaderMap) -> Result<(), Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the report with `content-type: application/json`.",
        ))
    }
}

/// The key identifier and the decoded signature, each from exactly one
/// header; 400 naming the header otherwise.
fn signature_headers(headers: &HeaderMap) -> Result<(String, DerSignature), Response> {
    let identifier = single_header(headers, KEY_IDENTIFIER_HEADER)?;
    if check_identifier(identifier).is_err() {
        return Err(invalid(format!(
            "`{KEY_IDENTIFIER_HEADER}` must be 1 to {MAX_IDENTIFIER_LEN} visible ASCII characters."
        )));
    }
    let signature = decode_signature(single_header(headers, SIGNATURE_HEADER)?).map_err(|_| {
        invalid(format!(
            "`{SIGNATURE_HEADER}` must be base64 of a DER-encoded ECDSA signature."
        ))
    })?;
    Ok((identifier.to_owned(), signature))
}

fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Response> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .map_err(|_| invalid(format!("`{name}` must be ASCII."))),
        (None, _) => Err(invalid(format!(
            "The `{name}` header is missing: reports are signed by GitHub."
        ))),
        (Some(_), Some(_)) => Err(invalid(format!("The `{name}` header is repeated."))),
    }
}

/// The reported tokens: a JSON array of objects, each with a string
/// `token` and `type` (other fields, `url` and `source`, are ignored). The
/// messages never quote the body: it holds secrets.
fn parse_alerts(body: &[u8]) -> Result<Vec<Alert>, Response> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("The body must be a JSON array of reported tokens."));
    };
    if items.len() > MAX_ALERTS {
        return Err(too_large(format!(
            "A report may hold at most {MAX_ALERTS} tokens; this one holds {}.",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let Value::Object(mut item) = item else {
                return Err(invalid(format!("Item {index} must be a JSON object.")));
            };
            let mut string = |name: &str| match item.remove(name) {
                Some(Value::String(text)) => Ok(text),
                _ => Err(invalid(format!("Item {index} needs a string `{name}`."))),
            };
            Ok(Alert {
                token: string("token")?,
                token_type: string("type")?,
            })
        })
        .collect()
}

/// 64 lowercase hexadecimal digits.
fn hex(digest: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(64);
    for byte in digest {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn refused_signature(identifier: &str, reason: &'static str) -> Response {
    tracing::warn!(
        key_identifier = identifier,
        reason,
        "secret scanning: report refused"
    );
    error(
        StatusCode::FORBIDDEN,
        "invalid_signature",
        "The report is not signed by a known GitHub public key.",
    )
}

fn store_failed(failure: &LifecycleError) -> Response {
    tracing::error!(error = %failure, "key store failed in the secret scanning endpoint");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "The key store is unavailable. Try again later.",
    )
}

fn too_large(message: String) -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// A JSON error in the crate's shape.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": code, "message": message }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published key for the sample request of its partner
    /// documentation.
    const GITHUB_KEY_ID: &str = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";
    const GITHUB_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYAGMWO8XgCamYKMJS6jc/qgvSlAd\nAjPuDPRcXU22YxgBrz+zoN19MzuRyW87qEt9/AmtoNP5GrobzUvQSyJFVw==\n-----END PUBLIC KEY-----\n";
    const SAMPLE_BODY: &[u8] = br#"[{"source":"commit","token":"some_token","type":"some_type","url":"https://example.com/base-repo-url/"}]"#;
    const SAMPLE_SIGNATURE: &str = "MEQCIQDaMKqrGnE27S0kgMrEK0eYBmyG0LeZismAEz/BgZyt7AIfXt9fErtRS4XaeSt/AO1RtBY66YcAdjxji410VQV4xg==";

    fn github_keys() -> PublicKeys {
        PublicKeys::new([PublicKey::from_pem(GITHUB_KEY_ID, GITHUB_KEY).unwrap()]).unwrap()
    }

    #[test]
    fn githubs_signed_sample_verifies_and_nothing_else_does() {
        let keys = github_keys();
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, SAMPLE_SIGNATURE, SAMPLE_BODY),
            Ok(())
        );
        // The same JSON with a space: the raw body is what was signed.
        let respaced = String::from_utf8(SAMPLE_BODY.to_vec())
            .unwrap()
            .replace(",\"token\"", ", \"token\"");
        assert_eq!(
            keys.verify(GITHUB_KEY_ID, SAMPLE_SIGNATURE, respaced.as_bytes()),
            Err(SignatureError::Mismatch)
        );
        let mut flipped = SAMPLE_SIGNATURE.to_owned();
        flipped.replace_range(20..21, "A");
        assert_ne!(keys.verify(GITHUB_KEY_ID, &flipped, SAMPLE_BODY), Ok(()));
        for malformed in ["", "not base64!", "AAAA", &"A".repeat(200)] {
            assert_eq!(
                keys.verify(GITHUB_KEY_ID, malformed, SAMPLE_BODY),
                Err(SignatureError::Malformed),
                "{malformed:?}"
            );
        }
        assert_eq!(
            keys.verify("90a421169f0a", SAMPLE_SIGNATURE, SAMPLE_BODY),
            Err(SignatureError::UnknownKey)
        );
    }

    #[test]
    fn the_largest_der_signature_fits_the_bounds() {
        assert_eq!(MAX_SIGNATURE_BASE64_LEN, 96);
        assert!(SAMPLE_SIGNATURE.len() <= MAX_SIGNATURE_BASE64_LEN);
    }

    #[test]
    fn public_keys_parse_githubs_json_and_refuse_anything_else() {
        let json = |entries: &str| format!(r#"{{"public_keys": [{entries}]}}"#);
        let entry = |id: &str, current: &str| {
            format!(
                r#"{{"key_identifier": "{id}", "key": {}, "is_current": {current}}}"#,
                serde_json::to_string(GITHUB_KEY).unwrap()
            )
        };
        let keys = PublicKeys::from_json(&json(&format!(
            "{}, {}",
            entry("old", "false"),
            entry("new", "true")
        )))
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert!(!keys.get("old").unwrap().is_current());
        assert!(keys.get("new").unwrap().is_current());
        assert!(keys.get("other").is_none());

        let refused = |text: &str| PublicKeys::from_json(text).unwrap_err();
        assert!(matches!(refused("not json"), PublicKeysError::Malformed(_)));
        assert!(matches!(refused("[]"), PublicKeysError::Malformed(_)));
        assert_eq!(refused(&json("")), PublicKeysError::Empty);
        assert!(matches!(
            refused(&json(&format!("{}, {}", entry("k", "true"), entry("k", "false")))),
            PublicKeysError::Duplicate(id) if id == "k"
        ));
        assert!(matches!(
            refused(&json(r#"{"key_identifier": "k", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}"#)),
            PublicKeysError::InvalidKey { identifier } if identifier == "k"
        ));
        assert!(matches!(
            refused(&json(r#"{"key_identifier": "k"}"#)),
            PublicKeysError::Malformed(message) if message.contains("public_keys[0].key")
        ));
        assert!(matches!(
            refused(&json(&entry("two words", "true"))),
            PublicKeysError::InvalidIdentifier(_)
        ));
        assert!(matches!(
            refused(&json(&entry("k", "\"yes\""))),
            PublicKeysError::Malformed(_)
        ));
        let many: Vec<String> = (0..=MAX_PUBLIC_KEYS)
            .map(|n| entry(&format!("k{n}"), "true"))
            .collect();
        assert_eq!(refused(&json(&many.join(","))), PublicKeysError::TooMany);
    }

    #[test]
    fn alerts_need_a_token_and_a_type_and_are_bounded() {
        let alerts =
            parse_alerts(br#"[{"token":"t1","type":"acme","url":"","source":"content"}]"#).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].token.as_str(), alerts[0].token_type.as_str()),
            ("t1", "acme")
        );
        assert!(parse_alerts(b"[]").unwrap().is_empty());
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"["t1"]"#,
            br#"[{"type":"acme"}]"#,
            br#"[{"token":"t1"}]"#,
            br#"[{"token":1,"type":"acme"}]"#,
        ] {
            let refused = parse_alerts(bad).err().unwrap();
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        }
        let many = format!(
            "[{}]",
            vec![r#"{"token":"t","type":"x"}"#; MAX_ALERTS + 1].join(",")
        );
        let refused = parse_alerts(many.as_bytes()).err().unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn token_hash_is_the_hex_sha256_of_the_token() {
        let digest: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(
            hex(&digest),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_public_types_are_send_and_sync() {
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        send_sync::<SecretScanning>();
        send_sync::<PublicKeys>();
        send_sync::<PublicKey>();
    }
}
