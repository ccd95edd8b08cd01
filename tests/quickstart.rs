//! The README's first command: `cargo run --example quickstart`, run as a
//! real process on a temporary database and exercised over loopback HTTP.

mod common;

use std::time::Duration;

use common::TempDir;
use common::client::{call, request};
use common::example::{Exited, RunningExample, run_until_exit, start_example};

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

    for path in [
        "/",
        "/health",
        "/health/",
        "/schema",
        "/schema/",
        "/docs/",
        "/docs/keys",
    ] {
        let reply = request(addr, &get(path, ""), b"").await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
    }

    // `/schema/` is the generated OpenAPI document of the whole API.
    let schema = request(addr, &get("/schema/", ""), b"")
        .await
        .unwrap()
        .json();
    let document: utoipa::openapi::OpenApi = serde_json::from_value(schema.clone())
        .unwrap_or_else(|e| panic!("not an OpenAPI document ({e}): {schema}"));
    assert!(
        schema["openapi"].as_str().unwrap().starts_with("3."),
        "{schema}"
    );
    let schemes = &schema["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["header_x-api-key"]["in"], "header", "{schemes}");
    assert_eq!(
        schemes["header_x-api-key"]["name"], "x-api-key",
        "{schemes}"
    );
    assert_eq!(schemes["query_api-key"]["in"], "query", "{schemes}");
    for path in [
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/keys/{id}/rotate",
        "/v1/objects",
        "/v1/whoami",
    ] {
        assert!(
            document.paths.paths.contains_key(path),
            "{path} in {schema}"
        );
    }
    assert_eq!(
        schema["paths"]["/v1/keys"]["post"]["security"][0]["bearer"][0],
        "keys.write"
    );
    assert_eq!(
        schema["paths"]["/v1/objects"]["get"]["security"][0]["bearer"][0],
        "objects.read"
    );

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
    // One scope too many is refused with a message that says so.
    let names: Vec<String> = (0..=tower_keyauth::Scopes::MAX_COUNT)
        .map(|i| format!("\"objects.n{i}\""))
        .collect();
    let body = format!(r#"{{"name":"wide","scopes":[{}]}}"#, names.join(","));
    let reply = call(addr, "POST", "/v1/keys", org_key, &body).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["message"],
        "`scopes`: invalid scopes: a set holds at most 256 scopes."
    );

    // Keys of another organization are invisible: 404, like a missing one.
    let other_org = format!("sqlite://{}", dir.join("quickstart.db").display());
    let store = tower_keyauth::store::SqliteStore::connect(&other_org)
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

/// A start-up failure: non-zero exit, nothing on stdout, and on stderr one
/// human line (no `Debug` dump) that names `variable`.
fn assert_one_line_failure(exited: &Exited, variable: &str) -> String {
    assert!(!exited.status.success(), "{exited:#?}");
    assert_eq!(exited.stdout, "", "{exited:#?}");
    let lines: Vec<&str> = exited.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {exited:#?}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(variable), "names {variable}: {line}");
    for debug in [
        "Error:",
        "Os {",
        "kind:",
        "AddrParseError",
        "Backend(",
        "PoolTimedOut",
    ] {
        assert!(!line.contains(debug), "debug output {debug:?} in {line}");
    }
    line.to_owned()
}

#[tokio::test]
async fn a_bad_keyauth_addr_is_one_line_naming_the_variable() {
    let dir = TempDir::new("quickstart-bad-addr");
    for bad in ["nonsense", "127.0.0.1", "localhost:3000x"] {
        let exited = run_until_exit(
            "quickstart",
            &dir.0,
            &[("KEYAUTH_ADDR", bad)],
            Duration::from_secs(20),
        )
        .await;
        let line = assert_one_line_failure(&exited, "KEYAUTH_ADDR");
        assert!(line.contains(bad), "{line}");
    }
}

#[tokio::test]
async fn an_address_in_use_is_one_line_suggesting_another() {
    let dir = TempDir::new("quickstart-addr-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exited = run_until_exit(
        "quickstart",
        &dir.0,
        &[("KEYAUTH_ADDR", addr.as_str())],
        Duration::from_secs(20),
    )
    .await;
    let line = assert_one_line_failure(&exited, "KEYAUTH_ADDR");
    assert!(
        line.contains(&format!("cannot listen on {addr}: address already in use")),
        "{line}"
    );
    assert!(line.contains("such as 127.0.0.1:"), "{line}");
    drop(taken);
}

/// PostgreSQL on a closed port, a PostgreSQL "server" that accepts and
/// never answers, and SQLite files in a missing directory and under a
/// regular file: each a one-line failure within 5 s that names
/// DATABASE_URL and never shows the password.
#[tokio::test]
async fn an_unreachable_database_is_given_up_within_5_s_in_one_line() {
    let dir = TempDir::new("quickstart-no-database");
    let closed_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    // Accepts connections and keeps them open without a word.
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    std::fs::write(dir.join("a-file"), b"").unwrap();
    let urls = [
        format!("postgres://keyauth:s3cret-pw@127.0.0.1:{closed_port}/keys"),
        format!("postgres://keyauth:s3cret-pw@127.0.0.1:{silent_port}/keys"),
        format!("sqlite://{}", dir.join("missing/keys.db").display()),
        format!("sqlite://{}", dir.join("a-file/keys.db").display()),
    ];
    // Built once up front, so that the runs time the example alone.
    common::example::example_binary("quickstart");
    // At once, so the slow cases cost their wait only once.
    let runs: Vec<_> = urls
        .iter()
        .map(|url| {
            let (dir, url) = (dir.0.clone(), url.clone());
            tokio::spawn(async move {
                run_until_exit(
                    "quickstart",
                    &dir,
                    &[
                        ("DATABASE_URL", url.as_str()),
                        ("KEYAUTH_ADDR", "127.0.0.1:0"),
                    ],
                    Duration::from_secs(40),
                )
                .await
            })
        })
        .collect();
    let mut exits = Vec::new();
    for run in runs {
        exits.push(run.await.unwrap());
    }
    for (url, exited) in urls.iter().zip(&exits) {
        let line = assert_one_line_failure(exited, "DATABASE_URL");
        assert!(
            exited.took < Duration::from_secs(5),
            "{url}: gave up after {:?}",
            exited.took
        );
        assert!(!line.contains("s3cret-pw"), "the password is shown: {line}");
        assert!(
            !dir.join("quickstart.db").exists(),
            "no default database is created"
        );
    }
}

/// The printed curl lines end their output with a newline, show the status
/// where their comment promises one, and work pasted into bash after the
/// printed export lines (run for real when curl is installed).
#[tokio::test]
async fn the_printed_curl_lines_end_with_a_newline_and_show_promised_statuses() {
    let dir = TempDir::new("quickstart-curl");
    let example = start_quickstart(&dir).await;
    let curls: Vec<&String> = example
        .printed
        .iter()
        .filter(|line| line.starts_with("curl "))
        .collect();
    assert!(curls.len() >= 3, "{:#?}", example.printed);
    let promises_status = |line: &str| {
        line.split_once(" #").is_some_and(|(_, comment)| {
            comment
                .trim_start()
                .starts_with(|c: char| c.is_ascii_digit())
        })
    };
    for line in &curls {
        let write_out = line
            .split_once(" -w '")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(format, _)| format)
            .unwrap_or_else(|| panic!("no -w '…' in {line}"));
        assert!(write_out.ends_with("\\n"), "{line}");
        if promises_status(line) {
            assert!(
                write_out.contains("%{http_code}") || line.contains(" -i "),
                "promises a status without showing it: {line}"
            );
        }
    }
    assert!(curls.iter().any(|line| promises_status(line)));

    let has_curl = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if has_curl {
        let exports: Vec<&str> = example
            .printed
            .iter()
            .filter(|line| line.starts_with("export "))
            .map(String::as_str)
            .collect();
        for line in &curls {
            let script = format!("set -e\n{}\n{line}\n", exports.join("\n"));
            let output = tokio::process::Command::new("bash")
                .args(["-c", &script])
                .output()
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{line}: {output:?}");
            assert!(stdout.ends_with('\n'), "{line}: {stdout:?}");
            assert!(stdout.contains('{'), "a JSON answer: {line}: {stdout:?}");
            if let Some((_, comment)) = line.split_once(" #").filter(|_| promises_status(line)) {
                let promised = &comment.trim_start()[..3];
                assert!(
                    stdout.contains(&format!("HTTP {promised}"))
                        || stdout.starts_with(&format!("HTTP/1.1 {promised}")),
                    "{line}: {stdout:?}"
                );
            }
        }
    }
    example.stop().await;
}

/// axum's own rejections and the router's 404 and 405 answer in the
/// crate's JSON error shape, their status kept.
#[tokio::test]
async fn rejections_and_unknown_routes_answer_in_the_json_error_shape() {
    let dir = TempDir::new("quickstart-rejections");
    let example = start_quickstart(&dir).await;
    let org_key = example.exports()["ORG_KEY"].clone();
    let addr = example.addr;
    let send = |method: &str, path: &str, content_type: Option<&str>, body: &str| {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {org_key}"
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("\r\ncontent-type: {content_type}"));
        }
        let body = body.as_bytes().to_vec();
        async move { request(addr, &head, &body).await.unwrap() }
    };
    let cases = [
        (
            "POST",
            "/v1/keys",
            Some("text/plain"),
            r#"{"name":"x"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/objects",
            Some("text/plain"),
            "x",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/keys",
            Some("application/json"),
            r#"{"name":"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/objects",
            Some("application/json"),
            "{bad",
            400,
            "invalid_request",
        ),
        ("GET", "/v1/nope", None, "", 404, "not_found"),
        ("PUT", "/v1/whoami", None, "", 405, "method_not_allowed"),
        (
            "PUT",
            "/v1/keys/some-id",
            None,
            "",
            405,
            "method_not_allowed",
        ),
        ("GET", "/v1/keys/some-id", None, "", 404, "not_found"),
        (
            "POST",
            "/v1/keys",
            Some("text/plain"),
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/keys",
            Some("application/json"),
            r#"{"name":"x","unknown":1}"#,
            400,
            "invalid_request",
        ),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let reply = send(method, path, content_type, body).await;
        let what = format!("{method} {path} {content_type:?} {body:?}");
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let json = reply.json();
        assert_eq!(json["error"], code, "{what}: {json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {json}"
        );
    }
    // Still: no body at all is fine, and JSON bodies work.
    assert_eq!(send("POST", "/v1/objects", None, "").await.status, 201);
    assert_eq!(
        send(
            "POST",
            "/v1/objects",
            Some("application/json"),
            r#"{"name":"a"}"#
        )
        .await
        .status,
        201
    );
    example.stop().await;
}

/// The layer refuses with 503 when the store does not answer within its
/// `store_timeout`, as the README recommends for production. Read from
/// the source here; `tests/postgres.rs` checks it against a locked table.
#[test]
fn the_quickstart_sets_a_store_timeout() {
    let source = include_str!("../examples/quickstart.rs");
    let layer = &source[source
        .find("KeyAuthLayer::new(store)")
        .expect("the quickstart builds its layer")..];
    let layer = &layer[..layer.find(';').unwrap()];
    assert!(layer.contains(".store_timeout("), "{layer}");
}

/// The issue's acceptance: a key issued through the quickstart's key API
/// with `"rate_limits": [{"limit": 5, "window_seconds": 60}]` gets five
/// answers with the `RateLimit` fields, then 429 with `Retry-After`.
#[tokio::test]
async fn a_key_limited_to_five_a_minute_gets_429_on_its_sixth_request() {
    let dir = TempDir::new("quickstart-limits");
    let example = start_quickstart(&dir).await;
    let org_key = example.exports()["ORG_KEY"].clone();
    let addr = example.addr;

    let body = r#"{"name":"partner","rate_limits":[{"limit":5,"window_seconds":60}]}"#;
    let created = call(addr, "POST", "/v1/keys", &org_key, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    assert_eq!(
        created["key"]["rate_limits"],
        serde_json::json!([{ "limit": 5, "window_seconds": 60 }])
    );
    let token = created["token"].as_str().unwrap().to_owned();

    for remaining in (0..5).rev() {
        let reply = call(addr, "GET", "/v1/whoami", &token, "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("ratelimit-policy"), Some("default;q=5;w=60"));
        let fields = reply.header("ratelimit").unwrap();
        assert!(
            fields.starts_with(&format!("default;r={remaining};t=")),
            "{fields}"
        );
        // whoami shows the key's limits.
        assert_eq!(
            reply.json()["rate_limits"],
            serde_json::json!([{ "limit": 5, "window_seconds": 60 }])
        );
    }
    let refused = call(addr, "GET", "/v1/whoami", &token, "").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"], "rate_limited");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("ratelimit-policy"), Some("default;q=5;w=60"));
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("default;r=0;t={retry_after}").as_str())
    );

    // The listing shows the key's limits.
    let listed = call(addr, "GET", "/v1/keys", &org_key, "").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let keys = listed.json()["keys"].as_array().unwrap().clone();
    let partner = keys.iter().find(|k| k["name"] == "partner").unwrap();
    assert_eq!(
        partner["rate_limits"],
        serde_json::json!([{ "limit": 5, "window_seconds": 60 }])
    );
    example.stop().await;
}

#[tokio::test]
async fn an_address_sending_refused_keys_is_throttled_as_configured() {
    let dir = TempDir::new("quickstart-throttle");
    let url = format!("sqlite://{}", dir.join("quickstart.db").display());
    let example = start_example(
        "quickstart",
        &[
            ("DATABASE_URL", url.as_str()),
            ("KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE", "3"),
        ],
    )
    .await;
    let org_key = example.exports()["ORG_KEY"].clone();
    let addr = example.addr;
    let forged = format!("{}x", &org_key[..org_key.len() - 1]);
    for _ in 0..3 {
        let reply = call(addr, "GET", "/v1/whoami", &forged, "").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    // Now even the right key waits out the minute.
    let blocked = call(addr, "GET", "/v1/whoami", &org_key, "").await;
    assert_eq!(blocked.status, 429, "{}", blocked.body);
    assert_eq!(blocked.json()["error"], "rate_limited");
    assert!(blocked.header("retry-after").is_some());
    example.stop().await;
}

#[tokio::test]
async fn a_bad_failed_attempts_setting_is_one_line_naming_the_variable() {
    let dir = TempDir::new("quickstart-bad-throttle");
    let exited = run_until_exit(
        "quickstart",
        &dir.0,
        &[("KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE", "lots")],
        Duration::from_secs(20),
    )
    .await;
    let line = assert_one_line_failure(&exited, "KEYAUTH_FAILED_ATTEMPTS_PER_MINUTE");
    assert!(line.contains("lots"), "{line}");
}

/// GitHub's side of the secret scanning endpoint: a key pair made here,
/// its public key written to `dir` in GitHub's JSON shape under `k1`.
fn github_keys_in(dir: &TempDir) -> (p256::ecdsa::SigningKey, std::path::PathBuf) {
    use p256::elliptic_curve::Generate;
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let signing = p256::ecdsa::SigningKey::generate();
    let pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let path = dir.join("github-keys.json");
    let json = serde_json::json!({
        "public_keys": [{ "key_identifier": "k1", "key": pem, "is_current": true }]
    });
    std::fs::write(&path, json.to_string()).unwrap();
    (signing, path)
}

/// The issue's acceptance through the quickstart: with
/// `SECRET_SCANNING_KEYS`, a report signed by GitHub's key revokes the
/// demo org key, whose next request is 401; the route needs no API key.
#[tokio::test]
async fn the_quickstart_takes_githubs_reports_when_given_its_keys() {
    use base64ct::Encoding;
    use p256::ecdsa::signature::Signer;

    let dir = TempDir::new("quickstart-secret-scanning");
    let (signing, keys) = github_keys_in(&dir);
    let url = format!("sqlite://{}", dir.join("quickstart.db").display());
    let example = start_example(
        "quickstart",
        &[
            ("DATABASE_URL", url.as_str()),
            ("SECRET_SCANNING_KEYS", keys.to_str().unwrap()),
        ],
    )
    .await;
    let addr = example.addr;
    let mounted = example
        .printed
        .iter()
        .find(|line| line.starts_with("secret scanning: "))
        .unwrap_or_else(|| panic!("no secret scanning line in {:#?}", example.printed));
    assert!(
        mounted.contains(&format!("POST http://{addr}/v1/secret-scanning")),
        "{mounted}"
    );
    let org_key = example.exports()["ORG_KEY"].clone();
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &org_key, "").await.status,
        200
    );

    let body = serde_json::json!([{
        "token": org_key,
        "type": "quickstart_key",
        "url": "https://github.com/octocat/hello/blob/0123456/.env",
        "source": "content",
    }])
    .to_string();
    let signature: p256::ecdsa::DerSignature = signing.sign(body.as_bytes());
    let mut buffer = [0; 128];
    let signature = base64ct::Base64::encode(signature.as_bytes(), &mut buffer).unwrap();
    let head = |signature: &str| {
        format!(
            "POST /v1/secret-scanning HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ngithub-public-key-identifier: k1\r\ngithub-public-key-signature: {signature}"
        )
    };

    // Public to the layer, so an unsigned report meets the endpoint's 400,
    // not the layer's 401.
    let unsigned = request(
        addr,
        "POST /v1/secret-scanning HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json",
        body.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(unsigned.status, 400, "{}", unsigned.body);
    // One character of the signature changed: a broken signature (400) or
    // another one (403).
    let mut forged = signature.to_owned();
    let other = if forged.as_bytes()[20] == b'A' {
        "B"
    } else {
        "A"
    };
    forged.replace_range(20..21, other);
    let forged = request(addr, &head(&forged), body.as_bytes())
        .await
        .unwrap();
    assert!([400, 403].contains(&forged.status), "{}", forged.body);
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &org_key, "").await.status,
        200
    );

    let reply = request(addr, &head(signature), body.as_bytes())
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = &reply.json()[0];
    assert_eq!(answer["label"], "true_positive", "{}", reply.body);
    assert_eq!(answer["token_type"], "quickstart_key");
    assert_eq!(
        call(addr, "GET", "/v1/whoami", &org_key, "").await.status,
        401
    );
    example.stop().await;
}

#[tokio::test]
async fn unreadable_or_malformed_secret_scanning_keys_are_one_line_naming_the_variable() {
    let dir = TempDir::new("quickstart-bad-secret-scanning");
    let missing = dir.join("no-such-file.json");
    let malformed = dir.join("malformed.json");
    std::fs::write(
        &malformed,
        r#"{"public_keys": [{"key_identifier": "k1", "key": "nope"}]}"#,
    )
    .unwrap();
    for (path, says) in [
        (&missing, "cannot read"),
        (&malformed, "does not hold GitHub's public keys"),
    ] {
        let exited = run_until_exit(
            "quickstart",
            &dir.0,
            &[("SECRET_SCANNING_KEYS", path.to_str().unwrap())],
            Duration::from_secs(20),
        )
        .await;
        let line = assert_one_line_failure(&exited, "SECRET_SCANNING_KEYS");
        assert!(line.contains(says), "{line}");
        assert!(line.contains(path.to_str().unwrap()), "{line}");
    }
}

#[tokio::test]
async fn keys_work_under_a_pepper_and_move_to_a_new_one() {
    let dir = TempDir::new("quickstart-pepper");
    let url = format!("sqlite://{}", dir.join("quickstart.db").display());
    let first_pepper = "a first pepper of at least thirty-two bytes";
    let example = start_example(
        "quickstart",
        &[
            ("DATABASE_URL", url.as_str()),
            ("KEYAUTH_PEPPER", first_pepper),
        ],
    )
    .await;
    assert!(
        example
            .printed
            .iter()
            .any(|line| line.contains("peppered hashes") && line.contains("version 1")),
        "the start names the pepper's version"
    );
    assert!(
        !example.printed.join("\n").contains(first_pepper),
        "the pepper is never printed"
    );
    let org_key = example.exports()["ORG_KEY"].clone();
    assert_eq!(
        call(example.addr, "GET", "/v1/whoami", &org_key, "")
            .await
            .status,
        200
    );
    example.stop().await;

    // A new pepper, the first kept as an earlier version: the key still works.
    let example = start_example(
        "quickstart",
        &[
            ("DATABASE_URL", url.as_str()),
            (
                "KEYAUTH_PEPPER",
                "a second pepper, also thirty-two bytes or more",
            ),
            ("KEYAUTH_PEPPER_VERSION", "2"),
            ("KEYAUTH_EARLIER_PEPPER", first_pepper),
            ("KEYAUTH_EARLIER_PEPPER_VERSION", "1"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(example.addr, "GET", "/v1/whoami", &org_key, "")
                .await
                .status,
            200
        );
    }
    // The re-hash is written off the request path: give it its moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    example.stop().await;

    // Without the first pepper, a key not yet moved would fail; this one
    // was re-hashed on use, so the second pepper alone verifies it.
    let example = start_example(
        "quickstart",
        &[
            ("DATABASE_URL", url.as_str()),
            (
                "KEYAUTH_PEPPER",
                "a second pepper, also thirty-two bytes or more",
            ),
            ("KEYAUTH_PEPPER_VERSION", "2"),
        ],
    )
    .await;
    assert_eq!(
        call(example.addr, "GET", "/v1/whoami", &org_key, "")
            .await
            .status,
        200
    );
    example.stop().await;
}

#[tokio::test]
async fn a_short_pepper_is_one_line_naming_the_variable() {
    let dir = TempDir::new("quickstart-short-pepper");
    let exited = run_until_exit(
        "quickstart",
        &dir.0,
        &[("KEYAUTH_PEPPER", "too short")],
        Duration::from_secs(20),
    )
    .await;
    let line = assert_one_line_failure(&exited, "KEYAUTH_PEPPER");
    assert!(
        !line.contains("too short"),
        "the secret is not echoed: {line}"
    );
}

#[tokio::test]
async fn an_earlier_pepper_without_a_current_one_is_one_line_naming_the_variable() {
    let dir = TempDir::new("quickstart-earlier-pepper-alone");
    let exited = run_until_exit(
        "quickstart",
        &dir.0,
        &[(
            "KEYAUTH_EARLIER_PEPPER",
            "an earlier pepper of thirty-two bytes or more",
        )],
        Duration::from_secs(20),
    )
    .await;
    let line = assert_one_line_failure(&exited, "KEYAUTH_PEPPER");
    assert!(
        !line.contains("thirty-two"),
        "the secret is not echoed: {line}"
    );
}
