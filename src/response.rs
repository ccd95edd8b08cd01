//! Every answer to a refused request is built here: the RFC 6750
//! `WWW-Authenticate` challenges, the JSON bodies, the gRPC trailers-only
//! responses, and the 500 for a route the layer does not cover.
//!
//! An [`AuthError`] says what went wrong; a [`Responder`] turns it into a
//! response. Each layer prepares its answers once, per
//! [kind](crate::AuthErrorKind), in its realm, and hands every responder a
//! [`Refusal`]: the error with those prepared parts.

use std::fmt;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{Extensions, HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::{AuthError, AuthErrorKind, Message};

/// Shapes the response for a refused request.
///
/// The layer calls [`respond`](Responder::respond) for HTTP callers and
/// [`respond_grpc`](Responder::respond_grpc) for gRPC callers (a
/// `content-type` of `application/grpc…`). Only the HTTP side usually needs
/// changing; the gRPC side defaults to the standard trailers-only answer.
///
/// A closure is a responder too:
///
/// ```
/// use bytes::Bytes;
/// use http::Response;
/// use http::request::Parts;
/// use tower_keyauth::response::Refusal;
/// use tower_keyauth::{KeyAuthLayer, MemoryStore};
///
/// let layer = KeyAuthLayer::new(MemoryStore::new()).responder(
///     |refusal: &Refusal<'_>, _request: &Parts| {
///         let error = refusal.error();
///         let mut response = Response::new(Bytes::from(format!("denied: {}", error.error_code())));
///         *response.status_mut() = error.status();
///         if let Some(challenge) = refusal.www_authenticate() {
///             response.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge);
///         }
///         response
///     },
/// );
/// # let _ = layer;
/// ```
pub trait Responder: Send + Sync + 'static {
    /// The response for an HTTP caller.
    fn respond(&self, refusal: &Refusal<'_>, request: &Parts) -> Response<Bytes>;

    /// The response for a gRPC caller. Defaults to
    /// [`DefaultResponder::grpc`].
    fn respond_grpc(&self, refusal: &Refusal<'_>, request: &Parts) -> Response<Bytes> {
        let _ = request;
        DefaultResponder::grpc(refusal)
    }
}

impl<F> Responder for F
where
    F: Fn(&Refusal<'_>, &Parts) -> Response<Bytes> + Send + Sync + 'static,
{
    fn respond(&self, refusal: &Refusal<'_>, request: &Parts) -> Response<Bytes> {
        self(refusal, request)
    }
}

/// A refusal on its way out: the [`AuthError`], and the standard parts of
/// its answer as the layer prepared them in its realm.
///
/// ```
/// use tower_keyauth::AuthError;
/// use tower_keyauth::response::Refusal;
///
/// let error = AuthError::insufficient_scope("objects.write");
/// let refusal = Refusal::new(&error);
/// assert_eq!(
///     refusal.www_authenticate().unwrap(),
///     r#"Bearer error="insufficient_scope", scope="objects.write""#
/// );
/// assert_eq!(
///     refusal.json_body(),
///     r#"{"error":"insufficient_scope","message":"The API key lacks the scope objects.write.","scope":"objects.write"}"#
/// );
/// ```
#[derive(Clone, Copy)]
pub struct Refusal<'a> {
    error: &'a AuthError,
    prepared: Option<&'a Refusals>,
}

impl<'a> Refusal<'a> {
    /// The refusal of `error` outside any layer: its challenge names no
    /// realm. Useful to test a [`Responder`].
    pub fn new(error: &'a AuthError) -> Self {
        Self {
            error,
            prepared: None,
        }
    }

    /// What went wrong.
    pub fn error(&self) -> &'a AuthError {
        self.error
    }

    /// The HTTP status of the outcome table.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The realm of the layer that refused, if one did.
    pub fn realm(&self) -> Option<&'a str> {
        self.prepared.map(|prepared| &*prepared.realm)
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3), or `None` for outcomes
    /// that carry no challenge (403 forbidden, 503):
    ///
    /// * no credential: `Bearer realm="api"`, no error attribute (§3.1);
    /// * malformed credential, personal token without its organization:
    ///   `error="invalid_request"`;
    /// * invalid token: `error="invalid_token"`, and for a revoked or
    ///   expired key an `error_description`;
    /// * missing scope: `error="insufficient_scope", scope="…"`.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let error = self.error;
        if let Some(prepared) = self.prepared {
            let entry = &prepared.by_kind[error.kind().index()];
            if entry.challenge_fits(error) {
                return entry.challenge.clone();
            }
            if let Some(scope) = error.required_scope() {
                return prepared.scope_challenge(scope);
            }
        }
        challenge(error, self.realm())
    }

    /// The `Retry-After` value of a 429: whole seconds, rounded up, at
    /// least 1 (RFC 9110 §10.2.3).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::AuthError;
    /// use tower_keyauth::response::Refusal;
    /// let error = AuthError::rate_limited(Duration::from_millis(1500));
    /// assert_eq!(Refusal::new(&error).retry_after().unwrap(), "2");
    /// ```
    pub fn retry_after(&self) -> Option<HeaderValue> {
        let after = self.error.retry_after()?;
        Some(HeaderValue::from(crate::limit::fields::whole_seconds_up(
            after,
        )))
    }

    /// The headers the layer prepared for this refusal's JSON answer, when
    /// its challenge is the prepared one.
    fn prepared_json_headers(&self) -> Option<&'a HeaderMap> {
        let prepared = &self.prepared?.by_kind[self.error.kind().index()];
        prepared
            .challenge_fits(self.error)
            .then_some(&prepared.json_headers)
    }

    /// The JSON body: `{"error":"<code>","message":"<message>"}`, with a
    /// `"scope"` field for `insufficient_scope` and an `"org_header"` field
    /// for `missing_organization` when the layer names the header.
    pub fn json_body(&self) -> Bytes {
        let error = self.error;
        if let Some(prepared) = self.prepared {
            if let Some(body) = prepared.ready_body(error) {
                return body;
            }
        }
        json_body(
            error.error_code(),
            error.message(),
            &[
                ("scope", error.required_scope()),
                ("org_header", error.org_header()),
            ],
        )
    }
}

impl fmt::Debug for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refusal")
            .field("error", self.error)
            .field("realm", &self.realm())
            .finish()
    }
}

/// The standard responses.
///
/// For HTTP: the status of the outcome table, the RFC 6750 challenge in
/// `WWW-Authenticate` where there is one, and a JSON body:
///
/// ```json
/// {"error":"invalid_token","message":"The API key is invalid."}
/// ```
///
/// with a `"scope"` field added for `insufficient_scope`, and an
/// `"org_header"` field naming the header for `missing_organization`. For
/// gRPC: a trailers-only response (HTTP 200 with `grpc-status` and
/// `grpc-message`).
///
/// ```
/// use tower_keyauth::AuthError;
/// use tower_keyauth::response::{DefaultResponder, Refusal};
///
/// let error = AuthError::invalid_token();
/// let response = DefaultResponder::json(&Refusal::new(&error));
/// assert_eq!(response.status(), 401);
/// assert_eq!(
///     response.body().as_ref(),
///     br#"{"error":"invalid_token","message":"The API key is invalid."}"#
/// );
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultResponder;

impl DefaultResponder {
    /// The JSON response for an HTTP caller.
    pub fn json(refusal: &Refusal<'_>) -> Response<Bytes> {
        let mut response = Response::new(refusal.json_body());
        *response.status_mut() = refusal.status();
        match refusal.prepared_json_headers() {
            // A copy of the layer's headers for this kind: no header is
            // hashed and placed again.
            Some(headers) => *response.headers_mut() = headers.clone(),
            None => {
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(challenge) = refusal.www_authenticate() {
                    headers.insert(WWW_AUTHENTICATE, challenge);
                }
            }
        }
        if let Some(retry_after) = refusal.retry_after() {
            response.headers_mut().insert(RETRY_AFTER, retry_after);
        }
        if let Some(fields) = refusal.error().limit_fields() {
            fields.clone().stamp(&mut response);
        }
        response
    }

    /// The trailers-only response for a gRPC caller: HTTP 200,
    /// `content-type: application/grpc`, `grpc-status` and a percent-encoded
    /// `grpc-message`, no body.
    pub fn grpc(refusal: &Refusal<'_>) -> Response<Bytes> {
        let error = refusal.error();
        grpc_trailers_only(error.grpc_code(), error.message())
    }
}

impl Responder for DefaultResponder {
    fn respond(&self, refusal: &Refusal<'_>, _request: &Parts) -> Response<Bytes> {
        Self::json(refusal)
    }
}

/// The body of each kind's standard message, the same in every realm.
static STANDARD_BODIES: LazyLock<[String; AuthErrorKind::ALL.len()]> = LazyLock::new(|| {
    AuthErrorKind::ALL.map(|kind| json_text(kind.error_code(), kind.standard_message(), &[]))
});

/// Each kind's challenge in the default realm.
static STANDARD_REALM_CHALLENGES: LazyLock<[Option<String>; AuthErrorKind::ALL.len()]> =
    LazyLock::new(|| {
        AuthErrorKind::ALL.map(|kind| {
            let description = matches!(kind, AuthErrorKind::Revoked | AuthErrorKind::Expired)
                .then(|| kind.standard_message());
            challenge_text(kind, Some(DEFAULT_REALM), description, None)
        })
    });

/// One layer's answers, prepared once when the layer is built: for each
/// kind its challenge in the layer's realm and the body of its standard
/// message, and the bodies of the layer's advice on sending a key.
pub(crate) struct Refusals {
    realm: Arc<str>,
    by_kind: [Prepared; AuthErrorKind::ALL.len()],
    /// Each missing-credential message of the layer's extraction policy,
    /// recognised by identity, with its body.
    advice: Box<[(Arc<str>, Bytes)]>,
    /// The `insufficient_scope` challenge up to its scope:
    /// `Bearer realm="…", error="insufficient_scope", scope="`.
    scope_challenge_start: Box<str>,
}

struct Prepared {
    challenge: Option<HeaderValue>,
    /// The body of the kind's standard message.
    body: Bytes,
    /// `content-type: application/json` and the challenge, as
    /// [`DefaultResponder::json`] sends them.
    json_headers: HeaderMap,
}

impl Prepared {
    /// Whether the prepared challenge is this error's: it is, unless the
    /// challenge names what varies (a scope, a revoked or expired key's own
    /// description).
    fn challenge_fits(&self, error: &AuthError) -> bool {
        match error.kind() {
            AuthErrorKind::InsufficientScope => false,
            AuthErrorKind::Revoked | AuthErrorKind::Expired => {
                matches!(error.message_form(), Message::Standard)
            }
            _ => true,
        }
    }
}

impl Refusals {
    pub(crate) fn new<'m>(realm: Arc<str>, advice: impl IntoIterator<Item = &'m Arc<str>>) -> Self {
        // Answers shared by every layer are kept in statics, so handing one
        // out copies a pointer instead of counting a shared buffer.
        let bodies: &'static [String; AuthErrorKind::ALL.len()] = &STANDARD_BODIES;
        let standard_realm = *realm == *DEFAULT_REALM;
        let by_kind = AuthErrorKind::ALL.map(|kind| {
            let challenge = if standard_realm {
                let challenges: &'static [Option<String>; AuthErrorKind::ALL.len()] =
                    &STANDARD_REALM_CHALLENGES;
                challenges[kind.index()]
                    .as_deref()
                    .map(HeaderValue::from_static)
            } else {
                challenge(&AuthError::standard_of(kind), Some(&realm))
            };
            let mut json_headers = HeaderMap::with_capacity(2);
            json_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(challenge) = &challenge {
                json_headers.insert(WWW_AUTHENTICATE, challenge.clone());
            }
            Prepared {
                challenge,
                body: Bytes::from_static(bodies[kind.index()].as_bytes()),
                json_headers,
            }
        });
        let advice = advice
            .into_iter()
            .map(|message| {
                let body = json_body(AuthErrorKind::MissingCredentials.error_code(), message, &[]);
                (Arc::clone(message), body)
            })
            .collect();
        let scope_challenge_start = challenge_text(
            AuthErrorKind::InsufficientScope,
            Some(&realm),
            None,
            Some(""),
        )
        .map(|mut text| {
            text.pop(); // the closing quote
            text.into_boxed_str()
        })
        .unwrap_or_default();
        Self {
            realm,
            by_kind,
            advice,
            scope_challenge_start,
        }
    }

    /// The `insufficient_scope` challenge naming `scope`, from its prepared
    /// start.
    fn scope_challenge(&self, scope: &str) -> Option<HeaderValue> {
        let start = &self.scope_challenge_start;
        let mut value = String::with_capacity(start.len() + scope.len() + 1);
        value.push_str(start);
        push_quoted_string_content(&mut value, scope);
        value.push('"');
        HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
    }

    /// The refusal of `error` in this layer.
    pub(crate) fn refusal<'a>(&'a self, error: &'a AuthError) -> Refusal<'a> {
        Refusal {
            error,
            prepared: Some(self),
        }
    }

    /// The body prepared for `error`, if its message is one this layer
    /// prepared and nothing is added to it.
    fn ready_body(&self, error: &AuthError) -> Option<Bytes> {
        if error.required_scope().is_some() || error.org_header().is_some() {
            return None;
        }
        match error.message_form() {
            Message::Standard => Some(self.by_kind[error.kind().index()].body.clone()),
            Message::Shared(text) if error.kind() == AuthErrorKind::MissingCredentials => self
                .advice
                .iter()
                .find(|(advice, _)| Arc::ptr_eq(advice, text))
                .map(|(_, body)| body.clone()),
            _ => None,
        }
    }
}

/// How one layer answers: its responder and its prepared refusals. The
/// layer leaves it in the extensions of the requests it lets through (see
/// [`Answers`] for when), so that later refusals (a scope layer's, an
/// extractor's, a handler's) answer the same way.
pub(crate) struct ResponseContext {
    responder: Arc<dyn Responder>,
    refusals: Refusals,
}

impl ResponseContext {
    pub(crate) fn new(responder: Arc<dyn Responder>, refusals: Refusals) -> Self {
        Self {
            responder,
            refusals,
        }
    }

    /// The response for `error`, in the caller's protocol.
    pub(crate) fn respond(&self, error: &AuthError, request: &Parts) -> Response<Bytes> {
        let refusal = self.refusals.refusal(error);
        if is_grpc(&request.headers) {
            self.responder.respond_grpc(&refusal, request)
        } else {
            self.responder.respond(&refusal, request)
        }
    }

    /// Gives a refusal that a handler answered itself (an [`AuthError`]
    /// returned from an axum handler) this layer's challenge, which names
    /// the layer's realm.
    pub(crate) fn restamp<B>(&self, response: &mut Response<B>) {
        let Some(HandlerRefusal(error)) = response.extensions_mut().remove::<HandlerRefusal>()
        else {
            return;
        };
        if let Some(challenge) = self.refusals.refusal(&error).www_authenticate() {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
    }
}

impl fmt::Debug for ResponseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseContext")
            .field("realm", &self.refusals.realm)
            .finish_non_exhaustive()
    }
}

/// The realm of `WWW-Authenticate` challenges unless a layer names another.
pub(crate) const DEFAULT_REALM: &str = "api";

/// The answers of every layer that keeps the default realm and responder,
/// prepared once per process.
static STANDARD_ANSWERS: LazyLock<ResponseContext> = LazyLock::new(|| {
    ResponseContext::new(
        Arc::new(DefaultResponder),
        Refusals::new(Arc::from(DEFAULT_REALM), []),
    )
});

/// How the refusals that come after a layer admitted a request (a scope
/// layer's, a handler's `?`) learn the layer's realm and responder.
///
/// Most layers keep the default realm and responder. The principals they
/// admit travel alone: a principal without a layer's context is answered
/// with the standard answers, prepared once per process. So admitting a
/// request inserts one value into its extensions, and touches no counter
/// that other threads share. Any other layer's requests also carry its own
/// context.
#[derive(Clone)]
pub(crate) enum Answers {
    Standard,
    Layer(Arc<ResponseContext>),
}

impl Answers {
    /// The answers of a layer with this realm and responder, whose full
    /// context (with its advice on sending a key) is `context`.
    pub(crate) fn of(
        realm: &str,
        standard_responder: bool,
        context: &Arc<ResponseContext>,
    ) -> Self {
        if standard_responder && realm == DEFAULT_REALM {
            Answers::Standard
        } else {
            Answers::Layer(Arc::clone(context))
        }
    }

    pub(crate) fn context(&self) -> &ResponseContext {
        match self {
            Answers::Standard => &STANDARD_ANSWERS,
            Answers::Layer(context) => context,
        }
    }

    /// Gives a refusal that a handler answered itself its challenge in these
    /// answers' realm (see [`ResponseContext::restamp`]); a response
    /// without one costs a look at its extensions.
    #[inline]
    pub(crate) fn restamp<B>(&self, response: &mut Response<B>) {
        if response.extensions().get::<HandlerRefusal>().is_some() {
            self.context().restamp(response);
        }
    }

    /// Leaves what an admitted request needs of these answers in its
    /// extensions: nothing for the standard ones.
    pub(crate) fn mark(&self, extensions: &mut Extensions) {
        if let Answers::Layer(context) = self {
            extensions.insert(Arc::clone(context));
        }
    }
}

/// The context a layer left in a request's extensions, if any: always on a
/// request it let through without a principal, and with a principal unless
/// its answers are the standard ones.
pub(crate) fn layer_context(extensions: &Extensions) -> Option<&ResponseContext> {
    extensions
        .get::<Arc<ResponseContext>>()
        .map(|context| &**context)
}

/// How to refuse a request that carries a principal: as the layer that
/// admitted it answers, or with the standard answers (also for a principal
/// inserted by hand, without a layer).
pub(crate) fn principal_context(extensions: &Extensions) -> &ResponseContext {
    layer_context(extensions).unwrap_or(&STANDARD_ANSWERS)
}

/// Marks a response that a handler built from an [`AuthError`], for the
/// layer around it to give it the layer's challenge.
#[derive(Clone)]
pub(crate) struct HandlerRefusal(pub(crate) AuthError);

/// The answer when a request needs a [`Principal`](crate::Principal) but
/// never passed a [`KeyAuthLayer`](crate::KeyAuthLayer): a server
/// misconfiguration, so a 500 (gRPC `INTERNAL`), logged.
pub(crate) fn not_behind_key_auth(request: &Parts) -> Response<Bytes> {
    tracing::error!(
        path = request.uri.path(),
        "a route reads a Principal but KeyAuthLayer does not cover it; add the layer to this route"
    );
    if is_grpc(&request.headers) {
        return grpc_trailers_only(13, NOT_BEHIND_KEY_AUTH);
    }
    let mut response = Response::new(json_body("server_misconfigured", NOT_BEHIND_KEY_AUTH, &[]));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What a route that is not behind the layer answers.
pub(crate) const NOT_BEHIND_KEY_AUTH: &str =
    "This route needs a Principal but is not behind KeyAuthLayer.";

fn grpc_trailers_only(code: i32, message: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    let message = utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    response
}

/// The gRPC spec percent-encodes everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether the request is a gRPC call (`content-type: application/grpc…`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The RFC 6750 `error` attribute of a kind's challenge, if it has one.
fn challenge_error(kind: AuthErrorKind) -> Option<&'static str> {
    match kind {
        AuthErrorKind::MissingCredentials
        | AuthErrorKind::Forbidden
        | AuthErrorKind::Unavailable
        | AuthErrorKind::RateLimited
        | AuthErrorKind::QuotaExhausted => None,
        AuthErrorKind::InvalidRequest | AuthErrorKind::MissingOrganization => {
            Some("invalid_request")
        }
        AuthErrorKind::InvalidToken | AuthErrorKind::Revoked | AuthErrorKind::Expired => {
            Some("invalid_token")
        }
        AuthErrorKind::InsufficientScope => Some("insufficient_scope"),
    }
}

/// The challenge of `error` in `realm`, built.
fn challenge(error: &AuthError, realm: Option<&str>) -> Option<HeaderValue> {
    let kind = error.kind();
    let description =
        matches!(kind, AuthErrorKind::Revoked | AuthErrorKind::Expired).then(|| error.message());
    let text = challenge_text(kind, realm, description, error.required_scope())?;
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// `Bearer` and the challenge's attributes, or `None` for a kind that has no
/// challenge.
fn challenge_text(
    kind: AuthErrorKind,
    realm: Option<&str>,
    description: Option<&str>,
    scope: Option<&str>,
) -> Option<String> {
    let code = challenge_error(kind);
    if code.is_none() && kind != AuthErrorKind::MissingCredentials {
        return None;
    }
    let attributes = [
        ("realm", realm),
        ("error", code),
        ("error_description", description),
        ("scope", scope),
    ];
    let mut value = String::from("Bearer");
    let present = attributes
        .iter()
        .filter_map(|(name, text)| Some((name, (*text)?)));
    for (i, (name, text)) in present.enumerate() {
        value.push_str(if i == 0 { " " } else { ", " });
        value.push_str(name);
        value.push_str("=\"");
        push_quoted_string_content(&mut value, text);
        value.push('"');
    }
    Some(value)
}

/// Escapes `"` and `\` and drops anything that is not visible ASCII or a
/// space, so the result is a valid RFC 9110 quoted-string body.
fn push_quoted_string_content(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
}

/// `{"error":"<code>","message":"<message>"}`, escaped, with each extra
/// field that has a value.
fn json_body(code: &str, message: &str, extra: &[(&str, Option<&str>)]) -> Bytes {
    Bytes::from(json_text(code, message, extra))
}

fn json_text(code: &str, message: &str, extra: &[(&str, Option<&str>)]) -> String {
    let mut body = String::with_capacity(96 + message.len());
    body.push_str("{\"error\":\"");
    push_json_string_content(&mut body, code);
    body.push_str("\",\"message\":\"");
    push_json_string_content(&mut body, message);
    for (name, value) in extra {
        if let Some(value) = value {
            body.push_str("\",\"");
            body.push_str(name);
            body.push_str("\":\"");
            push_json_string_content(&mut body, value);
        }
    }
    body.push_str("\"}");
    body
}

fn push_json_string_content(out: &mut String, text: &str) {
    if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals(realm: &str) -> Refusals {
        Refusals::new(Arc::from(realm), [])
    }

    fn every_kind() -> Vec<AuthError> {
        vec![
            AuthError::missing_credentials(),
            AuthError::invalid_request("a \"quoted\" \\ reason\n"),
            AuthError::invalid_token(),
            AuthError::revoked(),
            AuthError::expired(),
            AuthError::missing_organization(),
            AuthError::missing_organization().with_org_header("x-org-id"),
            AuthError::forbidden(),
            AuthError::insufficient_scope("objects.write"),
            AuthError::insufficient_scope("a \"quoted\" \\ scope\u{7f}"),
            AuthError::unavailable(),
        ]
    }

    #[test]
    fn prepared_answers_equal_built_ones() {
        for realm in ["api", "a \"quoted\" realm"] {
            let layer = refusals(realm);
            for error in every_kind() {
                let prepared = layer.refusal(&error);
                assert_eq!(
                    prepared.www_authenticate(),
                    challenge(&error, Some(realm)),
                    "{error:?}"
                );
                let mut built = HeaderMap::new();
                built.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                if let Some(challenge) = challenge(&error, Some(realm)) {
                    built.insert(WWW_AUTHENTICATE, challenge);
                }
                assert_eq!(
                    *DefaultResponder::json(&prepared).headers(),
                    built,
                    "{error:?}"
                );
            }
        }
        let layer = refusals("api");
        for error in every_kind() {
            let prepared = layer.refusal(&error);
            assert_eq!(
                prepared.json_body(),
                Refusal::new(&error).json_body(),
                "{error:?}"
            );
        }
    }

    #[test]
    fn advice_is_prepared_for_its_own_message_only() {
        let advice: Arc<str> = Arc::from("Send a \"key\".");
        let layer = Refusals::new(Arc::from("api"), [&advice]);
        let error = AuthError::missing_credentials_with(Arc::clone(&advice));
        let expected = r#"{"error":"missing_credentials","message":"Send a \"key\"."}"#;
        assert_eq!(layer.ready_body(&error).unwrap(), expected);
        // The same words in another allocation are built, not looked up.
        let lookalike = AuthError::missing_credentials_with(Arc::from("Send a \"key\"."));
        assert_eq!(layer.ready_body(&lookalike), None);
        assert_eq!(layer.refusal(&lookalike).json_body(), expected);
    }

    #[test]
    fn json_bodies_escape_their_text() {
        let error = AuthError::invalid_request("a \"quoted\" \\ reason\n");
        let response = DefaultResponder::json(&Refusal::new(&error));
        assert_eq!(
            response.body().as_ref(),
            br#"{"error":"invalid_request","message":"a \"quoted\" \\ reason\u000a"}"#
        );
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn insufficient_scope_names_the_scope_in_body_and_challenge() {
        let error = AuthError::insufficient_scope("objects.write");
        let response = DefaultResponder::json(&refusals("api").refusal(&error));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = std::str::from_utf8(response.body()).unwrap();
        assert!(body.contains(r#""scope":"objects.write""#));
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="api", error="insufficient_scope", scope="objects.write""#
        );
    }

    #[test]
    fn missing_credentials_has_a_challenge_without_error_attribute() {
        let error = AuthError::missing_credentials();
        assert_eq!(
            refusals("api").refusal(&error).www_authenticate().unwrap(),
            r#"Bearer realm="api""#
        );
        assert_eq!(Refusal::new(&error).www_authenticate().unwrap(), "Bearer");
    }

    #[test]
    fn revoked_and_expired_look_like_invalid_token_with_a_description() {
        let layer = refusals("api");
        for error in [AuthError::revoked(), AuthError::expired()] {
            let challenge = layer.refusal(&error).www_authenticate().unwrap();
            let expected = format!(
                r#"Bearer realm="api", error="invalid_token", error_description="{}""#,
                error.message()
            );
            assert_eq!(challenge, expected.as_str());
        }
    }

    #[test]
    fn the_challenges_of_the_outcome_table() {
        let layer = refusals("api");
        let challenge_of = |error: AuthError| layer.refusal(&error).www_authenticate();
        assert_eq!(challenge_of(AuthError::forbidden()), None);
        assert_eq!(challenge_of(AuthError::unavailable()), None);
        assert_eq!(
            challenge_of(AuthError::missing_organization()).unwrap(),
            r#"Bearer realm="api", error="invalid_request""#
        );
        assert_eq!(
            challenge_of(AuthError::invalid_token()).unwrap(),
            r#"Bearer realm="api", error="invalid_token""#
        );
    }

    #[test]
    fn quoted_strings_are_escaped() {
        let error = AuthError::invalid_request("bad");
        let layer = refusals("a \"quoted\" realm\u{7f}é");
        assert_eq!(
            layer.refusal(&error).www_authenticate().unwrap(),
            r#"Bearer realm="a \"quoted\" realm", error="invalid_request""#
        );
    }

    #[test]
    fn grpc_responses_are_trailers_only() {
        let error = AuthError::forbidden();
        let response = DefaultResponder::grpc(&Refusal::new(&error));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert!(response.body().is_empty());
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(message)
                .decode_utf8()
                .unwrap(),
            error.message()
        );
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_grpc(&headers));
    }
}
