//! Peppered hashes through the layer's waiting path (a store that answers
//! only asynchronously): a key of an earlier version is re-hashed once, a
//! key of the current version never, and `Debug` never shows a pepper.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::KeyId;
use tower_keyauth::pepper::Peppers;
use tower_keyauth::store::{KeyRecord, StoreError, StoreOptions};
use tower_keyauth::{KeyAuthLayer, KeyLifecycle, KeyStore, MemoryStore, NewKey};

use common::{app, get_bearer};

const SECRET: [u8; 32] = *b"a pepper of thirty-two bytes!!!!";

/// A `MemoryStore` that only answers asynchronously, counting re-hashes.
#[derive(Clone)]
struct Waiting {
    memory: MemoryStore,
    rehashes: Arc<AtomicUsize>,
}

#[async_trait]
impl KeyStore for Waiting {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.memory.find_key(id).await
    }

    fn peppers(&self) -> Peppers {
        self.memory.peppers()
    }

    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        self.rehashes.fetch_add(1, Ordering::SeqCst);
        self.memory.rehash(id, from, to).await
    }
}

fn peppers() -> Peppers {
    Peppers::new(2, SECRET)
        .unwrap()
        .earlier(1, [1u8; 32])
        .unwrap()
}

#[tokio::test]
async fn only_keys_of_other_versions_are_rehashed() {
    let memory = MemoryStore::with_options(StoreOptions::default().peppers(peppers()));
    let store = Waiting {
        memory: memory.clone(),
        rehashes: Arc::default(),
    };
    let app = app(KeyAuthLayer::new(store.clone()));
    let current = memory.issue(NewKey::org("acme")).await.unwrap();
    for _ in 0..3 {
        let reply = get_bearer(&app, "/v1/whoami", current.token.expose_secret()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store.rehashes.load(Ordering::SeqCst),
        0,
        "current keys stay"
    );

    let old = memory.issue(NewKey::org("acme")).await.unwrap();
    let token = old.token.expose_secret();
    let plain = KeyHash::of(token);
    assert!(
        memory
            .rehash(&old.record.id, &old.record.hash, &plain)
            .await
            .unwrap()
    );
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    for _ in 0..200 {
        if memory
            .find_key(&old.record.id)
            .await
            .unwrap()
            .unwrap()
            .hash
            .version()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = memory.find_key(&old.record.id).await.unwrap().unwrap().hash;
    assert_eq!(stored, peppers().hash(token));
    assert_eq!(store.rehashes.load(Ordering::SeqCst), 1);
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token).await.status,
        StatusCode::OK
    );
    assert_eq!(store.rehashes.load(Ordering::SeqCst), 1);
}

#[test]
fn debug_never_shows_a_pepper() {
    let store = MemoryStore::with_options(StoreOptions::default().peppers(peppers()));
    let options = StoreOptions::default().peppers(peppers());
    let layer = KeyAuthLayer::new(store.clone());
    let shown = format!("{:?} {options:?} {layer:?} {store:?}", peppers());
    assert!(
        shown.contains("Peppers { current: 2, earlier: [1] }"),
        "{shown}"
    );
    assert!(!shown.contains("thirty-two"), "{shown}");
    assert!(!shown.contains("[1, 1, 1"), "{shown}");
}

#[tokio::test]
async fn after_a_pepper_is_dropped_its_revoked_keys_are_refused_like_wrong_secrets() {
    let first = Peppers::new(1, [1u8; 32]).unwrap();
    let before = MemoryStore::with_options(StoreOptions::default().peppers(first));
    let revoked = before.issue(NewKey::org("acme")).await.unwrap();
    let live = before.issue(NewKey::org("acme")).await.unwrap();
    before.revoke(&revoked.record.id).await.unwrap();
    // The same records, read by a store that has only the next pepper.
    let only_second = Peppers::new(2, SECRET).unwrap();
    let after = MemoryStore::with_options(StoreOptions::default().peppers(only_second));
    for issued in [&revoked, &live] {
        let record = before.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(record.hash.version(), 1);
        after.insert(record);
    }
    let app = app(KeyAuthLayer::new(after));
    // A revoked key can never be used: 401, not a 503 anyone could cause.
    let reply = get_bearer(&app, "/v1/whoami", revoked.token.expose_secret()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    // A live key under the dropped version still fails closed.
    let reply = get_bearer(&app, "/v1/whoami", live.token.expose_secret()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
}
