//! The key API through a real axum server on loopback: scope, expiry and
//! limit bounds, personal tokens, members who leave, tenant isolation,
//! pages, rotation with grace, JSON errors, and the audit events it emits.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use common::client::{call, request};
use serde_json::{Value, json};
use tower_keyauth::audit::{AuditAction, AuditEvent};
use tower_keyauth::client_addr::IpAllowlist;
use tower_keyauth::ids::{KeyId, OrgId, UserId};
use tower_keyauth::key_api::KeyApi;
use tower_keyauth::limit::{Credits, RateLimit, Refill, UsageLimits};
use tower_keyauth::store::{CreditSpend, KeyRecord, Membership, StoreError};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey, Principal, Scopes};

struct Server {
    addr: SocketAddr,
    store: MemoryStore,
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

async fn serve() -> Server {
    let store = MemoryStore::new();
    serve_with_layer_over(store.clone(), store).await
}

/// The key API over `store`, behind a layer that reads keys from
/// `layer_store`.
async fn serve_with_layer_over<S: KeyStore + Clone>(store: MemoryStore, layer_store: S) -> Server {
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
        .layer(KeyAuthLayer::new(layer_store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // With the peer's address, which keys with `allowed_ips` need.
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
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

/// `limit` per `seconds`.
fn per(limit: u32, seconds: u64) -> RateLimit {
    RateLimit::per(limit, Duration::from_secs(seconds)).unwrap()
}

#[tokio::test]
async fn a_key_is_issued_with_rate_limits_credits_and_allowed_ips_and_listed_with_them() {
    let server = serve().await;
    let admin = server.token(NewKey::org("acme")).await;
    let body = json!({
        "name": "partner",
        "rate_limits": [
            { "limit": 100, "window_seconds": 60 },
            { "limit": 10, "window_seconds": 1, "name": "burst" },
            { "limit": 1000, "window_seconds": 60, "per": "organization" }
        ],
        "credits": { "remaining": 500, "refill": { "amount": 1000, "interval_seconds": 86400 } },
        "allowed_ips": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]
    });
    let (status, issued) = server
        .call("POST", "/v1/keys", &admin, &body.to_string())
        .await;
    assert_eq!(status, 201, "{issued}");
    let rate_limits = json!([
        { "limit": 100, "window_seconds": 60 },
        { "limit": 10, "window_seconds": 1, "name": "burst" },
        { "limit": 1000, "window_seconds": 60, "per": "organization" }
    ]);
    let credits =
        json!({ "remaining": 500, "refill": { "amount": 1000, "interval_seconds": 86400 } });
    // A bare address shows its prefix: the same shape, accepted back.
    let allowed_ips = json!(["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]);
    let key = &issued["key"];
    assert_eq!(key["rate_limits"], rate_limits, "{key}");
    assert_eq!(key["credits"], credits, "{key}");
    assert_eq!(key["allowed_ips"], allowed_ips, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();

    // The store keeps them with the key.
    let record = server
        .store
        .find_key(&tower_keyauth::ids::KeyId::from(id.as_str()))
        .await
        .unwrap()
        .unwrap();
    let limits = record.limits.as_deref().unwrap();
    assert_eq!(
        limits.rate_limits(),
        [
            per(100, 60),
            per(10, 1).named("burst").unwrap(),
            per(1000, 60).counted_per(tower_keyauth::limit::CountedPer::Organization)
        ]
    );
    assert_eq!(
        limits.credits(),
        Some(
            &Credits::new(500)
                .unwrap()
                .refill(Refill::every(1000, Duration::from_secs(86400)).unwrap())
        )
    );
    assert_eq!(
        limits.allowed_ips(),
        Some(&IpAllowlist::parse(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]).unwrap())
    );

    // Shown by GET /{id} and in the listing; a key without limits shows
    // nulls, like its metadata.
    let (status, shown) = server
        .call("GET", &format!("/v1/keys/{id}"), &admin, "")
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["rate_limits"], rate_limits);
    assert_eq!(shown["allowed_ips"], allowed_ips);
    assert_eq!(shown["credits"]["refill"], credits["refill"]);
    let (status, page) = server.call("GET", "/v1/keys", &admin, "").await;
    assert_eq!(status, 200, "{page}");
    let keys = page["keys"].as_array().unwrap();
    let listed = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(listed["rate_limits"], rate_limits);
    assert_eq!(listed["allowed_ips"], allowed_ips);
    let plain = keys.iter().find(|k| k["id"] != id.as_str()).unwrap();
    for field in ["rate_limits", "credits", "allowed_ips", "metadata"] {
        assert_eq!(plain[field], Value::Null, "{field} of {plain}");
    }

    // Each field alone, and `null` for none at all.
    for (field, value, shown) in [
        (
            "rate_limits",
            json!([{ "limit": 5, "window_seconds": 60 }]),
            json!([{ "limit": 5, "window_seconds": 60 }]),
        ),
        (
            "credits",
            json!({ "remaining": 0 }),
            json!({ "remaining": 0, "refill": null }),
        ),
        (
            "allowed_ips",
            json!(["::ffff:127.0.0.1"]),
            json!(["::ffff:127.0.0.1/128"]),
        ),
    ] {
        let body = json!({ "name": field, field: value });
        let (status, issued) = server
            .call("POST", "/v1/keys", &admin, &body.to_string())
            .await;
        assert_eq!(status, 201, "{body}: {issued}");
        for other in ["rate_limits", "credits", "allowed_ips"] {
            let expected = if other == field { &shown } else { &Value::Null };
            assert_eq!(&issued["key"][other], expected, "{other} of {issued}");
        }
    }
    let (status, issued) = server
        .call(
            "POST",
            "/v1/keys",
            &admin,
            r#"{"name":"free","rate_limits":null,"credits":null,"allowed_ips":null}"#,
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["key"]["rate_limits"], Value::Null);

    // The new key works (from 127.0.0.1) and sees its limits.
    let token = issued_token(&server, &admin, &body_with_limits()).await;
    let (status, who) = server.call("GET", "/v1/whoami", &token, "").await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(
        who["rate_limits"],
        json!([{ "limit": 50, "window_seconds": 60 }])
    );
    assert_eq!(who["allowed_ips"], json!(["127.0.0.0/8"]));
}

fn body_with_limits() -> String {
    json!({
        "name": "limited",
        "rate_limits": [{ "limit": 50, "window_seconds": 60 }],
        "allowed_ips": ["127.0.0.0/8"]
    })
    .to_string()
}

async fn issued_token(server: &Server, issuer: &str, body: &str) -> String {
    let (status, issued) = server.call("POST", "/v1/keys", issuer, body).await;
    assert_eq!(status, 201, "{body}: {issued}");
    issued["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn bad_limits_answer_400_naming_the_field_and_its_bound() {
    let server = serve().await;
    let admin = server.token(NewKey::org("acme")).await;
    let many_networks: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!("5/min"), "`rate_limits` must be a list of objects"),
        (json!({ "limit": 5 }), "`rate_limits` must be a list of objects"),
        (json!([5]), "`rate_limits` must be a list of objects"),
        (
            json!([{ "limit": 0, "window_seconds": 60 }]),
            "`rate_limits[0].limit`: a rate limit allows between 1 and 1000000000 requests per window.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60 }, { "limit": 5_000_000_000u64, "window_seconds": 1 }]),
            "`rate_limits[1].limit`: a rate limit allows between 1 and 1000000000 requests per window.",
        ),
        (
            json!([{ "limit": -1, "window_seconds": 60 }]),
            "`rate_limits[0].limit`: a rate limit allows between 1 and 1000000000",
        ),
        (
            json!([{ "window_seconds": 60 }]),
            "`rate_limits[0].limit`: a rate limit allows between 1 and 1000000000",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 0 }]),
            "`rate_limits[0].window_seconds`: a rate limit's window is a whole number of seconds, from 1 to 31622400.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 1.5 }]),
            "`rate_limits[0].window_seconds`: a rate limit's window is a whole number of seconds, from 1 to 31622400.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 40_000_000 }]),
            "`rate_limits[0].window_seconds`: a rate limit's window is a whole number of seconds, from 1 to 31622400.",
        ),
        (
            json!([{ "limit": 5 }]),
            "`rate_limits[0].window_seconds`",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60, "name": "9lives" }]),
            "`rate_limits[0].name`: a rate limit's name has 1 to 64 characters, a letter first",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60, "name": 7 }]),
            "`rate_limits[0].name`: a rate limit's name has 1 to 64 characters",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60 }, { "limit": 9, "window_seconds": 60 }]),
            "`rate_limits`: a key's rate limits need distinct names, and distinct windows among those counted per key, per workspace or per organization.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60, "per": "team" }]),
            "`rate_limits[0].per`: a rate limit is counted per `key`, `workspace` or `organization`.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60, "per": 1 }]),
            "`rate_limits[0].per`: a rate limit is counted per `key`, `workspace` or `organization`.",
        ),
        (
            json!([1, 2, 3, 4, 5].map(|w| json!({ "limit": 5, "window_seconds": w }))),
            "`rate_limits`: a key has at most 4 rate limits, not 5.",
        ),
        (
            json!([{ "limit": 5, "window_seconds": 60, "burst": 2 }]),
            "Unknown field `rate_limits[0].burst`; expected one of `limit`, `window_seconds`, `name`, `per`.",
        ),
    ]
    .into_iter()
    .map(|(value, message)| (json!({ "name": "x", "rate_limits": value }), message))
    .chain(
        [
            (json!(100), "`credits` must be an object"),
            (
                json!({ "remaining": -1 }),
                "`credits.remaining`: credits are a whole number from 0 to 10^15",
            ),
            (
                json!({ "remaining": 2_000_000_000_000_000u64 }),
                "`credits.remaining`: credits are a whole number from 0 to 10^15",
            ),
            (
                json!({ "refill": { "amount": 5, "interval_seconds": 60 } }),
                "`credits.remaining`: credits are a whole number",
            ),
            (
                json!({ "remaining": 5, "refill": "daily" }),
                "`credits.refill` must be an object",
            ),
            (
                json!({ "remaining": 5, "refill": { "amount": 0, "interval_seconds": 60 } }),
                "`credits.refill.amount`: credits are a whole number from 0 to 10^15 (a refill's at least 1).",
            ),
            (
                json!({ "remaining": 5, "refill": { "amount": 5, "interval_seconds": 0 } }),
                "`credits.refill.interval_seconds`: a refill's interval is a whole number of seconds, from 1 to 31622400.",
            ),
            (
                json!({ "remaining": 5, "refill": { "amount": 5 } }),
                "`credits.refill.interval_seconds`",
            ),
            (
                json!({ "remaining": 5, "limit": 3 }),
                "Unknown field `credits.limit`; expected one of `remaining`, `refill`.",
            ),
            (
                json!({ "remaining": 5, "refill": { "amount": 5, "interval_seconds": 60, "at": 0 } }),
                "Unknown field `credits.refill.at`",
            ),
        ]
        .map(|(value, message)| (json!({ "name": "x", "credits": value }), message)),
    )
    .chain(
        [
            (json!("10.0.0.0/8"), "`allowed_ips` must be a list of networks"),
            (json!([10]), "`allowed_ips` must be a list of networks"),
            (json!([]), "`allowed_ips` must hold at least one network"),
            (
                json!(["10.0.0.1/8"]),
                "`allowed_ips`: invalid IP allowlist entry \"10.0.0.1/8\" (item 1): bits are set after the /8 prefix; write 10.0.0.0/8 for the network, or 10.0.0.1 for the one address.",
            ),
            (
                json!(["10.0.0.0/8", "10.0.0.0/33"]),
                "`allowed_ips`: invalid IP allowlist entry \"10.0.0.0/33\" (item 2): the prefix length must be a number from 0 to 32 for an IPv4 address.",
            ),
            (
                json!(["localhost"]),
                "`allowed_ips`: invalid IP allowlist entry \"localhost\" (item 1): not an IPv4 or IPv6 address",
            ),
            (json!(many_networks), "a list holds at most 64 networks"),
        ]
        .map(|(value, message)| (json!({ "name": "x", "allowed_ips": value }), message)),
    )
    .collect();
    for (body, message) in cases {
        let (status, answer) = server
            .call("POST", "/v1/keys", &admin, &body.to_string())
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{body}: {answer}");
        let said = answer["message"].as_str().unwrap();
        assert!(
            said.contains(message),
            "{body}: {said:?} should say {message:?}"
        );
    }
    // Nothing was issued.
    let (_, page) = server.call("GET", "/v1/keys", &admin, "").await;
    assert_eq!(page["keys"].as_array().unwrap().len(), 1, "{page}");
}

#[tokio::test]
async fn a_key_never_mints_a_key_with_looser_limits_than_its_own() {
    let server = serve().await;
    let issuer_limits = UsageLimits::new()
        .rate_limit(per(100, 60))
        .unwrap()
        .with_allowed_ips(IpAllowlist::parse(["127.0.0.0/8", "10.0.0.0/8"]).unwrap());
    let issuer = server
        .token(NewKey::org("acme").limits(issuer_limits))
        .await;
    let post = |mut body: Value| {
        body["name"] = json!("child");
        let (server, issuer) = (&server, &issuer);
        async move {
            server
                .call("POST", "/v1/keys", issuer, &body.to_string())
                .await
        }
    };
    let refused = |status: u16, answer: &Value, says: &str| {
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"], "forbidden", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    };

    // Nothing asked: the issuer's own limits.
    let (status, issued) = post(json!({})).await;
    assert_eq!(status, 201, "{issued}");
    let key = &issued["key"];
    assert_eq!(
        key["rate_limits"],
        json!([{ "limit": 100, "window_seconds": 60 }])
    );
    assert_eq!(key["allowed_ips"], json!(["127.0.0.0/8", "10.0.0.0/8"]));
    assert_eq!(key["credits"], Value::Null);

    // Rate limits: the issuer's window with a limit no higher, others may
    // be added.
    for (rate_limits, says) in [
        (
            json!([]),
            "this one allows 100 requests per 60 s per key, so `rate_limits` needs a limit with `window_seconds` 60, `per` \"key\" and a `limit` of at most 100.",
        ),
        (
            json!([{ "limit": 101, "window_seconds": 60 }]),
            "looser rate limits",
        ),
        (
            json!([{ "limit": 1, "window_seconds": 1 }]),
            "`window_seconds` 60",
        ),
        (
            json!([{ "limit": 100, "window_seconds": 120 }]),
            "`window_seconds` 60",
        ),
        // Shared by the organization is not the key's own.
        (
            json!([{ "limit": 100, "window_seconds": 60, "per": "organization" }]),
            "`per` \"key\"",
        ),
    ] {
        let (status, answer) = post(json!({ "rate_limits": rate_limits })).await;
        refused(status, &answer, says);
    }
    for rate_limits in [
        json!([{ "limit": 100, "window_seconds": 60 }]),
        json!([{ "limit": 1, "window_seconds": 1 }, { "limit": 30, "window_seconds": 60, "name": "minute" }]),
    ] {
        let (status, issued) = post(json!({ "rate_limits": rate_limits })).await;
        assert_eq!(status, 201, "{issued}");
        assert_eq!(issued["key"]["rate_limits"], rate_limits);
        // The rest is inherited.
        assert_eq!(
            issued["key"]["allowed_ips"],
            json!(["127.0.0.0/8", "10.0.0.0/8"])
        );
    }

    // Allowed addresses: within the issuer's networks.
    for (allowed_ips, says) in [
        (
            json!(["192.168.0.0/16"]),
            "192.168.0.0/16 in `allowed_ips` is outside this one's networks (127.0.0.0/8, 10.0.0.0/8)",
        ),
        (json!(["10.1.0.0/16", "0.0.0.0/0"]), "0.0.0.0/0"),
        (json!(["8.0.0.0/6"]), "8.0.0.0/6"),
        (json!(["2001:db8::1"]), "2001:db8::1/128"),
    ] {
        let (status, answer) = post(json!({ "allowed_ips": allowed_ips })).await;
        refused(status, &answer, says);
    }
    for allowed_ips in [
        json!(["10.1.0.0/16", "127.0.0.1"]),
        json!(["::ffff:10.0.0.0/104"]),
        json!(["10.0.0.0/8"]),
    ] {
        let (status, issued) = post(json!({ "allowed_ips": allowed_ips })).await;
        assert_eq!(status, 201, "{allowed_ips}: {issued}");
    }

    // Rotating a key less limited than the caller is refused as well; one
    // within its limits is rotated, its successor keeping them.
    let free = server.token(NewKey::org("acme").name("free")).await;
    let (_, shown) = server.call("GET", "/v1/whoami", &free, "").await;
    let free_id = shown["key_id"].as_str().unwrap().to_owned();
    let (status, answer) = server
        .call("POST", &format!("/v1/keys/{free_id}/rotate"), &issuer, "")
        .await;
    refused(status, &answer, "looser rate limits");
    let (status, issued) =
        post(json!({ "rate_limits": [{ "limit": 5, "window_seconds": 60 }] })).await;
    assert_eq!(status, 201, "{issued}");
    let child_id = issued["key"]["id"].as_str().unwrap().to_owned();
    let (status, rotated) = server
        .call("POST", &format!("/v1/keys/{child_id}/rotate"), &issuer, "")
        .await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(
        rotated["key"]["rate_limits"],
        json!([{ "limit": 5, "window_seconds": 60 }])
    );

    // A key without limits may mint any.
    let (status, issued) = server
        .call(
            "POST",
            "/v1/keys",
            &free,
            r#"{"name":"any","rate_limits":[{"limit":1000000000,"window_seconds":1}],"allowed_ips":["0.0.0.0/0","::/0"]}"#,
        )
        .await;
    assert_eq!(status, 201, "{issued}");
}

/// A [`MemoryStore`] whose keys always have credit left: this test is
/// about the key API's bounds, not about spending.
#[derive(Clone)]
struct AlwaysCredit(MemoryStore);

#[async_trait::async_trait]
impl KeyStore for AlwaysCredit {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.0.find_key(id).await
    }

    async fn spend_credits(&self, _: &KeyId, _: u64) -> Result<CreditSpend, StoreError> {
        Ok(CreditSpend::Spent { remaining: 1 })
    }
}

#[tokio::test]
async fn a_key_with_credits_never_mints_one_with_more_or_a_richer_refill() {
    let store = MemoryStore::new();
    let server = serve_with_layer_over(store.clone(), AlwaysCredit(store)).await;
    let issuer = server
        .token(
            NewKey::org("acme").limits(
                UsageLimits::new().with_credits(
                    Credits::new(1000)
                        .unwrap()
                        .refill(Refill::every(1000, Duration::from_secs(3600)).unwrap()),
                ),
            ),
        )
        .await;
    let post = |mut body: Value| {
        body["name"] = json!("child");
        let (server, issuer) = (&server, &issuer);
        async move {
            server
                .call("POST", "/v1/keys", issuer, &body.to_string())
                .await
        }
    };

    // Nothing asked: a copy of what the issuer has left, and its refill.
    let (status, issued) = post(json!({})).await;
    assert_eq!(status, 201, "{issued}");
    let key = &issued["key"];
    let remaining = key["credits"]["remaining"].as_u64().unwrap();
    assert!((990..=1000).contains(&remaining), "{key}");
    assert_eq!(
        key["credits"]["refill"],
        json!({ "amount": 1000, "interval_seconds": 3600 })
    );
    assert_eq!(key["rate_limits"], Value::Null);

    // Credits: no more than the issuer has, a refill no more generous.
    for (credits, says) in [
        (json!({ "remaining": 1001 }), "this one has"),
        (
            json!({ "remaining": 10, "refill": { "amount": 1001, "interval_seconds": 3600 } }),
            "at most 1000 every 3600 s",
        ),
        (
            json!({ "remaining": 10, "refill": { "amount": 10, "interval_seconds": 60 } }),
            "at most 1000 every 3600 s",
        ),
    ] {
        let (status, answer) = post(json!({ "credits": credits })).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"], "forbidden", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let (status, issued) =
        post(json!({ "credits": { "remaining": 10, "refill": { "amount": 10, "interval_seconds": 86400 } } })).await;
    assert_eq!(status, 201, "{issued}");
    let (status, issued) = post(json!({ "credits": { "remaining": 0 } })).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(
        issued["key"]["credits"],
        json!({ "remaining": 0, "refill": null })
    );
}

#[tokio::test]
async fn a_limit_per_organization_binds_every_key_made_from_its_key() {
    let server = serve().await;
    let org_wide = per(1000, 60).counted_per(tower_keyauth::limit::CountedPer::Organization);
    let root = server
        .token(NewKey::org("acme").limits(UsageLimits::new().rate_limit(org_wide).unwrap()))
        .await;
    let shared = json!([{ "limit": 1000, "window_seconds": 60, "per": "organization" }]);
    // Inherited when left out.
    let (status, issued) = server
        .call("POST", "/v1/keys", &root, r#"{"name":"child"}"#)
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["key"]["rate_limits"], shared);
    // Dropping it, or counting it per key (minting keys would multiply
    // it), is refused.
    for rate_limits in [
        json!([]),
        json!([{ "limit": 1000, "window_seconds": 60 }]),
        json!([{ "limit": 1000, "window_seconds": 60, "per": "workspace" }]),
    ] {
        let body = json!({ "name": "child", "rate_limits": rate_limits });
        let (status, answer) = server
            .call("POST", "/v1/keys", &root, &body.to_string())
            .await;
        assert_eq!(status, 403, "{rate_limits}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("`per` \"organization\""),
            "{answer}"
        );
    }
    // A tighter one, and a key limit besides, are fine.
    let rate_limits = json!([
        { "limit": 500, "window_seconds": 60, "per": "organization" },
        { "limit": 10, "window_seconds": 60 }
    ]);
    let body = json!({ "name": "child", "rate_limits": rate_limits });
    let (status, issued) = server
        .call("POST", "/v1/keys", &root, &body.to_string())
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["key"]["rate_limits"], rate_limits);
}

#[tokio::test]
async fn a_key_is_never_issued_more_credits_than_its_issuer_has_left_now() {
    let server = serve().await;
    let issuer = server
        .token(
            NewKey::org("acme").limits(UsageLimits::new().with_credits(Credits::new(3).unwrap())),
        )
        .await;
    // This request spends one of the three: two are left when it is checked,
    // though the key was read with three.
    let body = json!({ "name": "child", "credits": { "remaining": 3 } });
    let (status, answer) = server
        .call("POST", "/v1/keys", &issuer, &body.to_string())
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("this one has 2 left"),
        "{answer}"
    );
    let body = json!({ "name": "child", "credits": { "remaining": 1 } });
    let (status, answer) = server
        .call("POST", "/v1/keys", &issuer, &body.to_string())
        .await;
    assert_eq!(status, 201, "{answer}");
}
