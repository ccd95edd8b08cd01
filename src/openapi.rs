//! The layer's credentials and scopes in an OpenAPI document, for
//! [utoipa](https://docs.rs/utoipa) 5 (feature `utoipa`).
//!
//! An [`Extract`] policy becomes security schemes
//! ([`Extract::security_schemes`], [`add_security_schemes`]), and the scopes
//! a route needs become its operation's security requirements
//! ([`security_requirement`], [`require`]).
//!
//! The schemes are named after their source, so that the same policy always
//! gives the same names:
//!
//! | source | scheme name | scheme |
//! |---|---|---|
//! | `Authorization: Bearer` | `bearer` | `type: http`, `scheme: bearer` |
//! | header `x-api-key` | `header_x-api-key` | `type: apiKey`, `in: header`, `name: x-api-key` |
//! | query parameter `api-key` | `query_api-key` | `type: apiKey`, `in: query`, `name: api-key` |
//!
//! Characters that OpenAPI does not allow in a component name (anything but
//! ASCII letters, digits, `.`, `-` and `_`) become `_` in the scheme name;
//! the `name` the client sends is kept as it is. A source listed twice gives
//! one scheme. Custom sources ([`Extract::custom`], [`Extract::or_custom`])
//! have no name a client would know, so they are left out: document them
//! yourself if clients should use them.
//!
//! Scopes in a requirement of an `http` or `apiKey` scheme are allowed from
//! OpenAPI 3.1 on (3.0 wanted them empty), which is the version utoipa 5
//! writes.
//!
//! ```
//! use tower_keyauth::{Extract, openapi};
//! use utoipa::openapi::path::{Operation, PathItem};
//! use utoipa::openapi::{HttpMethod, Info, OpenApi, Paths};
//!
//! let paths = Paths::builder()
//!     .path("/v1/items", PathItem::new(HttpMethod::Get, Operation::new()))
//!     .build();
//! let mut doc = OpenApi::new(Info::new("items", "1.0.0"), paths);
//!
//! let policy = Extract::bearer_or_api_key();
//! openapi::add_security_schemes(&mut doc, &policy);
//! assert!(openapi::require(&mut doc, "/v1/items", HttpMethod::Get, &policy, &["items:read"]));
//!
//! let json = serde_json::to_value(&doc).unwrap();
//! assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
//! assert_eq!(
//!     json["paths"]["/v1/items"]["get"]["security"][1]["header_x-api-key"][0],
//!     "items:read"
//! );
//! ```

use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{HttpMethod, OpenApi};

use crate::extract::{Extract, Source};

/// The name of the scheme for `Authorization: Bearer`.
///
/// ```
/// use tower_keyauth::{Extract, openapi};
///
/// let schemes = Extract::bearer().security_schemes();
/// assert_eq!(schemes[0].0, openapi::BEARER_SCHEME);
/// ```
pub const BEARER_SCHEME: &str = "bearer";

impl Extract {
    /// The OpenAPI security schemes of this policy, named as the
    /// [module](crate::openapi) says, in the policy's order: `bearer` for
    /// `Authorization: Bearer`, `header_<name>` for each header,
    /// `query_<name>` for each query parameter. Custom sources are left out;
    /// a source listed twice appears once.
    ///
    /// ```
    /// use tower_keyauth::Extract;
    ///
    /// let names: Vec<String> = Extract::bearer_api_key_or_query()
    ///     .security_schemes()
    ///     .into_iter()
    ///     .map(|(name, _)| name)
    ///     .collect();
    /// assert_eq!(names, ["bearer", "header_x-api-key", "query_api-key"]);
    /// ```
    pub fn security_schemes(&self) -> Vec<(String, SecurityScheme)> {
        let mut schemes: Vec<(String, SecurityScheme)> = Vec::new();
        for source in self.sources() {
            let (name, scheme) = match source {
                Source::Bearer => (
                    BEARER_SCHEME.to_owned(),
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some("The API key as `Authorization: Bearer <key>`."))
                            .build(),
                    ),
                ),
                Source::Header(header) => (
                    scheme_name("header_", header.as_str()),
                    SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                        header.as_str().to_owned(),
                        format!("The API key as the whole value of the `{header}` header."),
                    ))),
                ),
                Source::Query(parameter) => (
                    scheme_name("query_", parameter),
                    SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                        parameter.to_string(),
                        format!(
                            "The API key in the `{parameter}` query parameter \
                             (discouraged: URLs get logged)."
                        ),
                    ))),
                ),
                Source::Custom(_) => continue,
            };
            if !schemes.iter().any(|(known, _)| *known == name) {
                schemes.push((name, scheme));
            }
        }
        schemes
    }
}

/// `prefix` then `name`, with the characters OpenAPI does not allow in a
/// component name replaced by `_`.
fn scheme_name(prefix: &str, name: &str) -> String {
    let mut scheme = String::with_capacity(prefix.len() + name.len());
    scheme.push_str(prefix);
    scheme.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
            c
        } else {
            '_'
        }
    }));
    scheme
}

/// Adds the schemes of `extract` ([`Extract::security_schemes`]) to the
/// document's `components.securitySchemes`, creating the components if there
/// are none. A scheme of the same name already there is replaced.
///
/// Call it on the document your `#[derive(OpenApi)]` (or builder) produced,
/// or from a `utoipa::Modify` implementation.
///
/// ```
/// use tower_keyauth::{Extract, openapi};
/// use utoipa::openapi::{Info, OpenApi, Paths};
///
/// let mut doc = OpenApi::new(Info::new("api", "1.0.0"), Paths::new());
/// openapi::add_security_schemes(&mut doc, &Extract::bearer());
/// let components = doc.components.as_ref().unwrap();
/// assert!(components.security_schemes.contains_key("bearer"));
/// ```
pub fn add_security_schemes(openapi: &mut OpenApi, extract: &Extract) {
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, scheme) in extract.security_schemes() {
        components.security_schemes.insert(name, scheme);
    }
}

/// The security requirements of a route that needs `scopes` under the
/// policy `extract`: one requirement per scheme, each listing every scope.
/// OpenAPI reads the list as alternatives, so any one source with a key
/// holding the scopes is enough, as it is for the layer.
///
/// With no scopes, the requirements still say that a key is needed. A
/// policy with only custom sources gives an empty list.
///
/// ```
/// use tower_keyauth::{Extract, openapi};
///
/// let requirements = openapi::security_requirement(&Extract::bearer_or_api_key(), &["keys:admin"]);
/// assert_eq!(requirements.len(), 2);
/// let json = serde_json::to_value(&requirements).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!([{ "bearer": ["keys:admin"] }, { "header_x-api-key": ["keys:admin"] }])
/// );
/// ```
pub fn security_requirement(extract: &Extract, scopes: &[&str]) -> Vec<SecurityRequirement> {
    extract
        .security_schemes()
        .into_iter()
        .map(|(name, _)| SecurityRequirement::new(name, scopes.iter().copied()))
        .collect()
}

/// Sets the security requirements of the operation `method` on `path`
/// ([`security_requirement`] of `extract` and `scopes`), replacing any it
/// had. Returns `false`, and changes nothing, when the document has no such
/// operation: add the path first.
///
/// The schemes themselves go in the components through
/// [`add_security_schemes`].
///
/// ```
/// use tower_keyauth::{Extract, openapi};
/// use utoipa::openapi::path::{Operation, PathItem};
/// use utoipa::openapi::{HttpMethod, Info, OpenApi, Paths};
///
/// let paths = Paths::builder()
///     .path("/v1/keys", PathItem::new(HttpMethod::Post, Operation::new()))
///     .build();
/// let mut doc = OpenApi::new(Info::new("api", "1.0.0"), paths);
/// let policy = Extract::bearer();
///
/// assert!(openapi::require(&mut doc, "/v1/keys", HttpMethod::Post, &policy, &["keys:write"]));
/// assert!(!openapi::require(&mut doc, "/v1/keys", HttpMethod::Get, &policy, &["keys:read"]));
/// assert!(!openapi::require(&mut doc, "/v1/absent", HttpMethod::Get, &policy, &[]));
/// ```
pub fn require(
    openapi: &mut OpenApi,
    path: &str,
    method: HttpMethod,
    extract: &Extract,
    scopes: &[&str],
) -> bool {
    let Some(item) = openapi.paths.paths.get_mut(path) else {
        return false;
    };
    let operation = match method {
        HttpMethod::Get => &mut item.get,
        HttpMethod::Put => &mut item.put,
        HttpMethod::Post => &mut item.post,
        HttpMethod::Delete => &mut item.delete,
        HttpMethod::Options => &mut item.options,
        HttpMethod::Head => &mut item.head,
        HttpMethod::Patch => &mut item.patch,
        HttpMethod::Trace => &mut item.trace,
    };
    let Some(operation) = operation else {
        return false;
    };
    operation.security = Some(security_requirement(extract, scopes));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_keep_allowed_characters_only() {
        assert_eq!(scheme_name("query_", "api key[0]"), "query_api_key_0_");
        assert_eq!(scheme_name("header_", "x-api.key_1"), "header_x-api.key_1");
    }

    #[test]
    fn repeated_sources_give_one_scheme_and_custom_ones_none() {
        let policy = Extract::bearer()
            .or_bearer()
            .or_header("x-api-key")
            .or_header("X-Api-Key");
        let names: Vec<String> = policy
            .security_schemes()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["bearer", "header_x-api-key"]);
    }
}
