//! Who is calling: the [`Principal`] the layer hands to every handler.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::{Extensions, HeaderName};

use crate::error::AuthError;
use crate::format::Environment;
use crate::ids::{KeyId, KeyKind, OrgId, UserId, WorkspaceId};
use crate::limit::UsageLimits;
use crate::metadata::KeyMetadata;
use crate::response::{ResponseContext, layer_context};
use crate::scope::Scopes;

/// The organization (and, for workspace keys, the workspace) a request acts
/// for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    /// The organization.
    pub org: OrgId,
    /// The workspace, for workspace keys.
    pub workspace: Option<WorkspaceId>,
}

impl Tenant {
    /// A whole organization.
    pub fn org(org: impl Into<OrgId>) -> Self {
        Self {
            org: org.into(),
            workspace: None,
        }
    }

    /// One workspace of an organization.
    pub fn workspace(org: impl Into<OrgId>, workspace: impl Into<WorkspaceId>) -> Self {
        Self {
            org: org.into(),
            workspace: Some(workspace.into()),
        }
    }
}

/// Where the credential of a request was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A header of its own, such as `x-api-key`.
    Header(HeaderName),
    /// A query parameter, such as `api-key` (discouraged).
    Query(Arc<str>),
    /// A custom [`ExtractCredential`](crate::extract::ExtractCredential), by its
    /// label.
    Custom(Arc<str>),
}

impl fmt::Display for CredentialSource {
    /// `bearer`, `header:x-api-key`, `query:api-key` or `custom:<label>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Bearer => f.write_str("bearer"),
            CredentialSource::Header(name) => write!(f, "header:{name}"),
            CredentialSource::Query(name) => write!(f, "query:{name}"),
            CredentialSource::Custom(label) => write!(f, "custom:{label}"),
        }
    }
}

/// The authenticated caller of a request, inserted into the request
/// extensions by [`KeyAuthLayer`](crate::KeyAuthLayer).
///
/// In axum, take it as an extractor (feature `axum`); anywhere else (tonic
/// included) read it from the extensions:
///
/// ```
/// use tower_keyauth::Principal;
/// fn handler(request: &http::Request<()>) -> Option<&Principal> {
///     request.extensions().get::<Principal>()
/// }
/// ```
///
/// Build one by hand to unit-test a handler:
///
/// ```
/// use tower_keyauth::{Principal, Scopes};
/// use tower_keyauth::ids::KeyKind;
/// use tower_keyauth::principal::Tenant;
/// let principal = Principal::new("key1", KeyKind::Organization, Tenant::org("acme"))
///     .with_scopes(Scopes::parse(["objects.read"]).unwrap());
/// assert_eq!(principal.org(), "acme");
/// assert!(principal.require_scope("objects.read").is_ok());
/// assert!(principal.require_scope("objects.write").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    key_id: KeyId,
    kind: KeyKind,
    tenant: Tenant,
    user: Option<UserId>,
    scopes: Scopes,
    source: CredentialSource,
    environment: Option<Environment>,
    expires_at: Option<SystemTime>,
    metadata: Option<KeyMetadata>,
    limits: Option<Arc<UsageLimits>>,
}

impl Principal {
    /// A principal with full access, from a Bearer credential.
    pub fn new(key_id: impl Into<KeyId>, kind: KeyKind, tenant: Tenant) -> Self {
        Self {
            key_id: key_id.into(),
            kind,
            tenant,
            user: None,
            scopes: Scopes::all(),
            source: CredentialSource::Bearer,
            environment: None,
            expires_at: None,
            metadata: None,
            limits: None,
        }
    }

    /// Every field at once, for the layer's hot path.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn authenticated(
        key_id: KeyId,
        kind: KeyKind,
        tenant: Tenant,
        user: Option<UserId>,
        scopes: Scopes,
        source: CredentialSource,
        environment: Option<Environment>,
        expires_at: Option<SystemTime>,
        metadata: Option<KeyMetadata>,
        limits: Option<Arc<UsageLimits>>,
    ) -> Self {
        Self {
            key_id,
            kind,
            tenant,
            user,
            scopes,
            source,
            environment,
            expires_at,
            metadata,
            limits,
        }
    }

    /// Sets the user (personal tokens).
    pub fn with_user(mut self, user: impl Into<UserId>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the effective scopes.
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// Sets where the credential came from.
    pub fn with_source(mut self, source: CredentialSource) -> Self {
        self.source = source;
        self
    }

    /// Sets the environment named by the key's prefix.
    pub fn with_environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Sets when the key stops working.
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets what the key may use.
    pub fn with_limits(mut self, limits: UsageLimits) -> Self {
        self.limits = (!limits.is_empty()).then(|| Arc::new(limits));
        self
    }

    /// Sets the key's metadata.
    pub fn with_metadata(mut self, metadata: KeyMetadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The id of the key that authenticated the request.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The organization and workspace the request acts for.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The organization the request acts for.
    pub fn org(&self) -> &OrgId {
        &self.tenant.org
    }

    /// The workspace, for workspace keys.
    pub fn workspace(&self) -> Option<&WorkspaceId> {
        self.tenant.workspace.as_ref()
    }

    /// The user, for personal tokens.
    pub fn user(&self) -> Option<&UserId> {
        self.user.as_ref()
    }

    /// What the request may do: the key's scopes, and for personal tokens
    /// those intersected with the user's membership.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// Where the credential was found.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// The environment named by the key's prefix, if the format has them.
    pub fn environment(&self) -> Option<Environment> {
        self.environment
    }

    /// When the key stops working by itself, if ever: the earlier of its
    /// expiry and the end of a rotation's grace period
    /// ([`KeyRecord::stops_at`](crate::store::KeyRecord::stops_at)). A key
    /// this principal issues through the key API never outlives it.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// What the application keeps with the key, read with the key itself:
    /// no further store call.
    ///
    /// ```
    /// use tower_keyauth::Principal;
    /// use tower_keyauth::ids::KeyKind;
    /// use tower_keyauth::metadata::KeyMetadata;
    /// use tower_keyauth::principal::Tenant;
    /// let principal = Principal::new("key1", KeyKind::Organization, Tenant::org("acme"))
    ///     .with_metadata(KeyMetadata::from_json(r#"{"plan":"pro"}"#).unwrap());
    /// assert_eq!(principal.metadata().unwrap().as_json(), r#"{"plan":"pro"}"#);
    /// ```
    pub fn metadata(&self) -> Option<&KeyMetadata> {
        self.metadata.as_ref()
    }

    /// What the key may use (its rate limits), as the layer enforced them
    /// on this request; `None` for a key without limits.
    pub fn limits(&self) -> Option<&UsageLimits> {
        self.limits.as_deref()
    }

    /// The shared limits, for the layer's enforcement.
    pub(crate) fn shared_limits(&self) -> Option<&Arc<UsageLimits>> {
        self.limits.as_ref()
    }

    /// Whether the principal holds `scope` (see [`Scopes::allows`]).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.allows(scope)
    }

    /// `Ok` when the principal holds `scope`; otherwise the
    /// `insufficient_scope` error, which turns into a 403 (with the axum
    /// feature, `?` in a handler does that, with the layer's realm in its
    /// challenge).
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::insufficient_scope(scope))
        }
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .field("org", &self.tenant.org)
            .field("workspace", &self.tenant.workspace)
            .field("user", &self.user)
            .field("scopes", &self.scopes)
            .field("source", &self.source)
            .field("environment", &self.environment)
            .field("expires_at", &self.expires_at)
            .field("metadata", &self.metadata)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Marks a request that passed the layer on a public path without a valid
/// credential, with the reason, so that a `Principal` extractor there can
/// answer like the layer would (and tell it apart from a route the layer
/// never saw).
#[derive(Clone)]
pub(crate) struct Unauthenticated(pub(crate) AuthError);

/// What the layer left in a request's extensions about its caller.
pub(crate) enum Caller<'a> {
    /// A valid credential.
    Authenticated(&'a Principal),
    /// A public path without a valid credential: the layer's reason and how
    /// it answers.
    Refused(&'a AuthError, &'a ResponseContext),
    /// The layer never saw the request: a misconfigured router.
    NotBehindKeyAuth,
}

impl<'a> Caller<'a> {
    pub(crate) fn of(extensions: &'a Extensions) -> Self {
        if let Some(principal) = extensions.get::<Principal>() {
            return Caller::Authenticated(principal);
        }
        match (
            extensions.get::<Unauthenticated>(),
            layer_context(extensions),
        ) {
            (Some(Unauthenticated(error)), Some(context)) => Caller::Refused(error, context),
            _ => Caller::NotBehindKeyAuth,
        }
    }
}
