//! The README's first command: `cargo run --example quickstart`, run as a
//! real process on a temporary database and exercised over loopback HTTP.

mod common;

use common::TempDir;
use common::client::{call, request};
use common::example::{RunningExample, start_example};

/// The quickstart on the SQLite file `quickstart.db` in `dir`.
async fn start_quickstart(dir: &TempDir) -> RunningExample {
    let url = format!("sqlite://{}", dir.join("quickstart.db").display());
    start_example("quickstart", &[("DATABASE_URL", url.as_str())]).await
}

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
    let dir = TempDir::new("quickstart");
    let example = start_quickstart(&dir).await;
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

#[tokio::test]
async fn keys_minted_over_http_survive_a_restart_and_revoked_ones_stay_revoked() {
    let dir = TempDir::new("quickstart-restart");
    let first = start_quickstart(&dir).await;
    let exports = first.exports();
    let org_key = exports["ORG_KEY"].clone();
    let read_key = exports["READ_KEY"].clone();
    let addr = first.addr;

    let body = r#"{"name":"ci","scopes":["objects.read"],"expires_in_seconds":3600}"#;
    let created = call(addr, "POST", "/v1/keys", &org_key, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let kept = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        created["key"]["masked"],
        format!("ak_{}.****", created["key"]["id"].as_str().unwrap())
    );
    assert_eq!(
        created["key"]["scopes"],
        serde_json::json!(["objects.read"])
    );
    assert!(created["key"]["expires_at"].as_u64().is_some());
    assert!(
        !created["key"]
            .to_string()
            .contains(kept.split_once('.').unwrap().1)
    );

    let doomed = call(addr, "POST", "/v1/keys", &org_key, r#"{"name":"doomed"}"#)
        .await
        .json();
    let doomed_token = doomed["token"].as_str().unwrap().to_owned();
    let doomed_id = doomed["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &doomed_token, "")
            .await
            .status,
        200
    );
    let revoked = call(
        addr,
        "DELETE",
        &format!("/v1/keys/{doomed_id}"),
        &org_key,
        "",
    )
    .await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &doomed_token, "")
            .await
            .status,
        401
    );

    // The listing is masked and shows the revocation.
    let listed = call(addr, "GET", "/v1/keys", &org_key, "").await;
    assert_eq!(listed.status, 200);
    assert!(
        !listed.body.contains(kept.split_once('.').unwrap().1),
        "a secret in the listing"
    );
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    let doomed_listed = keys.iter().find(|k| k["id"] == doomed_id.as_str()).unwrap();
    assert!(doomed_listed["revoked_at"].as_u64().is_some());
    first.stop().await;

    let second = start_quickstart(&dir).await;
    assert!(
        second.exports().is_empty(),
        "no new demo keys on a used database"
    );
    let notice = second.printed.join("\n");
    assert!(
        notice.contains("only once") && notice.contains("quickstart.db"),
        "{notice}"
    );
    let addr = second.addr;
    let reply = call(addr, "GET", "/v1/whoami", &kept, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["scopes"], serde_json::json!(["objects.read"]));
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &org_key, "").await.status,
        200
    );
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &read_key, "").await.status,
        200
    );
    let reply = call(addr, "GET", "/v1/whoami", &doomed_token, "").await;
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("revoked")
    );
    second.stop().await;
}

#[tokio::test]
async fn the_key_routes_check_scopes_tenants_and_input() {
    let dir = TempDir::new("quickstart-keys");
    let example = start_quickstart(&dir).await;
    let exports = example.exports();
    let (org_key, read_key) = (&exports["ORG_KEY"], &exports["READ_KEY"]);
    let addr = example.addr;

    // Without keys.* scopes the key routes are closed.
    let reply = call(addr, "GET", "/v1/keys", read_key, "").await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"], "insufficient_scope");
    assert_eq!(
        call(addr, "POST", "/v1/keys", read_key, r#"{"name":"x"}"#)
            .await
            .status,
        403
    );

    // A key cannot grant more than its issuer holds.
    let limited = call(
        addr,
        "POST",
        "/v1/keys",
        org_key,
        r#"{"name":"keys","scopes":["keys.write","objects.read"]}"#,
    )
    .await;
    let limited_token = limited.json()["token"].as_str().unwrap().to_owned();
    let reply = call(
        addr,
        "POST",
        "/v1/keys",
        &limited_token,
        r#"{"name":"more","scopes":["objects.write"]}"#,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let reply = call(
        addr,
        "POST",
        "/v1/keys",
        &limited_token,
        r#"{"name":"same","scopes":["objects.read"]}"#,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    // Bad input is a 400 that says what is wrong.
    for body in [
        r#"{"scopes":["objects.read"]}"#,
        r#"{"name":"x","scopes":"objects.read"}"#,
        r#"{"name":"x","scopes":["bad scope"]}"#,
        r#"{"name":"x","expires_in_seconds":-5}"#,
        r#"{"name":"x","expires_in_seconds":0}"#,
    ] {
        let reply = call(addr, "POST", "/v1/keys", org_key, body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.json()["error"], "invalid_request");
    }

    // Keys of another organization are invisible: 404, like a missing one.
    let other_org = format!("sqlite://{}", dir.join("quickstart.db").display());
    let store = tower_keyauth::SqliteStore::connect(&other_org)
        .await
        .unwrap();
    let foreign = tower_keyauth::KeyLifecycle::issue(&store, tower_keyauth::NewKey::org("globex"))
        .await
        .unwrap();
    let reply = call(
        addr,
        "DELETE",
        &format!("/v1/keys/{}", foreign.record.id),
        org_key,
        "",
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        call(addr, "DELETE", "/v1/keys/nope", org_key, "")
            .await
            .status,
        404
    );
    assert_eq!(
        call(addr, "GET", "/v1/whoami", foreign.token.expose_secret(), "")
            .await
            .status,
        200
    );
    let listed = call(addr, "GET", "/v1/keys", org_key, "").await;
    assert!(!listed.body.contains(foreign.record.id.as_str()));
    example.stop().await;
}
