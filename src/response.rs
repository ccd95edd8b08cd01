//! Turning an [`AuthError`] into a response: JSON for HTTP callers,
//! trailers-only for gRPC callers, replaceable through [`Responder`].

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::error::{AuthError, AuthErrorKind};

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
/// use tower_keyauth::{AuthError, KeyAuthLayer, MemoryStore};
///
/// let layer = KeyAuthLayer::new(MemoryStore::new()).responder(
///     |error: &AuthError, _request: &http::request::Parts| {
///         let mut response = Response::new(Bytes::from(format!("denied: {}", error.error_code())));
///         *response.status_mut() = error.status();
///         if let Some(challenge) = error.www_authenticate() {
///             response.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge);
///         }
///         response
///     },
/// );
/// # let _ = layer;
/// ```
pub trait Responder: Send + Sync + 'static {
    /// The response for an HTTP caller.
    fn respond(&self, error: &AuthError, request: &Parts) -> Response<Bytes>;

    /// The response for a gRPC caller. Defaults to
    /// [`DefaultResponder::grpc`].
    fn respond_grpc(&self, error: &AuthError, request: &Parts) -> Response<Bytes> {
        let _ = request;
        DefaultResponder::grpc(error)
    }
}

impl<F> Responder for F
where
    F: Fn(&AuthError, &Parts) -> Response<Bytes> + Send + Sync + 'static,
{
    fn respond(&self, error: &AuthError, request: &Parts) -> Response<Bytes> {
        self(error, request)
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
/// gRPC: a
/// trailers-only response (HTTP 200 with `grpc-status` and `grpc-message`).
///
/// ```
/// use tower_keyauth::{AuthError, DefaultResponder};
/// let response = DefaultResponder::json(&AuthError::invalid_token());
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
    pub fn json(error: &AuthError) -> Response<Bytes> {
        let body = match error.ready_json() {
            Some(body) => body,
            None => json_body(
                error.error_code(),
                error.message(),
                &[
                    ("scope", error.required_scope()),
                    ("org_header", error.org_header()),
                ],
            ),
        };
        let mut response = Response::new(body);
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = error.www_authenticate() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }

    /// The trailers-only response for a gRPC caller: HTTP 200,
    /// `content-type: application/grpc`, `grpc-status` and a percent-encoded
    /// `grpc-message`, no body.
    pub fn grpc(error: &AuthError) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(error.grpc_code()));
        let message = utf8_percent_encode(error.message(), GRPC_MESSAGE).to_string();
        if let Ok(message) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", message);
        }
        response
    }
}

impl Responder for DefaultResponder {
    fn respond(&self, error: &AuthError, _request: &Parts) -> Response<Bytes> {
        Self::json(error)
    }
}

/// The answer when a request needs a [`Principal`](crate::Principal) but
/// never passed a [`KeyAuthLayer`](crate::KeyAuthLayer): a server
/// misconfiguration, so a 500 (gRPC `INTERNAL`), logged.
pub(crate) fn not_behind_key_auth(request: &Parts) -> Response<Bytes> {
    const MESSAGE: &str = "This route needs a Principal but is not behind KeyAuthLayer.";
    tracing::error!(
        path = request.uri.path(),
        "a route reads a Principal but KeyAuthLayer does not cover it; add the layer to this route"
    );
    if is_grpc(&request.headers) {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(13));
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&utf8_percent_encode(MESSAGE, GRPC_MESSAGE).to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("misconfigured")),
        );
        return response;
    }
    let mut response = Response::new(json_body("server_misconfigured", MESSAGE, &[]));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The gRPC spec percent-encodes everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// Whether the request is a gRPC call (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// `{"error":"<code>","message":"<message>"}`, escaped, with each extra
/// field that has a value.
pub(crate) fn json_body(code: &str, message: &str, extra: &[(&str, Option<&str>)]) -> Bytes {
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
    Bytes::from(body)
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

/// The responder and realm of one layer, shared with everything that answers
/// for it later in the request (extractors, [`RequireScopes`]-style checks).
#[derive(Clone)]
pub(crate) struct ResponseContext {
    responder: Arc<dyn Responder>,
    realm: Arc<str>,
    /// The challenges of the standard refusals in this realm, built once.
    challenges: Vec<(AuthErrorKind, Option<HeaderValue>)>,
}

pub(crate) const DEFAULT_REALM: &str = "api";

impl ResponseContext {
    pub(crate) fn new(responder: Arc<dyn Responder>, realm: Arc<str>) -> Self {
        let challenges = AuthError::standard_challenged()
            .into_iter()
            .map(|error| {
                let kind = error.kind();
                (kind, error.with_realm(realm.clone()).www_authenticate())
            })
            .collect();
        Self {
            responder,
            realm,
            challenges,
        }
    }

    /// The context of a layer with default settings, for principals built by
    /// hand.
    pub(crate) fn shared_default() -> Arc<ResponseContext> {
        static DEFAULT: OnceLock<Arc<ResponseContext>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Arc::new(ResponseContext::new(
                    Arc::new(DefaultResponder),
                    Arc::from(DEFAULT_REALM),
                ))
            })
            .clone()
    }

    pub(crate) fn realm(&self) -> &Arc<str> {
        &self.realm
    }

    pub(crate) fn with_responder(&self, responder: Arc<dyn Responder>) -> Self {
        Self {
            responder,
            ..self.clone()
        }
    }

    pub(crate) fn with_realm(&self, realm: Arc<str>) -> Self {
        Self::new(self.responder.clone(), realm)
    }

    /// The response for `error`, in the caller's protocol.
    pub(crate) fn respond(&self, error: AuthError, request: &Parts) -> Response<Bytes> {
        let kind = error.kind();
        let prepared = self
            .challenges
            .iter()
            .find(|(standard, _)| *standard == kind)
            .and_then(|(_, challenge)| challenge.clone());
        let error = error
            .with_realm(self.realm.clone())
            .with_prepared_challenge(prepared);
        if is_grpc(&request.headers) {
            self.responder.respond_grpc(&error, request)
        } else {
            self.responder.respond(&error, request)
        }
    }
}

impl fmt::Debug for ResponseContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseContext")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_escape_their_text() {
        let error = AuthError::invalid_request("a \"quoted\" \\ reason\n");
        let response = DefaultResponder::json(&error);
        assert_eq!(
            response.body().as_ref(),
            br#"{"error":"invalid_request","message":"a \"quoted\" \\ reason\u000a"}"#
        );
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn insufficient_scope_names_the_scope_in_body_and_challenge() {
        let response = DefaultResponder::json(&AuthError::insufficient_scope("objects.write"));
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = std::str::from_utf8(response.body()).unwrap();
        assert!(body.contains(r#""scope":"objects.write""#));
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="objects.write""#
        );
    }

    #[test]
    fn grpc_responses_are_trailers_only() {
        let response = DefaultResponder::grpc(&AuthError::forbidden());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert!(response.body().is_empty());
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(message)
                .decode_utf8()
                .unwrap(),
            AuthError::forbidden().message()
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
