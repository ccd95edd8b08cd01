//! Issuing, listing and revoking keys: the same API on every bundled store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::format::{Environment, MintError};
use crate::hash::Token;
use crate::ids::{KeyId, OrgId, UserId, WorkspaceId};
use crate::record::{KeyKind, KeyRecord, Membership, Owner};
use crate::scope::Scopes;
use crate::store::{KeyStore, StoreError};

/// What to issue: the owner, and optionally a name, scopes, an expiry and an
/// environment.
///
/// ```
/// use std::time::Duration;
/// use tower_keyauth::{NewKey, Scopes};
/// let request = NewKey::workspace("acme", "docs")
///     .name("docs reader")
///     .scopes(Scopes::parse(["objects.read"]).unwrap())
///     .expires_in(Duration::from_secs(90 * 24 * 3600));
/// # let _ = request;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewKey {
    /// Who the key will belong to.
    pub owner: Owner,
    /// Its label.
    pub name: Arc<str>,
    /// What it may do (default: everything its owner may do).
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// The environment its prefix names, for formats with environment
    /// prefixes.
    pub environment: Option<Environment>,
}

impl NewKey {
    /// A key for `owner`, with full access and no expiry.
    pub fn new(owner: Owner) -> Self {
        Self {
            owner,
            name: Arc::from(""),
            scopes: Scopes::all(),
            expires_at: None,
            environment: None,
        }
    }

    /// An organization key.
    pub fn org(org: impl Into<OrgId>) -> Self {
        Self::new(Owner::org(org))
    }

    /// A workspace key.
    pub fn workspace(org: impl Into<OrgId>, workspace: impl Into<WorkspaceId>) -> Self {
        Self::new(Owner::workspace(org, workspace))
    }

    /// A personal access token of `user`.
    pub fn personal(user: impl Into<UserId>) -> Self {
        Self::new(Owner::user(user))
    }

    /// Sets the label.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Limits what the key may do.
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Makes the key stop working after `lifetime`.
    pub fn expires_in(self, lifetime: Duration) -> Self {
        self.expires_at(SystemTime::now() + lifetime)
    }

    /// Makes the key stop working at `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Mints the key with the prefix of this environment.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// The kind of key this will be.
    pub fn kind(&self) -> KeyKind {
        self.owner.kind()
    }
}

/// A key just issued. [`token`](Self::token) is the only copy of the secret:
/// hand it to the owner now; the store keeps its hash only.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IssuedKey {
    /// The whole credential (redacted in `Debug`).
    pub token: Token,
    /// What the store now holds.
    pub record: KeyRecord,
}

/// A key as listed to its owner: masked, without its hash.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_keyauth::{KeyLifecycle, MemoryStore, NewKey, Owner};
/// let store = MemoryStore::new();
/// let issued = store.issue(NewKey::org("acme").name("ci")).await.unwrap();
/// let listed = store.list(&Owner::org("acme")).await.unwrap();
/// assert_eq!(listed[0].masked, format!("ak_{}.****", issued.record.id));
/// assert!(!listed[0].masked.contains(&issued.token.expose_secret()[20..]));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeySummary {
    /// The public id.
    pub id: KeyId,
    /// `ak_<id>.****`: never any character of the secret.
    pub masked: String,
    /// The label.
    pub name: Arc<str>,
    /// The owner.
    pub owner: Owner,
    /// What the key may do.
    pub scopes: Scopes,
    /// When it was issued.
    pub created_at: SystemTime,
    /// When it expires, if ever.
    pub expires_at: Option<SystemTime>,
    /// When it was (or, within a rotation's grace period, will be) revoked.
    pub revoked_at: Option<SystemTime>,
    /// When it was last used, if tracked.
    pub last_used_at: Option<SystemTime>,
}

impl From<&KeyRecord> for KeySummary {
    fn from(record: &KeyRecord) -> Self {
        Self {
            id: record.id.clone(),
            masked: record.masked(),
            name: record.name.clone(),
            owner: record.owner.clone(),
            scopes: record.scopes.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            last_used_at: record.last_used_at,
        }
    }
}

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// There is no key with that id.
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// A token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issue, list and revoke keys. Implemented by every bundled store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_keyauth::{KeyLifecycle, KeyStore, MemoryStore, NewKey};
/// let store = MemoryStore::new();
/// let issued = store.issue(NewKey::org("acme")).await.unwrap();
/// assert!(store.find_key(&issued.record.id).await.unwrap().is_some());
/// store.revoke(&issued.record.id).await.unwrap();
/// let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
/// assert!(record.revoked_at.is_some());
/// # }
/// ```
#[async_trait]
pub trait KeyLifecycle: KeyStore {
    /// Mints a key for `new_key.owner` and stores its hash. The returned
    /// token is the only copy of the secret.
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError>;

    /// The keys of exactly this owner, masked, oldest first. Revoked and
    /// expired keys are included (their times say so).
    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError>;

    /// Revokes a key: its next request fails. Revoking a revoked key is not
    /// an error.
    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError>;

    /// Makes `user` a member of `org` with `membership`, or removes them
    /// (`None`): their personal tokens follow at once.
    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError>;
}
