//! What a store keeps about a key, and about a user's membership of an
//! organization.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::format::KeyFormat;
use crate::hash::KeyHash;
use crate::ids::{KeyId, KeyKind, Label, OrgId, UserId, WorkspaceId};
use crate::limit::UsageLimits;
use crate::metadata::KeyMetadata;
use crate::scope::Scopes;

/// Who a key belongs to. The owner decides the key's [`KeyKind`] and the
/// tenant it acts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An organization key.
    Organization(OrgId),
    /// A workspace key: the workspace and the organization it belongs to.
    Workspace {
        /// The organization that holds the workspace.
        org: OrgId,
        /// The workspace.
        workspace: WorkspaceId,
    },
    /// A personal access token of this user.
    User(UserId),
}

impl Owner {
    /// An organization owner.
    pub fn org(org: impl Into<OrgId>) -> Self {
        Owner::Organization(org.into())
    }

    /// A workspace owner.
    pub fn workspace(org: impl Into<OrgId>, workspace: impl Into<WorkspaceId>) -> Self {
        Owner::Workspace {
            org: org.into(),
            workspace: workspace.into(),
        }
    }

    /// A user owner (personal access tokens).
    pub fn user(user: impl Into<UserId>) -> Self {
        Owner::User(user.into())
    }

    /// The kind of key this owner holds.
    pub fn kind(&self) -> KeyKind {
        match self {
            Owner::Organization(_) => KeyKind::Organization,
            Owner::Workspace { .. } => KeyKind::Workspace,
            Owner::User(_) => KeyKind::Personal,
        }
    }

    /// The heap memory the owner's identifiers hold.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Owner::Organization(org) => org.heap_bytes(),
            Owner::Workspace { org, workspace } => org.heap_bytes() + workspace.heap_bytes(),
            Owner::User(user) => user.heap_bytes(),
        }
    }

    /// The organization a key of this owner is bound to (none for users).
    pub fn org_id(&self) -> Option<&OrgId> {
        match self {
            Owner::Organization(org) | Owner::Workspace { org, .. } => Some(org),
            Owner::User(_) => None,
        }
    }
}

impl fmt::Display for Owner {
    /// `organization acme`, `workspace acme/docs` or `user ada`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Organization(org) => write!(f, "organization {org}"),
            Owner::Workspace { org, workspace } => write!(f, "workspace {org}/{workspace}"),
            Owner::User(user) => write!(f, "user {user}"),
        }
    }
}

/// Everything a store keeps about one key. The secret itself is not here:
/// only its [`KeyHash`].
///
/// Build one from your own table with [`KeyRecord::new`] and the `with_…`
/// methods:
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_keyauth::Scopes;
/// use tower_keyauth::hash::KeyHash;
/// use tower_keyauth::store::{KeyRecord, Owner};
///
/// let record = KeyRecord::new("Xb3kP9qLm2Ts", KeyHash::of("ak_Xb3kP9qLm2Ts.secret"), Owner::org("acme"))
///     .with_prefix("ak")
///     .with_name("deploy bot")
///     .with_scopes(Scopes::parse(["objects.read"]).unwrap())
///     .with_expires_at(SystemTime::now() + Duration::from_secs(3600));
/// assert_eq!(record.masked(), "ak_Xb3kP9qLm2Ts.****");
/// assert!(record.is_usable_at(SystemTime::now()));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The public id.
    pub id: KeyId,
    /// SHA-256 of the whole token.
    pub hash: KeyHash,
    /// Who the key belongs to.
    pub owner: Owner,
    /// What the key may do; [`Scopes::all`] (the default) is the owner's full
    /// access.
    pub scopes: Scopes,
    /// A label chosen by the owner, such as "CI deploys".
    pub name: Label,
    /// The token prefix (`ak`), kept to show masked tokens; none for opaque
    /// legacy keys.
    pub prefix: Option<Label>,
    /// When the key was issued.
    pub created_at: SystemTime,
    /// When the key stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When a rotation with a grace period replaced the key, the end of that
    /// period: like [`expires_at`](Self::expires_at), a time compared with
    /// the clock.
    pub grace_ends_at: Option<SystemTime>,
    /// When the key was revoked. A revoked key is refused from the moment
    /// this is set, whatever the time it holds and whatever the clock of the
    /// instance that checks it: the time is a record, not a deadline.
    pub revoked_at: Option<SystemTime>,
    /// When the key was last used (tracked off the request path, so it lags).
    pub last_used_at: Option<SystemTime>,
    /// What the application keeps with the key (a JSON object of at most
    /// 4 KiB), handed to handlers on the [`Principal`](crate::Principal).
    pub metadata: Option<KeyMetadata>,
    /// What the key may use (rate limits), enforced by the layer after
    /// authentication. Shared, so handing them to the principal copies
    /// nothing.
    pub limits: Option<Arc<UsageLimits>>,
}

impl KeyRecord {
    /// The heap memory the record holds: its identifiers, name, prefix and
    /// scopes.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.id.heap_bytes()
            + self.owner.heap_bytes()
            + self.scopes.heap_bytes()
            + self.name.heap_bytes()
            + self.prefix.as_ref().map_or(0, Label::heap_bytes)
            + self.metadata.as_ref().map_or(0, KeyMetadata::heap_bytes)
            + self.limits.as_ref().map_or(0, |limits| {
                std::mem::size_of::<UsageLimits>() + limits.heap_bytes()
            })
    }

    /// A record with full access, no name, no expiry, created now.
    pub fn new(id: impl Into<KeyId>, hash: KeyHash, owner: Owner) -> Self {
        Self {
            id: id.into(),
            hash,
            owner,
            scopes: Scopes::all(),
            name: Label::default(),
            prefix: None,
            created_at: SystemTime::now(),
            expires_at: None,
            grace_ends_at: None,
            revoked_at: None,
            last_used_at: None,
            metadata: None,
            limits: None,
        }
    }

    /// A record for an opaque (legacy) token, stored under the id the layer
    /// derives from its hash (see [`KeyFormat::accept_opaque`]).
    ///
    /// ```
    /// use tower_keyauth::hash::KeyHash;
    /// use tower_keyauth::store::{KeyRecord, Owner};
    /// let record = KeyRecord::for_opaque_token(KeyHash::of("sk-legacy-0123456789"), Owner::org("acme"));
    /// assert!(record.id.as_str().starts_with("opaque-"));
    /// assert_eq!(record.masked(), format!("{}.****", record.id));
    /// ```
    pub fn for_opaque_token(hash: KeyHash, owner: Owner) -> Self {
        Self::new(KeyFormat::opaque_key_id(&hash), hash, owner)
    }

    /// Sets the scopes.
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Sets the name.
    pub fn with_name(mut self, name: impl Into<Label>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the token prefix shown in masked listings.
    pub fn with_prefix(mut self, prefix: impl Into<Label>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Sets the creation time.
    pub fn with_created_at(mut self, at: SystemTime) -> Self {
        self.created_at = at;
        self
    }

    /// Sets the expiry.
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the end of a rotation's grace period.
    pub fn with_grace_ends_at(mut self, at: SystemTime) -> Self {
        self.grace_ends_at = Some(at);
        self
    }

    /// Marks the key revoked (at `at`, as recorded; it is refused at once).
    pub fn with_revoked_at(mut self, at: SystemTime) -> Self {
        self.revoked_at = Some(at);
        self
    }

    /// Sets the last-used time.
    pub fn with_last_used_at(mut self, at: SystemTime) -> Self {
        self.last_used_at = Some(at);
        self
    }

    /// Sets what the key may use; empty limits are none.
    pub fn with_limits(mut self, limits: UsageLimits) -> Self {
        self.limits = (!limits.is_empty()).then(|| Arc::new(limits));
        self
    }

    /// Sets what the application keeps with the key.
    pub fn with_metadata(mut self, metadata: KeyMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The key's kind, from its owner.
    pub fn kind(&self) -> KeyKind {
        self.owner.kind()
    }

    /// The key as shown in listings: `ak_<id>.****`.
    pub fn masked(&self) -> String {
        KeyFormat::mask(self.prefix.as_deref(), &self.id)
    }

    /// Whether the key has been revoked. No clock is asked: a revocation
    /// holds from the moment it is stored.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// When the key stops working by itself: the earlier of its expiry and
    /// the end of a rotation's grace period.
    pub fn stops_at(&self) -> Option<SystemTime> {
        match (self.expires_at, self.grace_ends_at) {
            (Some(expiry), Some(grace_end)) => Some(expiry.min(grace_end)),
            (expiry, grace_end) => expiry.or(grace_end),
        }
    }

    /// Whether the key has expired, or its rotation's grace period ended,
    /// by `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.stops_at().is_some_and(|at| at <= now)
    }

    /// Whether the key is neither revoked nor expired at `now`.
    pub fn is_usable_at(&self, now: SystemTime) -> bool {
        !self.is_revoked() && !self.is_expired_at(now)
    }
}

/// A user's membership of an organization: what their personal tokens may
/// do there.
///
/// ```
/// use tower_keyauth::Scopes;
/// use tower_keyauth::store::Membership;
/// let member = Membership::new(Scopes::parse(["objects.read", "objects.write"]).unwrap());
/// assert!(member.scopes.allows("objects.write"));
/// assert!(Membership::full_access().scopes.is_all());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Membership {
    /// The scopes the user holds in the organization (for example from their
    /// role). A personal token gets these intersected with its own.
    pub scopes: Scopes,
}

impl Membership {
    /// The heap memory the membership holds.
    #[cfg_attr(not(feature = "cache"), allow(dead_code))]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.scopes.heap_bytes()
    }

    /// A membership with these scopes.
    pub fn new(scopes: Scopes) -> Self {
        Self { scopes }
    }

    /// A membership with every scope (an owner or admin).
    pub fn full_access() -> Self {
        Self::new(Scopes::all())
    }
}
