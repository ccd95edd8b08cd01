//! The `openapi` helpers write the layer's schemes and a route's scopes into
//! a utoipa document that serializes as OpenAPI 3.1 expects.

use std::borrow::Cow;

use http::request::Parts;
use serde_json::{Value, json};
use tower_keyauth::extract::ExtractCredential;
use tower_keyauth::{AuthError, Extract, openapi};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{HttpMethod, Info, OpenApi, Paths};

fn document() -> OpenApi {
    let paths = Paths::builder()
        .path(
            "/v1/items",
            PathItem::new(HttpMethod::Get, Operation::new()),
        )
        .build();
    OpenApi::new(Info::new("items", "1.0.0"), paths)
}

#[test]
fn schemes_and_scopes_of_bearer_api_key_or_query() {
    let policy = Extract::bearer_api_key_or_query();
    let mut doc = document();
    openapi::add_security_schemes(&mut doc, &policy);
    assert!(openapi::require(
        &mut doc,
        "/v1/items",
        HttpMethod::Get,
        &policy,
        &["items:read", "items:list"],
    ));

    let json: Value = serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
    assert!(
        json["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        json["openapi"]
    );

    let schemes = json["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes.len(), 3, "{schemes:?}");
    let bearer = &schemes["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let header = &schemes["header_x-api-key"];
    assert_eq!(header["type"], "apiKey");
    assert_eq!(header["in"], "header");
    assert_eq!(header["name"], "x-api-key");
    let query = &schemes["query_api-key"];
    assert_eq!(query["type"], "apiKey");
    assert_eq!(query["in"], "query");
    assert_eq!(query["name"], "api-key");

    let scopes = json!(["items:read", "items:list"]);
    assert_eq!(
        json["paths"]["/v1/items"]["get"]["security"],
        json!([
            { "bearer": scopes },
            { "header_x-api-key": scopes },
            { "query_api-key": scopes },
        ])
    );
}

#[test]
fn require_is_false_without_the_operation() {
    let policy = Extract::bearer();
    let mut doc = document();
    let before = serde_json::to_value(&doc).unwrap();
    assert!(!openapi::require(
        &mut doc,
        "/v1/absent",
        HttpMethod::Get,
        &policy,
        &[]
    ));
    assert!(!openapi::require(
        &mut doc,
        "/v1/items",
        HttpMethod::Delete,
        &policy,
        &["items:delete"]
    ));
    assert_eq!(serde_json::to_value(&doc).unwrap(), before);
}

#[test]
fn no_scopes_still_require_a_key() {
    let requirements = openapi::security_requirement(&Extract::bearer(), &[]);
    assert_eq!(
        serde_json::to_value(&requirements).unwrap(),
        json!([{ "bearer": [] }])
    );
}

struct TokenScheme;

impl ExtractCredential for TokenScheme {
    fn label(&self) -> &str {
        "token-scheme"
    }

    fn extract<'a>(&self, _request: &'a Parts) -> Result<Option<Cow<'a, str>>, AuthError> {
        Ok(None)
    }
}

#[test]
fn custom_sources_are_left_out() {
    assert!(Extract::custom(TokenScheme).security_schemes().is_empty());
    assert!(openapi::security_requirement(&Extract::custom(TokenScheme), &["a"]).is_empty());

    let policy = Extract::custom(TokenScheme).or_header("x-service-key");
    let mut doc = document();
    openapi::add_security_schemes(&mut doc, &policy);
    let json = serde_json::to_value(&doc).unwrap();
    let schemes = json["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes.keys().collect::<Vec<_>>(), ["header_x-service-key"]);
}

#[cfg(all(feature = "axum", feature = "serde"))]
mod key_api {
    use serde_json::{Value, json};
    use tower_keyauth::key_api::KeyApi;
    use tower_keyauth::{Extract, MemoryStore};

    fn document() -> Value {
        let openapi = KeyApi::new(MemoryStore::new()).openapi("/v1/keys", &Extract::bearer());
        serde_json::to_value(&openapi).unwrap()
    }

    #[test]
    fn new_keys_and_summaries_describe_their_limits() {
        let json = document();
        let schemas = &json["components"]["schemas"];
        let new_key = &schemas["NewKey"]["properties"];
        assert_eq!(new_key["rate_limits"]["type"], "array", "{new_key}");
        assert_eq!(new_key["rate_limits"]["maxItems"], 4, "{new_key}");
        assert_eq!(
            new_key["rate_limits"]["items"]["$ref"],
            "#/components/schemas/RateLimit"
        );
        assert_eq!(new_key["credits"]["$ref"], "#/components/schemas/Credits");
        assert_eq!(new_key["allowed_ips"]["maxItems"], 64, "{new_key}");
        assert_eq!(new_key["allowed_ips"]["items"]["type"], "string");

        let rate_limit = &schemas["RateLimit"];
        assert_eq!(rate_limit["required"], json!(["limit", "window_seconds"]));
        assert_eq!(rate_limit["properties"]["limit"]["minimum"], 1);
        assert_eq!(rate_limit["properties"]["limit"]["maximum"], 1_000_000_000);
        assert_eq!(
            rate_limit["properties"]["window_seconds"]["maximum"],
            31_622_400
        );
        let credits = &schemas["Credits"];
        assert_eq!(credits["required"], json!(["remaining"]));
        assert_eq!(
            credits["properties"]["remaining"]["maximum"],
            1_000_000_000_000_000u64
        );
        assert_eq!(
            credits["properties"]["refill"]["required"],
            json!(["amount", "interval_seconds"])
        );

        let summary = &schemas["KeySummary"]["properties"];
        assert_eq!(summary["rate_limits"]["type"], json!(["array", "null"]));
        assert_eq!(
            summary["rate_limits"]["items"]["$ref"],
            "#/components/schemas/RateLimit"
        );
        assert_eq!(
            summary["credits"]["oneOf"][0]["$ref"],
            "#/components/schemas/Credits"
        );
        assert_eq!(summary["allowed_ips"]["type"], json!(["array", "null"]));
    }

    #[test]
    fn every_operation_lists_the_layers_429_with_retry_after() {
        let json = document();
        let mut operations = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                let spent = &responses["429"];
                let description = spent["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains("rate_limited") && description.contains("quota_exhausted"),
                    "{method} {path}: {spent}"
                );
                assert!(
                    spent["headers"]["Retry-After"].is_object(),
                    "{method} {path}"
                );
                assert!(spent["headers"]["RateLimit"].is_object(), "{method} {path}");
                let forbidden = responses["403"]["description"].as_str().unwrap();
                assert!(forbidden.contains("allowed_ips"), "{method} {path}");
                operations += 1;
            }
        }
        assert_eq!(operations, 5);
    }
}
