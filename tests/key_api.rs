//! The key API through a real axum server on loopback: scope and expiry
//! bounds, personal tokens, members who leave, tenant isolation, pages,
//! rotation with grace, JSON errors, and the audit events it emits.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use common::client::{call, request};
use serde_json::Value;
use tower_keyauth::audit::{AuditAction, AuditEvent};
use tower_keyauth::ids::{OrgId, UserId};
use tower_keyauth::key_api::KeyApi;
use tower_keyauth::store::Membership;
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey, Principal, Scopes};

struct Server {
    addr: SocketAddr,
    store: MemoryStore,
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

async fn serve() -> Server {
    let store = MemoryStore::new();
    let events: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
    let sink = {
        let events = events.clone();
        move |event: &AuditEvent| events.lock().unwrap().push(event.clone())
    };
    let app = Router::new()
        .route(
            "/v1/whoami",
            get(|principal: Principal| async move { axum::Json(principal) }),
        )
        .nest("/v1/keys", KeyApi::new(store.clone()).audit(sink).router())
        .layer(KeyAuthLayer::new(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        addr,
        store,
        events,
    }
}

impl Server {
    async fn token(&self, new_key: NewKey) -> String {
        let issued = self.store.issue(new_key).await.unwrap();
        issued.token.expose_secret().to_owned()
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
        let reply = call(self.addr, method, path, token, body).await;
        let json = if reply.body.is_empty() {
            Value::Null
        } else {
            reply.json()
        };
        (reply.status, json)
    }
}

fn scopes(names: &[&str]) -> Scopes {
    Scopes::parse(names.iter().copied()).unwrap()
}

#[tokio::test]
async fn a_key_never_mints_a_broader_or_longer_lived_key() {
    let server = serve().await;
    let admin = server.token(NewKey::org("acme")).await;
    let narrow = server
        .token(
            NewKey::org("acme")
                .scopes(scopes(&["keys.write", "objects.read"]))
                .expires_in(Duration::from_secs(600)),
        )
        .await;

    // A scope beyond the issuer's: 403 naming it.
    let (status, body) = server
        .call(
            "POST",
            "/v1/keys",
            &narrow,
            r#"{"name":"x","scopes":["objects.write"]}"#,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");

    // No expiry asked: the issuer's.
    let (status, body) = server
        .call(
            "POST",
            "/v1/keys",
            &narrow,
            r#"{"name":"x","scopes":["objects.read"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let expires_at = body["key"]["expires_at"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 601).contains(&expires_at), "{body}");

    // Longer than the issuer: refused, saying so.
    let (status, body) = server
        .call(
            "POST",
            "/v1/keys",
            &narrow,
            r#"{"name":"x","expires_in_seconds":3600}"#,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("outlive"));
    // Within: fine, and without `scopes` it gets the issuer's.
    let (status, body) = server
        .call(
            "POST",
            "/v1/keys",
            &narrow,
            r#"{"name":"x","expires_in_seconds":60}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["key"]["scopes"],
        serde_json::json!(["keys.write", "objects.read"])
    );

    // An issuer without expiry may mint a key without one.
    let (status, body) = server
        .call("POST", "/v1/keys", &admin, r#"{"name":"forever"}"#)
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"]["expires_at"], Value::Null);
    let forever = body["key"]["id"].as_str().unwrap().to_owned();

    // Rotating a key with a scope the caller lacks: refused; the narrow key
    // rotating the admin-made key cuts the successor to its own expiry.
    let (status, body) = server
        .call("POST", &format!("/v1/keys/{forever}/rotate"), &narrow, "")
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    let (status, body) = server
        .call(
            "POST",
            "/v1/keys",
            &admin,
            r#"{"name":"reader","scopes":["objects.read"]}"#,
        )
        .await;
    assert_eq!(status, 201);
    let reader = body["key"]["id"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call("POST", &format!("/v1/keys/{reader}/rotate"), &narrow, "")
        .await;
    assert_eq!(status, 201, "{body}");
    let successor_expiry = body["key"]["expires_at"].as_u64().unwrap();
    assert!(successor_expiry <= now + 601, "{body}");
}

#[tokio::test]
async fn keys_minted_by_a_personal_token_stop_when_the_member_leaves() {
    let server = serve().await;
    let (ada, acme) = (UserId::from("ada"), OrgId::from("acme"));
    server
        .store
        .set_membership(
            &ada,
            &acme,
            Some(Membership::new(scopes(&[
                "keys.write",
                "keys.read",
                "objects.read",
            ]))),
        )
        .await
        .unwrap();
    let pat = server.token(NewKey::personal("ada")).await;
    let with_org = |token: &str, method: &str, path: &str, body: &str| {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nx-org-id: acme"
        );
        if !body.is_empty() {
            head.push_str("\r\ncontent-type: application/json");
        }
        let (addr, body) = (server.addr, body.to_owned());
        async move { request(addr, &head, body.as_bytes()).await.unwrap() }
    };

    // The PAT acts in acme with its membership's scopes only.
    let reply = with_org(
        &pat,
        "POST",
        "/v1/keys",
        r#"{"name":"laptop","scopes":["objects.write"]}"#,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let reply = with_org(&pat, "POST", "/v1/keys", r#"{"name":"laptop"}"#).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let minted = reply.json();
    assert_eq!(minted["key"]["kind"], "personal");
    assert_eq!(minted["key"]["user"], "ada");
    assert_eq!(
        minted["key"]["scopes"],
        serde_json::json!(["keys.read", "keys.write", "objects.read"])
    );
    let minted_token = minted["token"].as_str().unwrap().to_owned();

    // The PAT manages its user's tokens only: it lists the minted one, and
    // acme's org keys are not its to see.
    let org_key = server.store.issue(NewKey::org("acme")).await.unwrap();
    let listed = with_org(&pat, "GET", "/v1/keys", "").await;
    assert_eq!(listed.status, 200);
    assert!(listed.body.contains(minted["key"]["id"].as_str().unwrap()));
    assert!(!listed.body.contains(org_key.record.id.as_str()));
    let reply = with_org(&pat, "GET", &format!("/v1/keys/{}", org_key.record.id), "").await;
    assert_eq!(reply.status, 404);

    let reply = with_org(&minted_token, "GET", "/v1/whoami", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Ada leaves acme: the key she minted stops working there.
    server
        .store
        .set_membership(&ada, &acme, None)
        .await
        .unwrap();
    let reply = with_org(&minted_token, "GET", "/v1/whoami", "").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[tokio::test]
async fn other_tenants_keys_answer_404_like_missing_ones() {
    let server = serve().await;
    let acme = server.token(NewKey::org("acme")).await;
    let docs = server.token(NewKey::workspace("acme", "docs")).await;
    let globex = server.store.issue(NewKey::org("globex")).await.unwrap();
    let sibling = server
        .store
        .issue(NewKey::workspace("acme", "blog"))
        .await
        .unwrap();

    for (token, id) in [
        (&acme, globex.record.id.as_str()),
        (&docs, globex.record.id.as_str()),
        (&docs, sibling.record.id.as_str()),
        (&acme, "nosuchkey123"),
    ] {
        for (method, path) in [
            ("GET", format!("/v1/keys/{id}")),
            ("DELETE", format!("/v1/keys/{id}")),
            ("POST", format!("/v1/keys/{id}/rotate")),
        ] {
            let (status, body) = server.call(method, &path, token, "").await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert_eq!(
                body,
                serde_json::json!({"error":"not_found","message":"No such key."})
            );
        }
    }
    // The org key sees its workspaces' keys; nothing was revoked above.
    let (status, body) = server
        .call("GET", &format!("/v1/keys/{}", sibling.record.id), &acme, "")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_at"], Value::Null);
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/keys/{}", sibling.record.id),
            &acme,
            "",
        )
        .await;
    assert_eq!(status, 204);
    assert!(
        server
            .store
            .find_key(&sibling.record.id)
            .await
            .unwrap()
            .unwrap()
            .is_revoked()
    );
    // A workspace key issues workspace keys.
    let (status, body) = server
        .call("POST", "/v1/keys", &docs, r#"{"name":"w"}"#)
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["key"]["workspace"], "docs");
}

use tower_keyauth::KeyStore;

#[tokio::test]
async fn listings_come_in_pages_newest_first() {
    let server = serve().await;
    let acme = server.token(NewKey::org("acme")).await;
    for i in 0..6 {
        let (status, _) = server
            .call("POST", "/v1/keys", &acme, &format!(r#"{{"name":"k{i}"}}"#))
            .await;
        assert_eq!(status, 201);
    }
    server.store.issue(NewKey::org("globex")).await.unwrap();
    let mut seen = Vec::new();
    let mut path = "/v1/keys?limit=3".to_owned();
    loop {
        let (status, body) = server.call("GET", &path, &acme, "").await;
        assert_eq!(status, 200, "{body}");
        let keys = body["keys"].as_array().unwrap();
        assert!(keys.len() <= 3);
        seen.extend(keys.iter().map(|key| {
            (
                key["created_at"].as_u64().unwrap(),
                key["name"].as_str().unwrap().to_owned(),
                key["id"].as_str().unwrap().to_owned(),
            )
        }));
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/keys?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    // Seven keys of acme (the caller's own included), each once, newest first.
    assert_eq!(seen.len(), 7, "{seen:?}");
    let mut ids: Vec<&str> = seen.iter().map(|(_, _, id)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    assert!(seen.windows(2).all(|pair| pair[0].0 >= pair[1].0));
    assert_eq!(seen[0].1, "k5");
    for bad in [
        "/v1/keys?limit=0",
        "/v1/keys?limit=101",
        "/v1/keys?limit=x",
        "/v1/keys?cursor=nope",
    ] {
        let (status, body) = server.call("GET", bad, &acme, "").await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn a_rotation_with_grace_keeps_the_old_key_working_until_it_ends() {
    let server = serve().await;
    let acme = server.token(NewKey::org("acme")).await;
    let (_, body) = server
        .call(
            "POST",
            "/v1/keys",
            &acme,
            r#"{"name":"ci","metadata":{"team":"infra"}}"#,
        )
        .await;
    let (old_id, old_token) = (
        body["key"]["id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    );
    let (status, body) = server
        .call(
            "POST",
            &format!("/v1/keys/{old_id}/rotate"),
            &acme,
            r#"{"grace_seconds":2}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let new_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["key"]["name"], "ci");
    assert_eq!(body["key"]["metadata"], serde_json::json!({"team":"infra"}));
    assert!(body["key"]["grace_ends_at"].is_null());
    // Both work during the grace period; the successor shows its metadata.
    assert_eq!(
        server.call("GET", "/v1/whoami", &old_token, "").await.0,
        200
    );
    let (status, whoami) = server.call("GET", "/v1/whoami", &new_token, "").await;
    assert_eq!(status, 200);
    assert_eq!(whoami["metadata"], serde_json::json!({"team":"infra"}));
    let (_, old) = server
        .call("GET", &format!("/v1/keys/{old_id}"), &acme, "")
        .await;
    assert!(old["grace_ends_at"].is_u64(), "{old}");
    // A retried rotation mints no second successor.
    let (status, body) = server
        .call(
            "POST",
            &format!("/v1/keys/{old_id}/rotate"),
            &acme,
            r#"{"grace_seconds":2}"#,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("already_rotated"))
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, body) = server.call("GET", "/v1/whoami", &old_token, "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        server.call("GET", "/v1/whoami", &new_token, "").await.0,
        200
    );
    // A grace beyond thirty days is refused.
    let (status, _) = server
        .call(
            "POST",
            &format!("/v1/keys/{old_id}/rotate"),
            &acme,
            r#"{"grace_seconds":2592001}"#,
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_error_answers_the_json_error_shape() {
    let server = serve().await;
    let acme = server.token(NewKey::org("acme")).await;
    let reader = server
        .token(NewKey::org("acme").scopes(scopes(&["keys.read"])))
        .await;
    let too_big = format!(
        r#"{{"name":"x","metadata":{{"notes":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "POST",
            "application/json",
            "{not json".into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "application/json",
            "[1]".into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "application/json",
            r#"{"name":"x","colour":"red"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "application/json",
            r#"{"name":""}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "application/json",
            r#"{"name":"x","metadata":[1]}"#.into(),
            400,
            "invalid_request",
        ),
        ("POST", "application/json", too_big, 400, "invalid_request"),
        (
            "POST",
            "text/plain",
            r#"{"name":"x"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "application/json",
            format!(r#"{{"name":"{}"}}"#, "x".repeat(20000)),
            413,
            "payload_too_large",
        ),
        (
            "PUT",
            "application/json",
            r#"{"name":"x"}"#.into(),
            405,
            "method_not_allowed",
        ),
    ];
    for (method, content_type, body, status, code) in cases {
        let head = format!(
            "{method} /v1/keys HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {acme}\r\ncontent-type: {content_type}"
        );
        let reply = request(server.addr, &head, body.as_bytes()).await.unwrap();
        assert_eq!(
            reply.status, status,
            "{method} {content_type}: {}",
            reply.body
        );
        let json = reply.json();
        assert_eq!(json["error"], code, "{json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
    // The metadata refusal says why.
    let too_big = format!(
        r#"{{"name":"x","metadata":{{"notes":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let (_, body) = server.call("POST", "/v1/keys", &acme, &too_big).await;
    assert!(body["message"].as_str().unwrap().contains("4096"), "{body}");
    // Without keys.write.
    let (status, body) = server
        .call("POST", "/v1/keys", &reader, r#"{"name":"x"}"#)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "insufficient_scope");
    // Without a credential: the layer's 401.
    let reply = request(server.addr, "GET /v1/keys HTTP/1.1\r\nhost: localhost", b"")
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "missing_credentials");
}

#[tokio::test]
async fn each_operation_is_audited_without_a_secret() {
    let server = serve().await;
    let acme_issued = server.store.issue(NewKey::org("acme")).await.unwrap();
    let acme = acme_issued.token.expose_secret().to_owned();
    let (_, issued) = server
        .call("POST", "/v1/keys", &acme, r#"{"name":"a"}"#)
        .await;
    let id = issued["key"]["id"].as_str().unwrap().to_owned();
    let (_, rotated) = server
        .call(
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            &acme,
            r#"{"grace_seconds":60}"#,
        )
        .await;
    let successor = rotated["key"]["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call("DELETE", &format!("/v1/keys/{successor}"), &acme, "")
        .await;
    assert_eq!(status, 204);
    // Revoking again answers the same and records nothing more.
    let (status, _) = server
        .call("DELETE", &format!("/v1/keys/{successor}"), &acme, "")
        .await;
    assert_eq!(status, 204);

    let events = server.events.lock().unwrap().clone();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|event| (event.action.to_string(), event.key_id.to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("issued".to_owned(), id.clone()),
            ("rotated".to_owned(), id.clone()),
            ("issued".to_owned(), successor.clone()),
            ("revoked".to_owned(), successor.clone()),
        ]
    );
    assert_eq!(
        events[1].action,
        AuditAction::Rotated {
            successor: successor.as_str().into()
        }
    );
    for event in &events {
        assert_eq!(event.actor.as_ref().unwrap().key_id, acme_issued.record.id);
        assert_eq!(event.org().unwrap().as_str(), "acme");
        let shown = format!("{event:?}");
        for secret in [
            &acme,
            issued["token"].as_str().unwrap(),
            rotated["token"].as_str().unwrap(),
        ] {
            let secret_part = &secret[secret.find('.').unwrap() + 1..];
            assert!(!shown.contains(secret_part), "{shown}");
        }
    }
}
