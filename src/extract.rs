//! Finding the credential in a request: the [`Extract`] policy.
//!
//! The policy is a list of sources tried in order. A request may carry the
//! same token in several of them; two *different* tokens, or a repeated
//! header, are refused with 400 rather than guessed at.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri};
use percent_encoding::percent_decode;

use crate::error::AuthError;
use crate::principal::CredentialSource;

/// The longest credential accepted, in bytes. Our own tokens are about 45
/// bytes; the bound keeps hashing cheap for hostile input.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// The conventional header for API keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The conventional query parameter for API keys.
pub const API_KEY_QUERY: &str = "api-key";

/// A custom place to find credentials, for [`Extract::custom`] and
/// [`Extract::or_custom`].
///
/// Return `Ok(None)` when the request carries no credential in your source;
/// the layer checks the characters and length of what you return, like it
/// does for its own sources.
///
/// ```
/// use std::borrow::Cow;
/// use http::request::Parts;
/// use tower_keyauth::{AuthError, Extract};
/// use tower_keyauth::extract::ExtractCredential;
///
/// /// `Authorization: Token <key>`, as some older APIs use.
/// struct TokenScheme;
///
/// impl ExtractCredential for TokenScheme {
///     fn label(&self) -> &str {
///         "token-scheme"
///     }
///
///     fn extract<'a>(&self, request: &'a Parts) -> Result<Option<Cow<'a, str>>, AuthError> {
///         let Some(value) = request.headers.get(http::header::AUTHORIZATION) else {
///             return Ok(None);
///         };
///         let value = value
///             .to_str()
///             .map_err(|_| AuthError::invalid_request("The Authorization header is not ASCII."))?;
///         Ok(value.strip_prefix("Token ").map(Cow::Borrowed))
///     }
/// }
///
/// let policy = Extract::custom(TokenScheme);
/// # let _ = policy;
/// ```
pub trait ExtractCredential: Send + Sync + 'static {
    /// A short name, reported as [`CredentialSource::Custom`].
    fn label(&self) -> &str;

    /// The credential in `request`, if any.
    fn extract<'a>(&self, request: &'a Parts) -> Result<Option<Cow<'a, str>>, AuthError>;

    /// Removes the credential from the request before the inner service sees
    /// it, when the layer is told to hide credentials. The default does
    /// nothing.
    fn hide(&self, request: &mut Parts) {
        let _ = request;
    }
}

#[derive(Clone)]
pub(crate) enum Source {
    Bearer,
    Header(HeaderName),
    Query(Arc<str>),
    Custom(Arc<dyn ExtractCredential>),
}

/// Where the layer looks for a credential, in order.
///
/// | policy | sources |
/// |---|---|
/// | [`Extract::bearer()`] (default) | `Authorization: Bearer <token>` |
/// | [`Extract::bearer_or_api_key()`] | Bearer, then `x-api-key: <token>` |
/// | [`Extract::bearer_api_key_or_query()`] | Bearer, `x-api-key`, then `?api-key=<token>` (discouraged) |
///
/// Other names, and your own sources, compose:
///
/// ```
/// use tower_keyauth::Extract;
/// let policy = Extract::bearer().or_header("x-service-key");
/// # let _ = policy;
/// ```
///
/// The `Bearer` scheme is matched case-insensitively (RFC 9110 §11.1) and
/// may be followed by several spaces. Empty tokens, tokens with control,
/// space or non-ASCII characters, tokens over [`MAX_CREDENTIAL_LEN`] bytes,
/// repeated headers and two different tokens in one request are refused
/// with 400 `invalid_request`.
#[derive(Clone)]
pub struct Extract {
    sources: Arc<[Source]>,
    advice: Arc<Advice>,
}

/// What a refusal for a missing credential tells the client under one
/// policy: what was wrong, and how to send a key. Written once per policy,
/// so refusing copies no text (and the layer prepares each one's body).
struct Advice {
    nothing: Arc<str>,
    no_scheme: Arc<str>,
    basic: Arc<str>,
    token_scheme: Arc<str>,
    other_scheme: Arc<str>,
    authorization_unread: Arc<str>,
}

impl Advice {
    fn for_sources(sources: &[Source]) -> Self {
        let ways: Vec<String> = sources
            .iter()
            .filter_map(|source| match source {
                Source::Bearer => Some("as `Authorization: Bearer <key>`".to_owned()),
                Source::Header(name) => Some(format!("in the `{name}` header")),
                Source::Query(name) => Some(format!("in the `{name}` query parameter")),
                // A custom source has no name a client would know.
                Source::Custom(_) => None,
            })
            .collect();
        let send = match ways.as_slice() {
            [] => String::new(),
            [only] => format!(" Send the key {only}."),
            [first, second] => format!(" Send the key {first} or {second}."),
            [rest @ .., last] => format!(" Send the key {}, or {last}.", rest.join(", ")),
        };
        let say = |what: &str| Arc::from(format!("{what}{send}"));
        Self {
            nothing: say("An API key is required."),
            no_scheme: say("The Authorization header has no scheme."),
            basic: say("Basic credentials are not accepted."),
            token_scheme: say("The Token scheme is not accepted."),
            other_scheme: say("Only the Bearer scheme is accepted in the Authorization header."),
            authorization_unread: say("The Authorization header is not read here."),
        }
    }
}

impl Default for Extract {
    /// [`Extract::bearer`].
    fn default() -> Self {
        Self::bearer()
    }
}

impl Extract {
    /// `Authorization: Bearer <token>` only (RFC 6750 §2.1).
    pub fn bearer() -> Self {
        Self::from_sources(vec![Source::Bearer])
    }

    /// Bearer, then the `x-api-key` header.
    pub fn bearer_or_api_key() -> Self {
        Self::bearer().or_header(API_KEY_HEADER)
    }

    /// Bearer, the `x-api-key` header, then the `api-key` query parameter.
    ///
    /// # Warning
    ///
    /// Query parameters end up in access logs, browser history and
    /// `Referer` headers (RFC 6750 §2.3). Accept them only for clients that
    /// cannot send headers. The layer removes the parameter from the URI the
    /// inner service sees and logs a warning each time it is used.
    pub fn bearer_api_key_or_query() -> Self {
        Self::bearer_or_api_key().or_query(API_KEY_QUERY)
    }

    /// Only this header, such as `x-api-key`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn header(name: &str) -> Self {
        Self::from_sources(Vec::new()).or_header(name)
    }

    /// Only a custom source.
    pub fn custom(source: impl ExtractCredential) -> Self {
        Self::from_sources(Vec::new()).or_custom(source)
    }

    /// Also accepts `Authorization: Bearer <token>`.
    pub fn or_bearer(self) -> Self {
        self.with(Source::Bearer)
    }

    /// Also accepts the token as the whole value of header `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn or_header(self, name: &str) -> Self {
        let name = HeaderName::try_from(name)
            .unwrap_or_else(|_| panic!("{name:?} is not a valid header name"));
        self.with(Source::Header(name))
    }

    /// Also accepts the token in query parameter `name`,
    /// `application/x-www-form-urlencoded` decoded.
    ///
    /// # Warning
    ///
    /// See [`Extract::bearer_api_key_or_query`]: URLs get logged.
    pub fn or_query(self, name: &str) -> Self {
        self.with(Source::Query(Arc::from(name)))
    }

    /// Also accepts a custom source.
    pub fn or_custom(self, source: impl ExtractCredential) -> Self {
        self.with(Source::Custom(Arc::new(source)))
    }

    fn with(self, source: Source) -> Self {
        let mut sources = self.sources.to_vec();
        sources.push(source);
        Self::from_sources(sources)
    }

    fn from_sources(sources: Vec<Source>) -> Self {
        Self {
            advice: Arc::new(Advice::for_sources(&sources)),
            sources: sources.into(),
        }
    }

    /// The sources, in order: what `openapi` documents.
    #[cfg(feature = "utoipa")]
    pub(crate) fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Every message [`missing`](Self::missing) may answer with.
    pub(crate) fn advice(&self) -> [&Arc<str>; 6] {
        let advice = &*self.advice;
        [
            &advice.nothing,
            &advice.no_scheme,
            &advice.basic,
            &advice.token_scheme,
            &advice.other_scheme,
            &advice.authorization_unread,
        ]
    }

    /// The refusal for a request in which no source found a credential:
    /// it says what was wrong (an `Authorization` header with another
    /// scheme, or none) and how to send a key under this policy. It never
    /// repeats what the client sent.
    pub(crate) fn missing(&self, request: &Parts) -> AuthError {
        let advice = &self.advice;
        // A custom source may read the Authorization header itself: then
        // what the header holds says nothing certain.
        let custom = self.sources.iter().any(|s| matches!(s, Source::Custom(_)));
        let text = match request.headers.get(AUTHORIZATION) {
            None => &advice.nothing,
            Some(_) if custom => &advice.nothing,
            Some(_) if !self.sources.iter().any(|s| matches!(s, Source::Bearer)) => {
                &advice.authorization_unread
            }
            Some(value) => {
                // Bearer is read, so this header holds another scheme, or a
                // bare value (often the key itself: never echoed).
                let bytes = value.as_bytes();
                match bytes.iter().position(|&b| b == b' ' || b == b'\t') {
                    None => &advice.no_scheme,
                    Some(end) if bytes[..end].eq_ignore_ascii_case(b"basic") => &advice.basic,
                    Some(end) if bytes[..end].eq_ignore_ascii_case(b"token") => {
                        &advice.token_scheme
                    }
                    Some(_) => &advice.other_scheme,
                }
            }
        };
        AuthError::missing_credentials_with(Arc::clone(text))
    }

    /// The credential of `request`, if any.
    pub(crate) fn extract<'a>(
        &self,
        request: &'a Parts,
    ) -> Result<Option<Credential<'a>>, AuthError> {
        let mut sources = self.sources.iter();
        let mut found = None;
        for source in sources.by_ref() {
            found = source.extract(request)?;
            if found.is_some() {
                break;
            }
        }
        let Some(first) = found else {
            return Ok(None);
        };
        for source in sources {
            if let Some(other) = source.extract(request)? {
                if other.token != first.token {
                    return Err(AuthError::invalid_request(
                        "The request carries two different credentials.",
                    ));
                }
            }
        }
        Ok(Some(first))
    }

    /// [`extract`](Self::extract) for the default policy, Bearer alone, on
    /// a request in which no header is repeated (`len() == keys_len()`):
    /// then one lookup finds the only `Authorization` value, marks it
    /// sensitive (see [`scrub`](Self::scrub)) and reads it. The token's
    /// bytes are checked after parsing (a token of the key format is visible
    /// ASCII by its shape), so that the common token is read once. Sets
    /// `marked` when it marked the header.
    pub(crate) fn extract_marking<'a>(
        &self,
        request: &'a mut Parts,
        marked: &mut bool,
    ) -> Result<Option<Credential<'a>>, AuthError> {
        let simple = matches!(*self.sources, [Source::Bearer])
            && request.headers.len() == request.headers.keys_len();
        if !simple {
            return self.extract(request);
        }
        let Some(value) = request.headers.get_mut(AUTHORIZATION) else {
            return Ok(None);
        };
        value.set_sensitive(true);
        *marked = true;
        let value: &'a HeaderValue = value;
        Ok(bearer_value(value.as_bytes())?.map(|token| Credential {
            token: Cow::Borrowed(token),
            source: CredentialSource::Bearer,
            bytes_unchecked: true,
        }))
    }

    /// Removes query credentials from the URI, and with `hide_headers` also
    /// the credential headers, so the inner service never sees them. Headers
    /// that stay are marked sensitive: their `Debug` shows `Sensitive`, and
    /// HTTP/2 never puts them in its header table. `repeats_possible` says
    /// whether a repeated credential header may pass (on public paths only:
    /// elsewhere repetition is refused), so that every value is marked.
    ///
    /// `bearer_marked` says that [`extract_marking`](Self::extract_marking)
    /// marked the only `Authorization` value already.
    pub(crate) fn scrub(
        &self,
        request: &mut Parts,
        hide_headers: bool,
        repeats_possible: bool,
        bearer_marked: bool,
    ) {
        for source in self.sources.iter() {
            match source {
                Source::Query(name) => remove_query_parameter(&mut request.uri, name),
                Source::Bearer if hide_headers => {
                    request.headers.remove(AUTHORIZATION);
                }
                Source::Header(name) if hide_headers => {
                    request.headers.remove(name);
                }
                Source::Custom(custom) if hide_headers => custom.hide(request),
                Source::Bearer if bearer_marked => {}
                Source::Bearer => mark_sensitive(request, &AUTHORIZATION, repeats_possible),
                Source::Header(name) => mark_sensitive(request, name, repeats_possible),
                Source::Custom(_) => {}
            }
        }
    }
}

fn mark_sensitive(request: &mut Parts, name: &HeaderName, every_value: bool) {
    if !every_value {
        if let Some(value) = request.headers.get_mut(name) {
            value.set_sensitive(true);
        }
        return;
    }
    if let http::header::Entry::Occupied(mut values) = request.headers.entry(name) {
        for value in values.iter_mut() {
            value.set_sensitive(true);
        }
    }
}

impl fmt::Debug for Extract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for source in self.sources.iter() {
            match source {
                Source::Bearer => list.entry(&"bearer"),
                Source::Header(name) => list.entry(&format_args!("header {name}")),
                Source::Query(name) => list.entry(&format_args!("query {name}")),
                Source::Custom(custom) => list.entry(&format_args!("custom {}", custom.label())),
            };
        }
        list.finish()
    }
}

/// A credential found in a request, not yet checked against any key.
pub(crate) struct Credential<'a> {
    /// 1 to [`MAX_CREDENTIAL_LEN`] bytes, visible ASCII unless
    /// `bytes_unchecked`. Kept as bytes: the layer parses and hashes bytes,
    /// so no step needs to prove them UTF-8.
    pub(crate) token: Cow<'a, [u8]>,
    pub(crate) source: CredentialSource,
    /// Whether the bytes still need [`check_bytes`](Self::check_bytes).
    pub(crate) bytes_unchecked: bool,
}

impl Credential<'_> {
    /// Refuses a token with control, space or non-ASCII bytes (400), if
    /// extraction left that check for later.
    pub(crate) fn check_bytes(&self) -> Result<(), AuthError> {
        if self.bytes_unchecked {
            check_visible_ascii(&self.token)?;
        }
        Ok(())
    }
}

impl Source {
    fn extract<'a>(&self, request: &'a Parts) -> Result<Option<Credential<'a>>, AuthError> {
        let (token, source) = match self {
            Source::Bearer => (
                bearer_token(request)?.map(Cow::Borrowed),
                CredentialSource::Bearer,
            ),
            Source::Header(name) => (
                single_header(request, name)?.map(Cow::Borrowed),
                CredentialSource::Header(name.clone()),
            ),
            Source::Query(name) => (
                query_parameter(request.uri.query(), name)?.map(text_bytes),
                CredentialSource::Query(name.clone()),
            ),
            Source::Custom(custom) => {
                let token = custom.extract(request)?;
                if let Some(token) = &token {
                    check_credential_syntax(token)?;
                }
                (
                    token.map(text_bytes),
                    CredentialSource::Custom(Arc::from(custom.label())),
                )
            }
        };
        Ok(token.map(|token| Credential {
            token,
            source,
            bytes_unchecked: false,
        }))
    }
}

fn text_bytes(text: Cow<'_, str>) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
        Cow::Owned(text) => Cow::Owned(text.into_bytes()),
    }
}

fn malformed() -> AuthError {
    AuthError::invalid_request(
        "The credential may only contain visible ASCII characters, without spaces.",
    )
}

/// The one rule every source shares: a token is 1 to
/// [`MAX_CREDENTIAL_LEN`] visible ASCII characters.
fn check_credential_syntax(token: &str) -> Result<(), AuthError> {
    check_credential_bytes(token.as_bytes())
}

fn check_credential_bytes(token: &[u8]) -> Result<(), AuthError> {
    check_credential_length(token)?;
    check_visible_ascii(token)
}

/// Refuses a token with control, space or non-ASCII bytes (400).
fn check_visible_ascii(token: &[u8]) -> Result<(), AuthError> {
    if all_visible_ascii(token) {
        Ok(())
    } else {
        Err(malformed())
    }
}

fn check_credential_length(token: &[u8]) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::invalid_request("The credential is empty."));
    }
    if token.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthError::invalid_request("The credential is too long."));
    }
    Ok(())
}

/// Whether every byte is visible ASCII (`!` to `~`). Written without an
/// early exit so that it vectorizes: tokens are checked on every request.
pub(crate) fn all_visible_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(b'!') < b'~' - b'!' + 1))
}

/// The token of `Authorization: Bearer <token>`; `None` without the header
/// or with another scheme.
fn bearer_token(request: &Parts) -> Result<Option<&[u8]>, AuthError> {
    let mut values = request.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::invalid_request(
            "The Authorization header must not be repeated.",
        ));
    }
    // `bearer_value` checked the length already.
    let token = bearer_value(value.as_bytes())?;
    if let Some(token) = token {
        check_visible_ascii(token)?;
    }
    Ok(token)
}

/// The token of an `Authorization` value with the Bearer scheme (in any
/// case), without the spaces around it, checked for its length but not yet
/// for its bytes; `None` for another scheme or none.
fn bearer_value(bytes: &[u8]) -> Result<Option<&[u8]>, AuthError> {
    let after_scheme = match bytes.get(..7) {
        // The usual form, `Bearer <token>`, without searching.
        Some(start) if start[6] == b' ' && start[..6].eq_ignore_ascii_case(b"bearer") => {
            &bytes[6..]
        }
        _ => {
            let scheme_end = bytes
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(bytes.len());
            if !bytes[..scheme_end].eq_ignore_ascii_case(b"bearer") {
                return Ok(None);
            }
            &bytes[scheme_end..]
        }
    };
    // Spaces around the token are tolerated; anything else is refused by
    // the check of its bytes.
    let token = trim_spaces(after_scheme);
    check_credential_length(token)?;
    Ok(Some(token))
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

fn single_header<'a>(request: &'a Parts, name: &HeaderName) -> Result<Option<&'a [u8]>, AuthError> {
    let mut values = request.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::invalid_request(format!(
            "The {name} header must not be repeated."
        )));
    }
    let token = trim_spaces(value.as_bytes());
    check_credential_bytes(token)?;
    Ok(Some(token))
}

/// The value of query parameter `name`, form-urlencoded decoded (`+` is a
/// space, `%XX` a byte, decoded once).
fn query_parameter<'a>(
    query: Option<&'a str>,
    name: &str,
) -> Result<Option<Cow<'a, str>>, AuthError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if !form_decoded_equals(raw_name, name) {
            continue;
        }
        if found.is_some() {
            return Err(AuthError::invalid_request(format!(
                "The {name} query parameter must not be repeated."
            )));
        }
        let value = form_decode(raw_value).ok_or_else(malformed)?;
        check_credential_syntax(&value)?;
        found = Some(value);
    }
    Ok(found)
}

fn form_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['+', '%']) {
        return Some(Cow::Borrowed(raw));
    }
    let plus_as_space = raw.replace('+', " ");
    let decoded = percent_decode(plus_as_space.as_bytes()).collect::<Vec<u8>>();
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

fn form_decoded_equals(raw: &str, expected: &str) -> bool {
    if !raw.contains(['+', '%']) {
        return raw == expected;
    }
    form_decode(raw).is_some_and(|decoded| decoded == expected)
}

/// Drops every `name=…` pair from the query, keeping the other pairs as they
/// were, in order. An emptied query loses its `?`.
fn remove_query_parameter(uri: &mut Uri, name: &str) {
    let Some(query) = uri.query() else {
        return;
    };
    let is_credential = |pair: &&str| {
        let raw_name = pair.split_once('=').map_or(*pair, |(raw_name, _)| raw_name);
        form_decoded_equals(raw_name, name)
    };
    if !query.split('&').any(|pair| is_credential(&pair)) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !is_credential(pair))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = std::mem::take(uri).into_parts();
    // The new text is a substring of a valid path and query, so it parses.
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    *uri = Uri::from_parts(parts).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AuthErrorKind;

    fn parts(build: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Parts {
        build(http::Request::builder())
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn token_of(policy: &Extract, request: &Parts) -> Result<Option<String>, AuthErrorKind> {
        policy
            .extract(request)
            .map(|found| found.map(|c| String::from_utf8(c.token.into_owned()).unwrap()))
            .map_err(|e| e.kind())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tolerates_spaces() {
        for header in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "Bearer    abc",
            "Bearer abc  ",
        ] {
            let request = parts(|b| b.header("authorization", header));
            assert_eq!(
                token_of(&Extract::bearer(), &request),
                Ok(Some("abc".into())),
                "{header:?}"
            );
        }
    }

    #[test]
    fn other_schemes_are_no_credential() {
        let request = parts(|b| b.header("authorization", "Basic dXNlcjpwYXNz"));
        assert_eq!(token_of(&Extract::bearer(), &request), Ok(None));
        assert_eq!(token_of(&Extract::bearer(), &parts(|b| b)), Ok(None));
    }

    #[test]
    fn broken_bearer_values_are_invalid_requests() {
        for header in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer\tabc",
            "Bearer a\tb",
        ] {
            let request = parts(|b| b.header("authorization", header));
            assert_eq!(
                token_of(&Extract::bearer(), &request),
                Err(AuthErrorKind::InvalidRequest),
                "{header:?}"
            );
        }
        let high = http::HeaderValue::from_bytes(b"Bearer ab\xffc").unwrap();
        let request = parts(|b| b.header("authorization", high));
        assert_eq!(
            token_of(&Extract::bearer(), &request),
            Err(AuthErrorKind::InvalidRequest)
        );
    }

    #[test]
    fn repeated_headers_are_invalid_requests() {
        let request = parts(|b| {
            b.header("authorization", "Bearer a")
                .header("authorization", "Bearer a")
        });
        assert_eq!(
            token_of(&Extract::bearer(), &request),
            Err(AuthErrorKind::InvalidRequest)
        );
        let request = parts(|b| b.header("x-api-key", "a").header("X-Api-Key", "a"));
        assert_eq!(
            token_of(&Extract::bearer_or_api_key(), &request),
            Err(AuthErrorKind::InvalidRequest)
        );
    }

    #[test]
    fn the_same_token_in_two_places_is_fine_two_different_ones_are_not() {
        let policy = Extract::bearer_api_key_or_query();
        let same = parts(|b| {
            b.uri("/?api-key=abc")
                .header("authorization", "Bearer abc")
                .header("x-api-key", "abc")
        });
        let found = policy.extract(&same).unwrap().unwrap();
        assert_eq!(found.source, CredentialSource::Bearer);
        let different = parts(|b| b.uri("/?api-key=xyz").header("x-api-key", "abc"));
        assert_eq!(
            token_of(&policy, &different),
            Err(AuthErrorKind::InvalidRequest)
        );
    }

    #[test]
    fn query_values_are_form_decoded_once() {
        let policy = Extract::bearer_api_key_or_query();
        let cases = [
            ("/?api-key=ak_abc.def", "ak_abc.def"),
            ("/?api-key=ak%5Fabc%2Edef", "ak_abc.def"),
            ("/?api%2Dkey=abc", "abc"),
            ("/?api-key=%2541", "%41"),
        ];
        for (uri, expected) in cases {
            let request = parts(|b| b.uri(uri));
            assert_eq!(
                token_of(&policy, &request),
                Ok(Some(expected.into())),
                "{uri}"
            );
        }
        let spaced = parts(|b| b.uri("/?api-key=a+b"));
        assert_eq!(
            token_of(&policy, &spaced),
            Err(AuthErrorKind::InvalidRequest)
        );
        let not_utf8 = parts(|b| b.uri("/?api-key=%ff"));
        assert_eq!(
            token_of(&policy, &not_utf8),
            Err(AuthErrorKind::InvalidRequest)
        );
        let repeated = parts(|b| b.uri("/?api-key=a&api-key=a"));
        assert_eq!(
            token_of(&policy, &repeated),
            Err(AuthErrorKind::InvalidRequest)
        );
        let empty = parts(|b| b.uri("/?api-key="));
        assert_eq!(
            token_of(&policy, &empty),
            Err(AuthErrorKind::InvalidRequest)
        );
    }

    #[test]
    fn query_credentials_are_removed_and_other_parameters_kept_in_order() {
        let policy = Extract::bearer_api_key_or_query();
        let cases = [
            ("/items?a=1&api-key=k&b=2&c", "/items?a=1&b=2&c"),
            ("/items?api-key=k", "/items"),
            ("/items?api%2Dkey=k&z=%20", "/items?z=%20"),
            ("/items?a=1", "/items?a=1"),
            ("/items", "/items"),
        ];
        for (before, after) in cases {
            let mut request = parts(|b| b.uri(before));
            policy.scrub(&mut request, false, false, false);
            assert_eq!(request.uri.to_string(), after);
        }
        let mut absolute = parts(|b| b.uri("http://example.com/x?api-key=k&y=1"));
        policy.scrub(&mut absolute, false, false, false);
        assert_eq!(absolute.uri.to_string(), "http://example.com/x?y=1");
    }

    #[test]
    fn hiding_removes_credential_headers() {
        let policy = Extract::bearer_or_api_key();
        let mut request = parts(|b| {
            b.header("authorization", "Bearer a")
                .header("x-api-key", "a")
                .header("accept", "*/*")
        });
        policy.scrub(&mut request, true, false, false);
        assert!(request.headers.get("authorization").is_none());
        assert!(request.headers.get("x-api-key").is_none());
        assert!(request.headers.get("accept").is_some());
    }

    #[test]
    fn credential_headers_that_stay_are_marked_sensitive() {
        let policy = Extract::bearer_or_api_key();
        let mut request = parts(|b| {
            b.header("authorization", "Bearer secret-value")
                .header("x-api-key", "secret-value")
                .header("accept", "*/*")
        });
        policy.scrub(&mut request, false, false, false);
        assert!(request.headers["authorization"].is_sensitive());
        assert!(request.headers["x-api-key"].is_sensitive());
        assert!(!request.headers["accept"].is_sensitive());
        assert!(!format!("{:?}", request.headers).contains("secret-value"));

        let mut repeated = parts(|b| {
            b.header("authorization", "Bearer first-secret")
                .header("authorization", "Bearer second-secret")
        });
        policy.scrub(&mut repeated, false, true, false);
        let shown = format!("{:?}", repeated.headers);
        assert!(
            !shown.contains("first-secret") && !shown.contains("second-secret"),
            "{shown}"
        );
    }

    #[test]
    fn overlong_credentials_are_refused() {
        let long = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN + 1));
        let request = parts(|b| b.header("authorization", long));
        assert_eq!(
            token_of(&Extract::bearer(), &request),
            Err(AuthErrorKind::InvalidRequest)
        );
    }
}
