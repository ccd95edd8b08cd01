//! The layer's audit of refused uses: one event per request refused because
//! its key (whose secret matched) is revoked or expired, with the key's id
//! and owner and never its secret; nothing for unknown ids or wrong secrets.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};
use tower_keyauth::audit::{AuditAction, AuditEvent};
use tower_keyauth::ids::KeyKind;
use tower_keyauth::store::{KeyRecord, Owner};
use tower_keyauth::{KeyAuthLayer, KeyFormat, KeyLifecycle, MemoryStore, NewKey};

type Events = Arc<Mutex<Vec<AuditEvent>>>;

/// The layer over `store`, its events kept in the returned list.
fn layer(store: &MemoryStore) -> (KeyAuthLayer<MemoryStore>, Events) {
    let events: Events = Arc::default();
    let sink = {
        let events = events.clone();
        move |event: &AuditEvent| events.lock().unwrap().push(event.clone())
    };
    (KeyAuthLayer::new(store.clone()).audit(sink), events)
}

/// The status of `GET /` with `Authorization: Bearer <token>` through `layer`.
async fn status(layer: &KeyAuthLayer<MemoryStore>, token: &str) -> StatusCode {
    let service = layer.layer(service_fn(|_request: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let request = Request::get("/")
        .header("authorization", format!("Bearer {token}"))
        .body(String::new())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}

/// Asserts that no 8-character run of `token`'s secret appears in the
/// `Debug` of `event`.
fn assert_no_secret(event: &AuditEvent, token: &str) {
    let debug = format!("{event:?}");
    let secret = token.split_once('.').map_or(token, |(_, secret)| secret);
    assert!(secret.len() >= 8, "{token}");
    for window in secret.as_bytes().windows(8) {
        let part = std::str::from_utf8(window).unwrap();
        assert!(
            !debug.contains(part),
            "{debug} shows {part:?} of the secret"
        );
    }
}

#[tokio::test]
async fn a_revoked_key_presented_is_audited_once() {
    let store = MemoryStore::new();
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    store.revoke(&issued.record.id).await.unwrap();
    let (layer, events) = layer(&store);

    let before = SystemTime::now();
    assert_eq!(
        status(&layer, issued.token.expose_secret()).await,
        StatusCode::UNAUTHORIZED
    );
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.action, AuditAction::RefusedRevoked);
    assert_eq!(event.key_id, issued.record.id);
    assert_eq!(event.owner, Owner::org("acme"));
    assert_eq!(event.actor, None);
    assert!(event.at >= before - Duration::from_secs(1));
    assert_no_secret(event, issued.token.expose_secret());
}

#[tokio::test]
async fn an_expired_key_presented_is_audited_once() {
    let store = MemoryStore::new();
    let issued = store
        .issue(
            NewKey::workspace("acme", "billing")
                .expires_at(SystemTime::now() - Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let (layer, events) = layer(&store);

    assert_eq!(
        status(&layer, issued.token.expose_secret()).await,
        StatusCode::UNAUTHORIZED
    );
    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.action, AuditAction::RefusedExpired);
    assert_eq!(event.key_id, issued.record.id);
    assert_eq!(event.owner, issued.record.owner);
    assert_eq!(event.workspace().map(|w| w.as_str()), Some("billing"));
    assert_eq!(event.actor, None);
    assert_no_secret(event, issued.token.expose_secret());
}

#[tokio::test]
async fn unknown_ids_wrong_secrets_and_valid_keys_are_not_audited() {
    let store = MemoryStore::new();
    let valid = store.issue(NewKey::org("acme")).await.unwrap();
    // A revoked id whose stored hash is another secret's: presenting the
    // token is a wrong secret, which must not reveal (or audit) the
    // revocation.
    let format = KeyFormat::default();
    let stranger = format.mint(KeyKind::Organization, None).unwrap();
    store.insert(
        KeyRecord::new(
            stranger.id.clone(),
            format
                .mint(KeyKind::Organization, None)
                .unwrap()
                .token
                .hash(),
            Owner::org("acme"),
        )
        .with_revoked_at(SystemTime::now()),
    );
    let unknown = format.mint(KeyKind::Organization, None).unwrap();
    let (layer, events) = layer(&store);

    assert_eq!(
        status(&layer, stranger.token.expose_secret()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&layer, unknown.token.expose_secret()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&layer, valid.token.expose_secret()).await,
        StatusCode::OK
    );
    assert!(events.lock().unwrap().is_empty());
}
