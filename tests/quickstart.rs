//! The README's first command: `cargo run --example quickstart`, run as a
//! real process and exercised over loopback HTTP.

mod common;

use common::client::request;
use common::example::start_example;

fn assert_export_line(line: &str, name: &str, prefix: &str, comment: &str) {
    let rest = line
        .strip_prefix(&format!("export {name}={prefix}_"))
        .unwrap_or_else(|| panic!("{line:?} should export {name}={prefix}_…"));
    let (token_rest, printed_comment) = rest
        .split_once(" #")
        .unwrap_or_else(|| panic!("{line:?} should end with a comment"));
    let (id, secret) = token_rest
        .trim_end()
        .split_once('.')
        .expect("<id>.<secret>");
    assert!(
        id.bytes().all(|b| b.is_ascii_alphanumeric()) && !id.is_empty(),
        "{line:?}"
    );
    assert!(
        secret.bytes().all(|b| b.is_ascii_alphanumeric()) && secret.len() >= 28,
        "{line:?}"
    );
    assert_eq!(format!("#{printed_comment}"), comment);
}

#[tokio::test]
async fn the_quickstart_prints_demo_credentials_and_serves_its_routes() {
    let example = start_example("quickstart", &[]).await;
    let lines = &example.printed;
    assert_export_line(&lines[0], "ORG_KEY", "ak", r#"# org "acme", full access"#);
    assert_export_line(
        &lines[1],
        "READ_KEY",
        "ak",
        r#"# workspace "docs" of org "acme", scope objects.read only"#,
    );
    assert_export_line(
        &lines[2],
        "PAT",
        "pat",
        r#"# personal token of user "ada", member of org "acme" with objects.read and objects.write"#,
    );
    assert_eq!(lines[3], "export ORG_ID=acme");
    assert!(
        lines.iter().filter(|l| l.starts_with("curl ")).count() >= 3,
        "{lines:#?}"
    );

    let exports = example.exports();
    let (org_key, read_key, pat) = (&exports["ORG_KEY"], &exports["READ_KEY"], &exports["PAT"]);
    let addr = example.addr;
    let get =
        |path: &str, headers: &str| format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{headers}");
    let post =
        |path: &str, headers: &str| format!("POST {path} HTTP/1.1\r\nhost: localhost\r\n{headers}");

    for path in ["/", "/health/", "/schema/", "/docs/", "/docs/keys"] {
        let reply = request(addr, &get(path, ""), b"").await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
    }

    let reply = request(addr, &get("/v1/whoami", ""), b"").await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    assert_eq!(reply.json()["error"], "missing_credentials");

    let reply = request(
        addr,
        &get("/v1/whoami", &format!("authorization: Bearer {org_key}")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let who = reply.json();
    assert_eq!(who["org"], "acme");
    assert_eq!(who["kind"], "organization");
    assert_eq!(who["workspace"], serde_json::Value::Null);
    assert_eq!(who["scopes"], serde_json::json!(["*"]));
    for field in [
        "key_id",
        "kind",
        "org",
        "workspace",
        "user",
        "scopes",
        "source",
    ] {
        assert!(who.get(field).is_some(), "whoami lacks {field}: {who}");
    }

    let reply = request(
        addr,
        &get("/v1/whoami", &format!("x-api-key: {read_key}")),
        b"",
    )
    .await
    .unwrap();
    let who = reply.json();
    assert_eq!(
        (who["org"].as_str(), who["workspace"].as_str()),
        (Some("acme"), Some("docs"))
    );
    assert_eq!(who["source"], "header:x-api-key");

    let reply = request(
        addr,
        &get(&format!("/v1/whoami?api-key={read_key}"), ""),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["source"], "query:api-key");

    let reply = request(
        addr,
        &get("/v1/objects", &format!("x-api-key: {read_key}")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
    let reply = request(
        addr,
        &post("/v1/objects", &format!("x-api-key: {read_key}")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"], "insufficient_scope");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="objects.write""#)
    );

    let reply = request(
        addr,
        &get("/v1/whoami", &format!("authorization: Bearer {pat}")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "missing_organization");
    assert_eq!(
        reply.json()["message"],
        "Token is missing organization claim."
    );

    let pat_headers = format!("authorization: Bearer {pat}\r\nx-org-id: acme");
    let reply = request(addr, &get("/v1/whoami", &pat_headers), b"")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let who = reply.json();
    assert_eq!(who["user"], "ada");
    assert_eq!(who["kind"], "personal");
    assert_eq!(
        who["scopes"],
        serde_json::json!(["objects.read", "objects.write"])
    );

    let body = br#"{"name":"report"}"#;
    let headers = format!("{pat_headers}\r\ncontent-type: application/json");
    let reply = request(addr, &post("/v1/objects", &headers), body)
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.body);
    let reply = request(
        addr,
        &get("/v1/objects", &format!("authorization: Bearer {org_key}")),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["objects"][0]["name"], "report");

    let reply = request(
        addr,
        &get(
            "/v1/whoami",
            &format!("authorization: Bearer {pat}\r\nx-org-id: globex"),
        ),
        b"",
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 403);

    example.stop().await;
}
