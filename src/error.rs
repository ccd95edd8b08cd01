//! Why a request was refused: [`AuthError`], one value per row of the
//! outcome table, turned into a response by a [`Responder`](crate::Responder).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use http::{HeaderValue, StatusCode};

/// The kind of an [`AuthError`]: one per outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No credential was sent (401).
    MissingCredentials,
    /// The credential is syntactically broken: empty, control or non-ASCII
    /// bytes, two different tokens, a repeated header (400).
    InvalidRequest,
    /// Wrong format, bad checksum, unknown id or wrong secret; deliberately
    /// one answer for all four (401).
    InvalidToken,
    /// The key was revoked (401, told only after the secret matched).
    Revoked,
    /// The key has expired (401, told only after the secret matched).
    Expired,
    /// A personal token without the organization header (401).
    MissingOrganization,
    /// The credential may not act for the organization named in the request
    /// (403).
    Forbidden,
    /// The credential lacks a required scope (403).
    InsufficientScope,
    /// The key store failed or timed out (503). Requests never pass then.
    Unavailable,
}

/// A refused request: what went wrong, as data. The layer hands it to its
/// [`Responder`](crate::Responder); the methods here give the standard status,
/// `WWW-Authenticate` challenge (RFC 6750), JSON error code and gRPC status,
/// so a custom responder can reuse them.
///
/// Messages never contain a credential.
///
/// ```
/// use http::StatusCode;
/// use tower_keyauth::{AuthError, AuthErrorKind};
/// let error = AuthError::insufficient_scope("objects.write");
/// assert_eq!(error.kind(), AuthErrorKind::InsufficientScope);
/// assert_eq!(error.status(), StatusCode::FORBIDDEN);
/// assert_eq!(error.error_code(), "insufficient_scope");
/// assert_eq!(
///     error.www_authenticate().unwrap(),
///     r#"Bearer error="insufficient_scope", scope="objects.write""#
/// );
/// assert_eq!(error.grpc_code(), 7);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthError {
    kind: AuthErrorKind,
    message: Text,
    scope: Option<Arc<str>>,
    /// For a personal token without its organization, the header to send.
    org_header: Option<Arc<str>>,
    realm: Option<Arc<str>>,
    /// The challenge, when the layer has it ready for this kind and realm.
    challenge: Option<HeaderValue>,
}

/// A message: written into the binary, made for one refusal, or prepared
/// once with its JSON body (a layer's advice on how to send a key), so that
/// refusing copies no text.
#[derive(Clone, PartialEq, Eq)]
enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Prepared(Arc<PreparedRefusal>),
}

impl Text {
    fn as_str(&self) -> &str {
        match self {
            Text::Static(text) => text,
            Text::Shared(text) => text,
            Text::Prepared(prepared) => &prepared.message,
        }
    }
}

/// A `missing_credentials` message and its whole JSON body, built once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PreparedRefusal {
    message: Box<str>,
    json: Bytes,
}

impl PreparedRefusal {
    pub(crate) fn missing_credentials(message: String) -> Self {
        let json = crate::response::json_body("missing_credentials", &message, &[]);
        Self {
            message: message.into(),
            json,
        }
    }
}

impl From<Cow<'static, str>> for Text {
    fn from(text: Cow<'static, str>) -> Self {
        match text {
            Cow::Borrowed(text) => Text::Static(text),
            Cow::Owned(text) => Text::Shared(Arc::from(text)),
        }
    }
}

/// A standard refusal: its message, and its whole JSON body, written out at
/// compile time so that refusing (a flood of bad keys, say) builds no text.
struct Standard {
    message: &'static str,
    json: &'static str,
}

macro_rules! standard {
    ($name:ident, $code:literal, $message:literal) => {
        const $name: Standard = Standard {
            message: $message,
            json: concat!(
                r#"{"error":""#,
                $code,
                r#"","message":""#,
                $message,
                r#""}"#
            ),
        };
    };
}

standard!(
    MISSING_CREDENTIALS,
    "missing_credentials",
    "An API key is required."
);
standard!(INVALID_TOKEN, "invalid_token", "The API key is invalid.");
standard!(REVOKED, "invalid_token", "The API key has been revoked.");
standard!(EXPIRED, "invalid_token", "The API key has expired.");
standard!(
    MISSING_ORGANIZATION,
    "missing_organization",
    "Token is missing organization claim."
);
standard!(
    FORBIDDEN,
    "forbidden",
    "The API key may not act for this organization."
);
standard!(
    UNAVAILABLE,
    "unavailable",
    "Authentication is temporarily unavailable. Try again later."
);

impl AuthError {
    fn new(kind: AuthErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_text(kind, Text::from(message.into()))
    }

    fn with_text(kind: AuthErrorKind, message: Text) -> Self {
        Self {
            kind,
            message,
            scope: None,
            org_header: None,
            realm: None,
            challenge: None,
        }
    }

    fn standard(kind: AuthErrorKind, standard: &Standard) -> Self {
        Self::new(kind, standard.message)
    }

    /// The standard refusal this error is, if it is one (its kind's own
    /// message, no scope).
    fn as_standard(&self) -> Option<&'static Standard> {
        let standard = match self.kind {
            AuthErrorKind::MissingCredentials => &MISSING_CREDENTIALS,
            AuthErrorKind::InvalidToken => &INVALID_TOKEN,
            AuthErrorKind::Revoked => &REVOKED,
            AuthErrorKind::Expired => &EXPIRED,
            AuthErrorKind::MissingOrganization => &MISSING_ORGANIZATION,
            AuthErrorKind::Forbidden => &FORBIDDEN,
            AuthErrorKind::Unavailable => &UNAVAILABLE,
            AuthErrorKind::InvalidRequest | AuthErrorKind::InsufficientScope => return None,
        };
        let plain = self.scope.is_none() && self.org_header.is_none();
        (plain && self.message.as_str() == standard.message).then_some(standard)
    }

    /// The JSON body of a standard or prepared refusal, ready made.
    pub(crate) fn ready_json(&self) -> Option<Bytes> {
        if let Some(standard) = self.as_standard() {
            return Some(Bytes::from_static(standard.json.as_bytes()));
        }
        match &self.message {
            Text::Prepared(prepared) if self.scope.is_none() && self.org_header.is_none() => {
                Some(prepared.json.clone())
            }
            _ => None,
        }
    }

    /// Every kind whose standard refusal carries a challenge, for the layer
    /// to prepare once per realm.
    pub(crate) fn standard_challenged() -> [AuthError; 5] {
        [
            Self::missing_credentials(),
            Self::invalid_token(),
            Self::revoked(),
            Self::expired(),
            Self::missing_organization(),
        ]
    }

    /// Attaches a challenge prepared for this error's kind and realm.
    pub(crate) fn with_prepared_challenge(mut self, challenge: Option<HeaderValue>) -> Self {
        // These challenges name no message, so any message may take them.
        let names_only_the_kind = matches!(
            self.kind,
            AuthErrorKind::MissingCredentials
                | AuthErrorKind::InvalidToken
                | AuthErrorKind::MissingOrganization
        );
        if names_only_the_kind || self.as_standard().is_some() {
            self.challenge = challenge;
        }
        self
    }

    /// No credential was sent.
    pub fn missing_credentials() -> Self {
        Self::standard(AuthErrorKind::MissingCredentials, &MISSING_CREDENTIALS)
    }

    /// No credential the layer accepts, with advice prepared by the layer:
    /// what was wrong (another scheme, no scheme) and how to send a key.
    pub(crate) fn missing_credentials_with(advice: Arc<PreparedRefusal>) -> Self {
        Self::with_text(AuthErrorKind::MissingCredentials, Text::Prepared(advice))
    }

    /// A malformed credential; `reason` is shown to the client, so it must
    /// not contain the credential.
    pub fn invalid_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::InvalidRequest, reason)
    }

    /// The one answer for a wrong format, a bad checksum, an unknown id and a
    /// wrong secret.
    pub fn invalid_token() -> Self {
        Self::standard(AuthErrorKind::InvalidToken, &INVALID_TOKEN)
    }

    /// The key was revoked.
    pub fn revoked() -> Self {
        Self::standard(AuthErrorKind::Revoked, &REVOKED)
    }

    /// The key has expired.
    pub fn expired() -> Self {
        Self::standard(AuthErrorKind::Expired, &EXPIRED)
    }

    /// A personal token without the organization header.
    pub fn missing_organization() -> Self {
        Self::standard(AuthErrorKind::MissingOrganization, &MISSING_ORGANIZATION)
    }

    /// Names the header a personal token's organization goes in, for the
    /// client to read in the body (`"org_header": "x-org-id"`).
    pub fn with_org_header(mut self, header: impl Into<Arc<str>>) -> Self {
        self.org_header = Some(header.into());
        self
    }

    /// The credential may not act for the organization named in the request.
    pub fn forbidden() -> Self {
        Self::standard(AuthErrorKind::Forbidden, &FORBIDDEN)
    }

    /// The credential lacks `scope`.
    pub fn insufficient_scope(scope: impl Into<Arc<str>>) -> Self {
        let scope = scope.into();
        let mut error = Self::new(
            AuthErrorKind::InsufficientScope,
            format!("The API key lacks the scope {scope}."),
        );
        error.scope = Some(scope);
        error
    }

    /// The key store failed or timed out.
    pub fn unavailable() -> Self {
        Self::standard(AuthErrorKind::Unavailable, &UNAVAILABLE)
    }

    /// Sets the realm named in the `WWW-Authenticate` challenge. The layer
    /// sets its own before responding.
    pub fn with_realm(mut self, realm: impl Into<Arc<str>>) -> Self {
        self.realm = Some(realm.into());
        self.challenge = None;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// A sentence for the client. Never contains a credential.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }

    /// For [`AuthErrorKind::MissingOrganization`], the header the
    /// organization goes in, when the layer named it.
    pub fn org_header(&self) -> Option<&str> {
        self.org_header.as_deref()
    }

    /// For [`AuthErrorKind::InsufficientScope`], the scope (or
    /// space-separated scopes) required.
    pub fn required_scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The realm of the challenge, if set.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// The HTTP status: 400, 401, 403 or 503.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            AuthErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidToken
            | AuthErrorKind::Revoked
            | AuthErrorKind::Expired
            | AuthErrorKind::MissingOrganization => StatusCode::UNAUTHORIZED,
            AuthErrorKind::Forbidden | AuthErrorKind::InsufficientScope => StatusCode::FORBIDDEN,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` field of the JSON body: `missing_credentials`,
    /// `invalid_request`, `invalid_token`, `missing_organization`,
    /// `forbidden`, `insufficient_scope` or `unavailable`.
    pub fn error_code(&self) -> &'static str {
        match self.kind {
            AuthErrorKind::MissingCredentials => "missing_credentials",
            AuthErrorKind::InvalidRequest => "invalid_request",
            AuthErrorKind::InvalidToken | AuthErrorKind::Revoked | AuthErrorKind::Expired => {
                "invalid_token"
            }
            AuthErrorKind::MissingOrganization => "missing_organization",
            AuthErrorKind::Forbidden => "forbidden",
            AuthErrorKind::InsufficientScope => "insufficient_scope",
            AuthErrorKind::Unavailable => "unavailable",
        }
    }

    /// The RFC 6750 `error` attribute of the challenge, if the outcome has
    /// one.
    fn challenge_error(&self) -> Option<&'static str> {
        match self.kind {
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::Forbidden
            | AuthErrorKind::Unavailable => None,
            AuthErrorKind::InvalidRequest | AuthErrorKind::MissingOrganization => {
                Some("invalid_request")
            }
            AuthErrorKind::InvalidToken | AuthErrorKind::Revoked | AuthErrorKind::Expired => {
                Some("invalid_token")
            }
            AuthErrorKind::InsufficientScope => Some("insufficient_scope"),
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3), or `None` for outcomes
    /// that carry no challenge (403 forbidden, 503).
    ///
    /// * no credential: `Bearer realm="api"`, no error attribute (§3.1);
    /// * revoked or expired: `error="invalid_token"` with an
    ///   `error_description`;
    /// * missing scope: `error="insufficient_scope", scope="…"`.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        if let Some(challenge) = &self.challenge {
            return Some(challenge.clone());
        }
        let error = self.challenge_error();
        if error.is_none() && self.kind != AuthErrorKind::MissingCredentials {
            return None;
        }
        let mut attributes: Vec<(&str, &str)> = Vec::with_capacity(4);
        if let Some(realm) = self.realm() {
            attributes.push(("realm", realm));
        }
        if let Some(error) = error {
            attributes.push(("error", error));
        }
        if matches!(self.kind, AuthErrorKind::Revoked | AuthErrorKind::Expired) {
            attributes.push(("error_description", self.message()));
        }
        if let Some(scope) = self.required_scope() {
            attributes.push(("scope", scope));
        }
        let mut value = String::from("Bearer");
        for (i, (name, text)) in attributes.iter().enumerate() {
            value.push_str(if i == 0 { " " } else { ", " });
            value.push_str(name);
            value.push_str("=\"");
            push_quoted_string_content(&mut value, text);
            value.push('"');
        }
        HeaderValue::from_str(&value).ok()
    }

    /// The gRPC status code: 16 `UNAUTHENTICATED` for 400 and 401 outcomes,
    /// 7 `PERMISSION_DENIED` for 403, 14 `UNAVAILABLE` for 503.
    pub fn grpc_code(&self) -> i32 {
        match self.status() {
            StatusCode::FORBIDDEN => 7,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 16,
        }
    }
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

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthError")
            .field("kind", &self.kind)
            .field("message", &self.message())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_credentials_has_a_challenge_without_error_attribute() {
        let error = AuthError::missing_credentials().with_realm("api");
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error.www_authenticate().unwrap(), r#"Bearer realm="api""#);
        assert_eq!(
            AuthError::missing_credentials().www_authenticate().unwrap(),
            "Bearer"
        );
    }

    #[test]
    fn revoked_and_expired_look_like_invalid_token_with_a_description() {
        for error in [AuthError::revoked(), AuthError::expired()] {
            assert_eq!(error.error_code(), "invalid_token");
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
            let challenge = error.with_realm("api").www_authenticate().unwrap();
            let challenge = challenge.to_str().unwrap();
            assert!(
                challenge.starts_with(
                    r#"Bearer realm="api", error="invalid_token", error_description=""#
                )
            );
        }
    }

    #[test]
    fn the_outcome_table_holds() {
        let rows = [
            (
                AuthError::missing_credentials(),
                401,
                "missing_credentials",
                16,
            ),
            (AuthError::invalid_request("x"), 400, "invalid_request", 16),
            (AuthError::invalid_token(), 401, "invalid_token", 16),
            (
                AuthError::missing_organization(),
                401,
                "missing_organization",
                16,
            ),
            (AuthError::forbidden(), 403, "forbidden", 7),
            (
                AuthError::insufficient_scope("a"),
                403,
                "insufficient_scope",
                7,
            ),
            (AuthError::unavailable(), 503, "unavailable", 14),
        ];
        for (error, status, code, grpc) in rows {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.error_code(), code);
            assert_eq!(error.grpc_code(), grpc);
        }
        assert!(AuthError::forbidden().www_authenticate().is_none());
        assert!(AuthError::unavailable().www_authenticate().is_none());
        assert_eq!(
            AuthError::missing_organization()
                .www_authenticate()
                .unwrap(),
            r#"Bearer error="invalid_request""#
        );
    }

    #[test]
    fn quoted_strings_are_escaped() {
        let error = AuthError::invalid_request("bad").with_realm("a \"quoted\" realm\u{7f}é");
        assert_eq!(
            error.www_authenticate().unwrap(),
            r#"Bearer realm="a \"quoted\" realm", error="invalid_request""#
        );
    }
}

#[cfg(test)]
mod standard_tests {
    use super::*;

    #[test]
    fn ready_made_bodies_are_the_json_of_their_error() {
        for error in [
            AuthError::missing_credentials(),
            AuthError::invalid_token(),
            AuthError::revoked(),
            AuthError::expired(),
            AuthError::missing_organization(),
            AuthError::forbidden(),
            AuthError::unavailable(),
        ] {
            let body = error.ready_json().expect("a standard refusal");
            assert_eq!(
                body,
                format!(
                    r#"{{"error":"{}","message":"{}"}}"#,
                    error.error_code(),
                    error.message()
                )
            );
        }
        assert_eq!(AuthError::invalid_request("x").ready_json(), None);
        assert_eq!(AuthError::insufficient_scope("a").ready_json(), None);
        let prepared = Arc::new(PreparedRefusal::missing_credentials(
            "Send a \"key\".".to_owned(),
        ));
        let error = AuthError::missing_credentials_with(prepared);
        assert_eq!(
            error.ready_json().unwrap(),
            r#"{"error":"missing_credentials","message":"Send a \"key\"."}"#
        );
    }

    #[test]
    fn a_prepared_challenge_equals_the_computed_one() {
        for error in AuthError::standard_challenged() {
            let error = error.with_realm("api");
            let computed = error.www_authenticate();
            let prepared = error.clone().with_prepared_challenge(computed.clone());
            assert_eq!(prepared.www_authenticate(), computed);
        }
        // Only standard refusals take one.
        let other = AuthError::invalid_request("x")
            .with_prepared_challenge(Some(HeaderValue::from_static("Bearer")));
        assert_eq!(
            other.www_authenticate().unwrap(),
            r#"Bearer error="invalid_request""#
        );
    }
}
