//! Issuing, listing and revoking keys: the same API on every bundled store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::format::{Environment, KeyFormat, MintError, MintedToken};
use crate::hash::Token;
use crate::ids::KeyKind;
use crate::ids::{KeyId, Label, OrgId, UserId, WorkspaceId};
use crate::limit::UsageLimits;
use crate::metadata::KeyMetadata;
use crate::pepper::Peppers;
use crate::record::{KeyRecord, Membership, Owner};
use crate::scope::{InvalidScope, Scopes};
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
    pub name: Label,
    /// What it may do (default: everything its owner may do).
    pub scopes: Scopes,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// The environment its prefix names, for formats with environment
    /// prefixes.
    pub environment: Option<Environment>,
    /// Overrides the store's [`KeyPolicy`] for this key, e.g. a limit that
    /// depends on the owner's plan.
    pub policy: Option<KeyPolicy>,
    /// What the application keeps with the key.
    pub metadata: Option<KeyMetadata>,
    /// What the key may use (rate limits), enforced by the layer.
    pub limits: Option<UsageLimits>,
}

impl NewKey {
    /// A key for `owner`, with full access and no expiry.
    pub fn new(owner: Owner) -> Self {
        Self {
            owner,
            name: Label::default(),
            scopes: Scopes::all(),
            expires_at: None,
            environment: None,
            policy: None,
            metadata: None,
            limits: None,
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
    pub fn name(mut self, name: impl Into<Label>) -> Self {
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

    /// Applies `policy` to this issue instead of the store's.
    pub fn policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Limits what the key may use (its rate limits).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_keyauth::NewKey;
    /// use tower_keyauth::limit::{RateLimit, UsageLimits};
    /// let limits = UsageLimits::new()
    ///     .rate_limit(RateLimit::per(5, Duration::from_secs(60)).unwrap())
    ///     .unwrap();
    /// let key = NewKey::org("acme").limits(limits);
    /// # let _ = key;
    /// ```
    pub fn limits(mut self, limits: UsageLimits) -> Self {
        self.limits = (!limits.is_empty()).then_some(limits);
        self
    }

    /// Keeps `metadata` with the key.
    pub fn metadata(mut self, metadata: KeyMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The kind of key this will be.
    pub fn kind(&self) -> KeyKind {
        self.owner.kind()
    }
}

/// How many usable keys an owner may hold.
///
/// A key is usable when it is neither revoked nor expired; a key in a
/// rotation's grace period is still usable.
///
/// ```
/// use tower_keyauth::store::{KeyPolicy, StoreOptions};
/// // Some platforms keep one key per organization: a new key replaces the old.
/// let options = StoreOptions::default().policy(KeyPolicy::SingleActive);
/// // Others limit keys by plan.
/// let options = StoreOptions::default().policy(KeyPolicy::AtMost(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyPolicy {
    /// No limit (the default).
    #[default]
    Unlimited,
    /// At most this many usable keys; issuing one more fails with
    /// [`LifecycleError::LimitReached`]. Rotation is exempt: it replaces.
    AtMost(usize),
    /// Issuing a key revokes the owner's other keys at once.
    SingleActive,
}

/// Refuses to store a set of scopes larger than a key may hold. A set built
/// by [`Scopes::parse`] never is, but an
/// [`intersection`](Scopes::intersection) of two full sets can be.
pub(crate) fn storable(scopes: &Scopes) -> Result<(), LifecycleError> {
    if scopes.len() > Scopes::MAX_COUNT {
        return Err(LifecycleError::InvalidScopes(InvalidScope::too_many()));
    }
    Ok(())
}

/// What issuing a key must do besides inserting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IssuePlan {
    Insert,
    RevokeOthersThenInsert,
}

/// Applies `policy` to an owner that holds `usable` keys now.
pub(crate) fn plan_issue(
    policy: KeyPolicy,
    owner: &Owner,
    usable: usize,
) -> Result<IssuePlan, LifecycleError> {
    match policy {
        KeyPolicy::Unlimited => Ok(IssuePlan::Insert),
        KeyPolicy::SingleActive => Ok(IssuePlan::RevokeOthersThenInsert),
        KeyPolicy::AtMost(limit) if usable >= limit => Err(LifecycleError::LimitReached {
            owner: owner.clone(),
            limit,
        }),
        KeyPolicy::AtMost(_) => Ok(IssuePlan::Insert),
    }
}

/// How to rotate a key: how long the old key keeps working, and optionally
/// the latest time its successor may expire.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_keyauth::store::Rotation;
/// // The old key works one more hour; the successor stops by the end of the
/// // day at the latest, whatever the old key's lifetime.
/// let end_of_day = SystemTime::now() + Duration::from_secs(8 * 3600);
/// let rotation = Rotation::with_grace(Duration::from_secs(3600)).expiring_by(end_of_day);
/// # let _ = rotation;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Rotation {
    /// How long the old key keeps working; zero revokes it at once.
    pub grace: Duration,
    /// The latest expiry the successor may have. It keeps the old key's
    /// lifetime length, cut short to this time; a successor of a key without
    /// expiry expires at this time.
    pub expires_by: Option<SystemTime>,
}

impl Rotation {
    /// Revokes the old key at once.
    pub fn immediate() -> Self {
        Self::default()
    }

    /// Keeps the old key working for `grace`.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            expires_by: None,
        }
    }

    /// Makes the successor expire at `at` at the latest.
    pub fn expiring_by(mut self, at: SystemTime) -> Self {
        self.expires_by = Some(at);
        self
    }
}

impl From<Duration> for Rotation {
    /// A rotation with this grace period.
    fn from(grace: Duration) -> Self {
        Self::with_grace(grace)
    }
}

/// What rotating `old` at `now` means: the request for its successor, and
/// what becomes of the old key.
#[derive(Debug)]
pub(crate) struct RotationPlan {
    pub(crate) successor: NewKey,
    pub(crate) old_key: OldKey,
}

/// What becomes of a rotated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OldKey {
    /// No grace period: revoked at once, whatever the clocks say.
    Revoke,
    /// It works until this time (its grace period's end, compared with the
    /// clock like an expiry).
    GraceEndsAt(SystemTime),
}

/// The successor keeps owner, name, scopes, metadata and lifetime length
/// (cut short to [`Rotation::expires_by`]); the old key works until the
/// grace period has passed, never past its own expiry (which still
/// applies), and a revoked or expired key cannot be rotated.
pub(crate) fn plan_rotation(
    old: &KeyRecord,
    format: &KeyFormat,
    rotation: Rotation,
    now: SystemTime,
) -> Result<RotationPlan, LifecycleError> {
    let Rotation { grace, expires_by } = rotation;
    if old.is_revoked() {
        return Err(LifecycleError::Revoked(old.id.clone()));
    }
    if old.is_expired_at(now) {
        return Err(LifecycleError::Expired(old.id.clone()));
    }
    // A key in its grace period already has its successor: a retried
    // rotation must not mint a second one.
    if old.grace_ends_at.is_some() {
        return Err(LifecycleError::AlreadyRotated(old.id.clone()));
    }
    let mut successor = NewKey::new(old.owner.clone())
        .name(old.name.clone())
        .scopes(old.scopes.clone());
    successor.metadata = old.metadata.clone();
    // The successor's rate limits go on counting where the old key's are.
    successor.limits = old.limits.as_deref().map(|limits| {
        let first_key = limits.counted_as(&old.id).clone();
        limits.clone().with_lineage(first_key)
    });
    // The successor's prefix names the same environment as the old one's.
    successor.environment = old
        .prefix
        .as_deref()
        .and_then(|prefix| format.environment_of_prefix(prefix));
    if let Some(expires_at) = old.expires_at {
        let lifetime = expires_at
            .duration_since(old.created_at)
            .unwrap_or_default();
        successor.expires_at = Some(now + lifetime);
    }
    if let Some(latest) = expires_by {
        successor.expires_at = Some(successor.expires_at.map_or(latest, |at| at.min(latest)));
    }
    // A rotation replaces a key: no limit applies, and no other key goes.
    successor.policy = Some(KeyPolicy::Unlimited);
    let old_key = if grace.is_zero() {
        OldKey::Revoke
    } else {
        OldKey::GraceEndsAt(now + grace)
    };
    Ok(RotationPlan { successor, old_key })
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

impl IssuedKey {
    /// The record of a freshly minted key for `new_key`, created at `now`.
    /// Its hash is made under the current version of `peppers`.
    pub(crate) fn new(
        minted: MintedToken,
        new_key: NewKey,
        now: SystemTime,
        peppers: &Peppers,
    ) -> Self {
        let hash = peppers.hash(minted.token.expose_secret());
        let mut record = KeyRecord::new(minted.id, hash, new_key.owner)
            .with_name(new_key.name)
            .with_scopes(new_key.scopes)
            .with_prefix(&*minted.prefix)
            .with_created_at(now);
        record.expires_at = new_key.expires_at;
        record.metadata = new_key.metadata;
        record.limits = new_key.limits.map(Arc::new);
        Self {
            token: minted.token,
            record,
        }
    }
}

/// How many ids an issue or a rotation draws before it gives up (twelve
/// base62 characters make even one collision vanishingly unlikely).
const MINT_ATTEMPTS: usize = 8;

/// What an insert of a freshly minted key came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// The key is stored.
    Done,
    /// Another key has its id; nothing was changed.
    IdTaken,
}

/// Where a store puts a freshly minted key: its map, or a connection inside
/// the transaction of an issue or a rotation.
pub(crate) trait InsertMinted {
    /// Stores `record`, unless another key has its id.
    fn insert_minted(
        &mut self,
        record: &KeyRecord,
    ) -> impl Future<Output = Result<Insert, StoreError>> + Send;
}

/// Mints a key for `new_key`, created at `now`, and inserts it into
/// `target`, drawing a fresh id for as long as the id is taken: the one
/// mint-and-insert loop of every bundled store.
pub(crate) async fn mint_and_insert<T: InsertMinted + ?Sized>(
    target: &mut T,
    format: &KeyFormat,
    peppers: &Peppers,
    new_key: NewKey,
    now: SystemTime,
) -> Result<IssuedKey, LifecycleError> {
    for _ in 0..MINT_ATTEMPTS {
        let minted = format.mint(new_key.kind(), new_key.environment)?;
        let issued = IssuedKey::new(minted, new_key.clone(), now, peppers);
        if target.insert_minted(&issued.record).await? == Insert::Done {
            return Ok(issued);
        }
    }
    Err(StoreError::backend("could not find an unused key id").into())
}

/// A key as listed to its owner: masked, without its hash.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_keyauth::{KeyLifecycle, MemoryStore, NewKey};
/// use tower_keyauth::store::Owner;
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
    pub name: Label,
    /// The owner.
    pub owner: Owner,
    /// What the key may do.
    pub scopes: Scopes,
    /// When it was issued.
    pub created_at: SystemTime,
    /// When it expires, if ever.
    pub expires_at: Option<SystemTime>,
    /// When a rotation's grace period ends, if it was rotated with one.
    pub grace_ends_at: Option<SystemTime>,
    /// When it was revoked, if it was (it is refused from then on).
    pub revoked_at: Option<SystemTime>,
    /// When it was last used, if tracked.
    pub last_used_at: Option<SystemTime>,
    /// What the application keeps with the key.
    pub metadata: Option<KeyMetadata>,
    /// What the key may use (rate limits, credits, allowed addresses), if it
    /// is limited; its credits as the store last read them.
    pub limits: Option<Arc<UsageLimits>>,
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
            grace_ends_at: record.grace_ends_at,
            revoked_at: record.revoked_at,
            last_used_at: record.last_used_at,
            metadata: record.metadata.clone(),
            limits: record.limits.clone(),
        }
    }
}

/// Whose keys a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyListing {
    /// The keys of exactly this owner ([`KeyLifecycle::list`]).
    Owner(Owner),
    /// Every organization and workspace key of an organization
    /// ([`KeyLifecycle::list_in_org`]).
    Org(OrgId),
}

impl KeyListing {
    /// Every organization and workspace key of `org`.
    pub fn org(org: impl Into<OrgId>) -> Self {
        KeyListing::Org(org.into())
    }

    /// The keys of exactly `owner`.
    pub fn owner(owner: Owner) -> Self {
        KeyListing::Owner(owner)
    }

    /// Whether a key of `owner` belongs in this listing.
    pub fn includes(&self, owner: &Owner) -> bool {
        match self {
            KeyListing::Owner(listed) => listed == owner,
            KeyListing::Org(org) => owner.org_id() == Some(org),
        }
    }
}

/// Where a page of a listing starts: after the key created at `created_at`
/// with id `id`, in the listing's order (newest first, ties by id,
/// descending).
///
/// Its text form (`Display` and `FromStr`) is what the key API hands out as
/// `next_cursor`.
///
/// ```
/// use tower_keyauth::store::PageCursor;
/// let cursor: PageCursor = "1767225600000000000.Xb3kP9qLm2Ts".parse().unwrap();
/// assert_eq!(cursor.to_string(), "1767225600000000000.Xb3kP9qLm2Ts");
/// assert!("not a cursor".parse::<PageCursor>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// When the last key of the previous page was created.
    pub created_at: SystemTime,
    /// Its id.
    pub id: KeyId,
}

impl PageCursor {
    /// The cursor after `key`.
    pub fn after(key: &KeySummary) -> Self {
        Self {
            created_at: key.created_at,
            id: key.id.clone(),
        }
    }

    /// Whether `key` comes after the cursor, newest first.
    pub fn precedes(&self, key: &KeySummary) -> bool {
        (key.created_at, &key.id) < (self.created_at, &self.id)
    }
}

impl std::fmt::Display for PageCursor {
    /// `<nanoseconds since the Unix epoch>.<id>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self
            .created_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        write!(f, "{nanos}.{}", self.id)
    }
}

/// A text that is not a page cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a page cursor")]
pub struct InvalidCursor;

impl std::str::FromStr for PageCursor {
    type Err = InvalidCursor;

    fn from_str(text: &str) -> Result<Self, InvalidCursor> {
        let (nanos, id) = text.split_once('.').ok_or(InvalidCursor)?;
        if nanos.is_empty() || nanos.len() > 20 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidCursor);
        }
        let nanos: u64 = nanos.parse().map_err(|_| InvalidCursor)?;
        // Ids are what the store mints: short, visible ASCII.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidCursor);
        }
        Ok(Self {
            created_at: std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
            id: KeyId::from(id),
        })
    }
}

/// Which page of a listing to read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageRequest {
    /// At most this many keys (1 to [`PageRequest::MAX_LIMIT`]).
    pub limit: usize,
    /// Keys after this cursor; the first page without one.
    pub after: Option<PageCursor>,
}

impl PageRequest {
    /// The most keys one page may hold.
    pub const MAX_LIMIT: usize = 100;

    /// The first page of at most `limit` keys (clamped to 1 to
    /// [`MAX_LIMIT`](Self::MAX_LIMIT)).
    pub fn first(limit: usize) -> Self {
        Self {
            limit: limit.clamp(1, Self::MAX_LIMIT),
            after: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(mut self, cursor: PageCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// The page of `keys` (a whole listing, in any order) this request
    /// asks for.
    pub fn cut(&self, mut keys: Vec<KeySummary>) -> KeyPage {
        if let Some(cursor) = &self.after {
            keys.retain(|key| cursor.precedes(key));
        }
        keys.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        self.page_of_newest_first(keys)
    }

    /// The page made of `keys`, newest first after the cursor, of which
    /// at most `limit + 1` were read: one more than the page tells that
    /// there is a next one.
    pub fn page_of_newest_first(&self, mut keys: Vec<KeySummary>) -> KeyPage {
        let more = keys.len() > self.limit;
        keys.truncate(self.limit);
        let next = if more {
            keys.last().map(PageCursor::after)
        } else {
            None
        };
        KeyPage { keys, next }
    }
}

impl Default for PageRequest {
    /// The first page of 20 keys.
    fn default() -> Self {
        Self::first(20)
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyPage {
    /// The keys, masked.
    pub keys: Vec<KeySummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

/// Why a lifecycle operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// There is no key with that id.
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// The owner already holds as many usable keys as its [`KeyPolicy`]
    /// allows.
    #[error("{owner} already holds {limit} usable keys, the most its policy allows")]
    LimitReached {
        /// The owner.
        owner: Owner,
        /// The limit.
        limit: usize,
    },
    /// The key is revoked, so it cannot be rotated.
    #[error("key {0} is revoked")]
    Revoked(KeyId),
    /// The key has expired, so it cannot be rotated.
    #[error("key {0} has expired")]
    Expired(KeyId),
    /// The key was rotated already and is in its grace period: rotate its
    /// successor instead.
    #[error("key {0} was already rotated; rotate its successor")]
    AlreadyRotated(KeyId),
    /// The scopes cannot be stored: more than [`Scopes::MAX_COUNT`].
    #[error(transparent)]
    InvalidScopes(#[from] InvalidScope),
    /// A token could not be minted.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Issue, list, revoke and rotate keys, and manage memberships. Implemented
/// by every bundled store, with the same rules (one conformance suite tests
/// them all).
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
    /// token is the only copy of the secret. Fails with
    /// [`LifecycleError::InvalidScopes`] for more than
    /// [`Scopes::MAX_COUNT`] scopes.
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError>;

    /// The keys of exactly this owner, masked, oldest first. Revoked and
    /// expired keys are included (their times say so).
    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError>;

    /// Every organization and workspace key of `org`, masked, oldest first
    /// (personal tokens belong to users and are not included).
    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError>;

    /// Revokes a key: its next request fails on every instance, whatever
    /// their clocks say. Revoking a revoked key is not an error (the first
    /// time is kept); a key in a rotation's grace period stops at once.
    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError>;

    /// Issues a successor with the same owner, name, scopes, metadata,
    /// limits and lifetime length. With `Duration::ZERO` the old key is
    /// revoked at once; otherwise it keeps working until `grace` has passed
    /// ([`KeyRecord::grace_ends_at`], an expiry: compared with the clock),
    /// never past its own expiry. Revoked and expired keys cannot be
    /// rotated, nor can a key in its grace period
    /// ([`LifecycleError::AlreadyRotated`]).
    /// [`rotate_with`](Self::rotate_with) can also cap the successor's
    /// expiry.
    ///
    /// Credits move with the rotation: the successor takes the old key's
    /// remaining credits and refill clock, and the old key keeps none (in
    /// its grace period it is refused with `quota_exhausted`), so rotating
    /// never resets or doubles a key's credits.
    async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<IssuedKey, LifecycleError> {
        self.rotate_with(id, Rotation::with_grace(grace)).await
    }

    /// [`rotate`](Self::rotate), with the successor's expiry capped to
    /// [`Rotation::expires_by`] when it is set.
    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError>;

    /// One page of a listing, newest first: at most `page.limit` keys
    /// created before the cursor, and the cursor of the next page when
    /// there may be one.
    ///
    /// The default reads the whole listing ([`list`](Self::list) or
    /// [`list_in_org`](Self::list_in_org)) and cuts the page from it; the
    /// bundled stores read only the page.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use tower_keyauth::{KeyLifecycle, MemoryStore, NewKey};
    /// use tower_keyauth::store::{KeyListing, PageRequest};
    /// let store = MemoryStore::new();
    /// for name in ["first", "second", "third"] {
    ///     store.issue(NewKey::org("acme").name(name)).await.unwrap();
    /// }
    /// let listing = KeyListing::org("acme");
    /// let page = store.list_page(&listing, &PageRequest::first(2)).await.unwrap();
    /// assert_eq!(page.keys.len(), 2);
    /// let next = PageRequest::first(2).after(page.next.unwrap());
    /// let rest = store.list_page(&listing, &next).await.unwrap();
    /// assert_eq!(rest.keys.len(), 1);
    /// assert!(rest.next.is_none());
    /// # }
    /// ```
    async fn list_page(
        &self,
        listing: &KeyListing,
        page: &PageRequest,
    ) -> Result<KeyPage, LifecycleError> {
        let all = match listing {
            KeyListing::Owner(owner) => self.list(owner).await?,
            KeyListing::Org(org) => self.list_in_org(org).await?,
        };
        Ok(page.cut(all))
    }

    /// Makes `user` a member of `org` with `membership`, or removes them
    /// (`None`): their personal tokens follow at once.
    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::KeyHash;

    fn record(created: SystemTime) -> KeyRecord {
        KeyRecord::new("k", KeyHash::of("t"), Owner::org("acme"))
            .with_name("ci")
            .with_scopes(Scopes::parse(["objects.read"]).unwrap())
            .with_created_at(created)
    }

    #[test]
    fn policies_decide_what_an_issue_does() {
        let owner = Owner::org("acme");
        assert_eq!(
            plan_issue(KeyPolicy::Unlimited, &owner, 1000).unwrap(),
            IssuePlan::Insert
        );
        assert_eq!(
            plan_issue(KeyPolicy::SingleActive, &owner, 3).unwrap(),
            IssuePlan::RevokeOthersThenInsert
        );
        assert_eq!(
            plan_issue(KeyPolicy::AtMost(2), &owner, 1).unwrap(),
            IssuePlan::Insert
        );
        assert!(matches!(
            plan_issue(KeyPolicy::AtMost(2), &owner, 2),
            Err(LifecycleError::LimitReached { limit: 2, .. })
        ));
    }

    #[test]
    fn a_rotation_keeps_owner_scopes_name_and_lifetime() {
        let now = SystemTime::now();
        let old =
            record(now - Duration::from_secs(100)).with_expires_at(now + Duration::from_secs(900));
        let plan = plan_rotation(
            &old,
            &KeyFormat::default(),
            Rotation::with_grace(Duration::from_secs(60)),
            now,
        )
        .unwrap();
        assert_eq!(plan.successor.owner, old.owner);
        assert_eq!(plan.successor.scopes, old.scopes);
        assert_eq!(plan.successor.name, old.name);
        assert_eq!(
            plan.successor.expires_at,
            Some(now + Duration::from_secs(1000))
        );
        assert_eq!(
            plan.old_key,
            OldKey::GraceEndsAt(now + Duration::from_secs(60))
        );
        assert_eq!(plan.successor.policy, Some(KeyPolicy::Unlimited));
    }

    #[test]
    fn revoked_and_expired_keys_cannot_be_rotated() {
        let now = SystemTime::now();
        // Revoked "in the future" by a clock that runs ahead: still revoked.
        let revoked = record(now).with_revoked_at(now + Duration::from_secs(3600));
        assert!(matches!(
            plan_rotation(
                &revoked,
                &KeyFormat::default(),
                Rotation::with_grace(Duration::ZERO),
                now
            ),
            Err(LifecycleError::Revoked(_))
        ));
        let expired = record(now).with_expires_at(now);
        assert!(matches!(
            plan_rotation(
                &expired,
                &KeyFormat::default(),
                Rotation::with_grace(Duration::ZERO),
                now
            ),
            Err(LifecycleError::Expired(_))
        ));
    }

    #[test]
    fn a_key_in_its_grace_period_is_not_rotated_again() {
        // A retried rotation must mint no second successor, and neither
        // extend nor cut short the first grace period.
        let now = SystemTime::now();
        let in_grace = record(now - Duration::from_secs(100))
            .with_grace_ends_at(now + Duration::from_secs(10));
        for grace in [Duration::ZERO, Duration::from_secs(3600)] {
            assert!(matches!(
                plan_rotation(
                    &in_grace,
                    &KeyFormat::default(),
                    Rotation::with_grace(grace),
                    now
                ),
                Err(LifecycleError::AlreadyRotated(_))
            ));
        }
        let ended = record(now).with_grace_ends_at(now);
        assert!(matches!(
            plan_rotation(
                &ended,
                &KeyFormat::default(),
                Rotation::with_grace(Duration::ZERO),
                now
            ),
            Err(LifecycleError::Expired(_))
        ));
    }

    /// Finds the first `taken` ids taken.
    struct Collides {
        taken: usize,
        tried: Vec<KeyId>,
    }

    impl InsertMinted for Collides {
        async fn insert_minted(&mut self, record: &KeyRecord) -> Result<Insert, StoreError> {
            self.tried.push(record.id.clone());
            Ok(if self.tried.len() > self.taken {
                Insert::Done
            } else {
                Insert::IdTaken
            })
        }
    }

    #[tokio::test]
    async fn a_taken_id_is_drawn_again_until_the_attempts_run_out() {
        let (format, now) = (KeyFormat::default(), SystemTime::now());
        let mut twice = Collides {
            taken: 2,
            tried: Vec::new(),
        };
        let issued = mint_and_insert(
            &mut twice,
            &format,
            &Peppers::none(),
            NewKey::org("acme"),
            now,
        )
        .await
        .unwrap();
        assert_eq!(twice.tried.len(), 3);
        assert_eq!(twice.tried[2], issued.record.id);
        assert_ne!(twice.tried[0], twice.tried[1]);

        let mut always = Collides {
            taken: usize::MAX,
            tried: Vec::new(),
        };
        let error = mint_and_insert(
            &mut always,
            &format,
            &Peppers::none(),
            NewKey::org("acme"),
            now,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, LifecycleError::Store(_)));
        assert_eq!(always.tried.len(), MINT_ATTEMPTS);
    }
}
