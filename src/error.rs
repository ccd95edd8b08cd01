//! Why a request was refused: [`AuthError`], one value per row of the
//! outcome table. It is data only; [`response`](crate::response) turns it
//! into an answer.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::limit::fields::LimitFields;

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
    /// A rate limit of the key or its owner is spent, or the client's
    /// address sent too many refused credentials (429, `Retry-After`).
    RateLimited,
    /// The key's credits are spent (429, `Retry-After` when a refill is
    /// due).
    QuotaExhausted,
}

impl AuthErrorKind {
    /// Every kind, in declaration order: `ALL[kind.index()] == kind`.
    pub(crate) const ALL: [AuthErrorKind; 11] = [
        AuthErrorKind::MissingCredentials,
        AuthErrorKind::InvalidRequest,
        AuthErrorKind::InvalidToken,
        AuthErrorKind::Revoked,
        AuthErrorKind::Expired,
        AuthErrorKind::MissingOrganization,
        AuthErrorKind::Forbidden,
        AuthErrorKind::InsufficientScope,
        AuthErrorKind::Unavailable,
        AuthErrorKind::RateLimited,
        AuthErrorKind::QuotaExhausted,
    ];

    /// The position of this kind in [`ALL`](Self::ALL), for tables indexed
    /// by kind.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The message of the kind's own refusal, when the kind has one that
    /// needs nothing more.
    pub(crate) const fn standard_message(self) -> &'static str {
        match self {
            AuthErrorKind::MissingCredentials => "An API key is required.",
            AuthErrorKind::InvalidRequest => "The credential is malformed.",
            AuthErrorKind::InvalidToken => "The API key is invalid.",
            AuthErrorKind::Revoked => "The API key has been revoked.",
            AuthErrorKind::Expired => "The API key has expired.",
            AuthErrorKind::MissingOrganization => "Token is missing organization claim.",
            AuthErrorKind::Forbidden => "The API key may not act for this organization.",
            AuthErrorKind::InsufficientScope => "The API key lacks a required scope.",
            AuthErrorKind::Unavailable => {
                "Authentication is temporarily unavailable. Try again later."
            }
            AuthErrorKind::RateLimited => "The API key's rate limit is spent. Try again later.",
            AuthErrorKind::QuotaExhausted => "The API key has no credits left.",
        }
    }

    /// The HTTP status: 400, 401, 403, 429 or 503.
    pub fn status(self) -> StatusCode {
        match self {
            AuthErrorKind::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorKind::MissingCredentials
            | AuthErrorKind::InvalidToken
            | AuthErrorKind::Revoked
            | AuthErrorKind::Expired
            | AuthErrorKind::MissingOrganization => StatusCode::UNAUTHORIZED,
            AuthErrorKind::Forbidden | AuthErrorKind::InsufficientScope => StatusCode::FORBIDDEN,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthErrorKind::RateLimited | AuthErrorKind::QuotaExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// The `error` field of the JSON body: `missing_credentials`,
    /// `invalid_request`, `invalid_token` (also for revoked and expired
    /// keys), `missing_organization`, `forbidden`, `insufficient_scope`,
    /// `unavailable`, `rate_limited` or `quota_exhausted`.
    pub fn error_code(self) -> &'static str {
        match self {
            AuthErrorKind::MissingCredentials => "missing_credentials",
            AuthErrorKind::InvalidRequest => "invalid_request",
            AuthErrorKind::InvalidToken | AuthErrorKind::Revoked | AuthErrorKind::Expired => {
                "invalid_token"
            }
            AuthErrorKind::MissingOrganization => "missing_organization",
            AuthErrorKind::Forbidden => "forbidden",
            AuthErrorKind::InsufficientScope => "insufficient_scope",
            AuthErrorKind::Unavailable => "unavailable",
            AuthErrorKind::RateLimited => "rate_limited",
            AuthErrorKind::QuotaExhausted => "quota_exhausted",
        }
    }

    /// The gRPC status code: 16 `UNAUTHENTICATED` for 400 and 401 outcomes,
    /// 7 `PERMISSION_DENIED` for 403, 8 `RESOURCE_EXHAUSTED` for 429, 14
    /// `UNAVAILABLE` for 503.
    pub fn grpc_code(self) -> i32 {
        match self.status() {
            StatusCode::FORBIDDEN => 7,
            StatusCode::TOO_MANY_REQUESTS => 8,
            StatusCode::SERVICE_UNAVAILABLE => 14,
            _ => 16,
        }
    }
}

/// A refused request, as data: its [kind](AuthErrorKind), a message for
/// the client, and what the kind needs (the missing scope, the organization
/// header). The layer hands it to its [`Responder`](crate::response::Responder),
/// which builds the answer.
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
/// assert_eq!(error.required_scope(), Some("objects.write"));
/// assert_eq!(error.grpc_code(), 7);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthError {
    kind: AuthErrorKind,
    message: Message,
    scope: Option<Arc<str>>,
    /// For a personal token without its organization, the header to send.
    org_header: Option<Arc<str>>,
    /// For a 429, when to try again.
    retry_after: Option<Duration>,
    /// For a rate-limited request, the `RateLimit` response fields.
    limit_fields: Option<LimitFields>,
}

/// The message of a refusal. Standard and shared messages copy no text, so
/// that refusing a flood of bad keys builds none.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// The kind's own message ([`AuthErrorKind::standard_message`]).
    Standard,
    Static(&'static str),
    /// Written once and shared, like a layer's advice on how to send a key.
    Shared(Arc<str>),
}

impl From<Cow<'static, str>> for Message {
    fn from(text: Cow<'static, str>) -> Self {
        match text {
            Cow::Borrowed(text) => Message::Static(text),
            Cow::Owned(text) => Message::Shared(Arc::from(text)),
        }
    }
}

impl AuthError {
    fn new(kind: AuthErrorKind, message: Message) -> Self {
        Self {
            kind,
            message,
            scope: None,
            org_header: None,
            retry_after: None,
            limit_fields: None,
        }
    }

    /// The kind's own refusal, with its standard message.
    pub(crate) fn standard_of(kind: AuthErrorKind) -> Self {
        Self::new(kind, Message::Standard)
    }

    /// No credential was sent.
    pub fn missing_credentials() -> Self {
        Self::standard_of(AuthErrorKind::MissingCredentials)
    }

    /// No credential the layer accepts, with the layer's advice on how to
    /// send one, written once per extraction policy.
    pub(crate) fn missing_credentials_with(advice: Arc<str>) -> Self {
        Self::new(AuthErrorKind::MissingCredentials, Message::Shared(advice))
    }

    /// A malformed credential; `reason` is shown to the client, so it must
    /// not contain the credential.
    pub fn invalid_request(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::InvalidRequest, Message::from(reason.into()))
    }

    /// The one answer for a wrong format, a bad checksum, an unknown id and a
    /// wrong secret.
    pub fn invalid_token() -> Self {
        Self::standard_of(AuthErrorKind::InvalidToken)
    }

    /// The key was revoked.
    pub fn revoked() -> Self {
        Self::standard_of(AuthErrorKind::Revoked)
    }

    /// The key has expired.
    pub fn expired() -> Self {
        Self::standard_of(AuthErrorKind::Expired)
    }

    /// A personal token without the organization header.
    pub fn missing_organization() -> Self {
        Self::standard_of(AuthErrorKind::MissingOrganization)
    }

    /// Names the header a personal token's organization goes in, for the
    /// client to read in the body (`"org_header": "x-org-id"`).
    pub fn with_org_header(mut self, header: impl Into<Arc<str>>) -> Self {
        self.org_header = Some(header.into());
        self
    }

    /// The credential may not act for the organization named in the request.
    pub fn forbidden() -> Self {
        Self::standard_of(AuthErrorKind::Forbidden)
    }

    /// The credential lacks `scope` (or each of several space-separated
    /// scopes).
    pub fn insufficient_scope(scope: impl Into<Arc<str>>) -> Self {
        let scope = scope.into();
        let mut error = Self::new(
            AuthErrorKind::InsufficientScope,
            Message::from(Cow::Owned(format!("The API key lacks the scope {scope}."))),
        );
        error.scope = Some(scope);
        error
    }

    /// The key store failed or timed out.
    pub fn unavailable() -> Self {
        Self::standard_of(AuthErrorKind::Unavailable)
    }

    /// The client's address is not in the key's allowlist: 403
    /// `forbidden`, before anything is charged.
    ///
    /// ```
    /// use tower_keyauth::{AuthError, AuthErrorKind};
    /// let error = AuthError::address_not_allowed();
    /// assert_eq!(error.kind(), AuthErrorKind::Forbidden);
    /// assert_eq!(error.message(), "The API key may not be used from this address.");
    /// ```
    pub fn address_not_allowed() -> Self {
        Self::new(
            AuthErrorKind::Forbidden,
            Message::Static("The API key may not be used from this address."),
        )
    }

    /// A rate limit is spent; the client may try again after `retry_after`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::AuthError;
    /// let error = AuthError::rate_limited(Duration::from_secs(12));
    /// assert_eq!((error.status().as_u16(), error.error_code()), (429, "rate_limited"));
    /// assert_eq!(error.retry_after(), Some(Duration::from_secs(12)));
    /// assert_eq!(error.grpc_code(), 8);
    /// ```
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut error = Self::standard_of(AuthErrorKind::RateLimited);
        error.retry_after = Some(retry_after);
        error
    }

    /// Too many refused credentials came from the client's address: 429
    /// `rate_limited` until the window passes.
    pub fn too_many_failed_attempts(retry_after: Duration) -> Self {
        let mut error = Self::new(
            AuthErrorKind::RateLimited,
            Message::Static("Too many invalid API keys from this address. Try again later."),
        );
        error.retry_after = Some(retry_after);
        error
    }

    /// The key's credits are spent; `refill_in`, when credits refill, is
    /// the `Retry-After`.
    pub fn quota_exhausted(refill_in: Option<Duration>) -> Self {
        let mut error = Self::standard_of(AuthErrorKind::QuotaExhausted);
        error.retry_after = refill_in;
        error
    }

    /// Adds the `RateLimit-Policy` and `RateLimit` fields of the limit that
    /// refused.
    pub(crate) fn with_limit_fields(mut self, fields: LimitFields) -> Self {
        self.limit_fields = Some(fields);
        self
    }

    /// The `RateLimit` fields to answer with, if any.
    pub(crate) fn limit_fields(&self) -> Option<&LimitFields> {
        self.limit_fields.as_ref()
    }

    /// For a 429, how long the client should wait before trying again
    /// (`Retry-After`), when that is known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What went wrong.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// A sentence for the client. Never contains a credential.
    pub fn message(&self) -> &str {
        match &self.message {
            Message::Standard => self.kind.standard_message(),
            Message::Static(text) => text,
            Message::Shared(text) => text,
        }
    }

    /// How the message was made, for the responses that prepare the
    /// standard ones.
    pub(crate) fn message_form(&self) -> &Message {
        &self.message
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

    /// The HTTP status: 400, 401, 403, 429 or 503 ([`AuthErrorKind::status`]).
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The `error` field of the JSON body ([`AuthErrorKind::error_code`]).
    pub fn error_code(&self) -> &'static str {
        self.kind.error_code()
    }

    /// The gRPC status code ([`AuthErrorKind::grpc_code`]).
    pub fn grpc_code(&self) -> i32 {
        self.kind.grpc_code()
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
            (AuthError::revoked(), 401, "invalid_token", 16),
            (AuthError::expired(), 401, "invalid_token", 16),
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
            (AuthError::address_not_allowed(), 403, "forbidden", 7),
            (
                AuthError::rate_limited(Duration::from_secs(1)),
                429,
                "rate_limited",
                8,
            ),
            (
                AuthError::too_many_failed_attempts(Duration::from_secs(1)),
                429,
                "rate_limited",
                8,
            ),
            (AuthError::quota_exhausted(None), 429, "quota_exhausted", 8),
        ];
        for (error, status, code, grpc) in rows {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.error_code(), code);
            assert_eq!(error.grpc_code(), grpc);
        }
    }

    #[test]
    fn kinds_index_their_table() {
        for (index, kind) in AuthErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), index);
        }
    }

    #[test]
    fn standard_messages_are_the_kinds_own() {
        assert_eq!(
            AuthError::invalid_token().message(),
            "The API key is invalid."
        );
        assert_eq!(AuthError::invalid_request("bad").message(), "bad");
        assert_eq!(
            AuthError::insufficient_scope("a").message(),
            "The API key lacks the scope a."
        );
    }
}
