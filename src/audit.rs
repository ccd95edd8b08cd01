//! What happened to keys, for an audit trail: issued, rotated, revoked,
//! uses refused because a key was revoked or expired, and leaks.
//!
//! The key API reports its operations, [`KeyAuthLayer`](crate::KeyAuthLayer)
//! the refused uses and the secret scanning endpoint (feature
//! `secret-scanning`) the leaked keys, each to an [`AuditSink`] the
//! application provides; the default, [`TracingAudit`], emits one
//! structured `tracing` event per event (target `tower_keyauth::audit`).
//! An event holds ids, never a secret.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::ids::{KeyId, OrgId, UserId, WorkspaceId};
use crate::record::Owner;

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditAction {
    /// The key was issued.
    Issued,
    /// The key was rotated; `successor` replaces it.
    Rotated {
        /// The id of the key that replaces it.
        successor: KeyId,
    },
    /// The key was revoked.
    Revoked,
    /// A request presented the key (its secret matched) after it was
    /// revoked, and was refused.
    RefusedRevoked,
    /// A request presented the key (its secret matched) after it expired,
    /// and was refused.
    RefusedExpired,
    /// A secret scanner (GitHub's, through the secret scanning endpoint)
    /// reported the key, live, found in a public place. A
    /// [`Revoked`](AuditAction::Revoked) event follows unless the endpoint
    /// only reports.
    Leaked,
}

impl AuditAction {
    /// `issued`, `rotated`, `revoked`, `refused_revoked`,
    /// `refused_expired` or `leaked`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuditAction::Issued => "issued",
            AuditAction::Rotated { .. } => "rotated",
            AuditAction::Revoked => "revoked",
            AuditAction::RefusedRevoked => "refused_revoked",
            AuditAction::RefusedExpired => "refused_expired",
            AuditAction::Leaked => "leaked",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did it: the key that authenticated the request, and its user for
/// personal tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Actor {
    /// The id of the key the request authenticated with.
    pub key_id: KeyId,
    /// The user, for personal tokens.
    pub user: Option<UserId>,
}

impl Actor {
    /// The holder of the key `key_id`.
    pub fn key(key_id: impl Into<KeyId>) -> Self {
        Self {
            key_id: key_id.into(),
            user: None,
        }
    }

    /// Names the user (personal tokens).
    pub fn with_user(mut self, user: impl Into<UserId>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// One thing that happened to one key.
///
/// ```
/// use std::time::SystemTime;
/// use tower_keyauth::audit::{Actor, AuditAction, AuditEvent};
/// use tower_keyauth::store::Owner;
/// let event = AuditEvent::new(AuditAction::Revoked, "Xb3kP9qLm2Ts", Owner::org("acme"))
///     .by(Actor::key("Q7wErT5yUi9o"));
/// assert_eq!(event.action.as_str(), "revoked");
/// assert_eq!(event.org().unwrap().as_str(), "acme");
/// assert!(event.at <= SystemTime::now());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEvent {
    /// What happened.
    pub action: AuditAction,
    /// Who did it; `None` for refused uses (the presenter is not
    /// authenticated) and for operations without a caller.
    pub actor: Option<Actor>,
    /// The key it happened to.
    pub key_id: KeyId,
    /// The key's owner: its organization (and workspace), or its user.
    pub owner: Owner,
    /// When.
    pub at: SystemTime,
}

impl AuditEvent {
    /// `action` on the key `key_id` of `owner`, now, by nobody in
    /// particular.
    pub fn new(action: AuditAction, key_id: impl Into<KeyId>, owner: Owner) -> Self {
        Self {
            action,
            actor: None,
            key_id: key_id.into(),
            owner,
            at: SystemTime::now(),
        }
    }

    /// Names who did it.
    pub fn by(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Sets when it happened.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }

    /// The organization of the key's owner (none for personal tokens).
    pub fn org(&self) -> Option<&OrgId> {
        self.owner.org_id()
    }

    /// The workspace of the key's owner, for workspace keys.
    pub fn workspace(&self) -> Option<&WorkspaceId> {
        match &self.owner {
            Owner::Workspace { workspace, .. } => Some(workspace),
            _ => None,
        }
    }
}

/// Where audit events go. Called on the request's task: hand the event to
/// a channel or a log, do not wait on I/O here.
///
/// Any `Fn(&AuditEvent)` is a sink:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_keyauth::audit::{AuditEvent, AuditSink};
/// let seen: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
/// let sink = {
///     let seen = seen.clone();
///     move |event: &AuditEvent| seen.lock().unwrap().push(event.clone())
/// };
/// # fn takes(_: impl AuditSink) {}
/// takes(sink);
/// ```
pub trait AuditSink: Send + Sync + 'static {
    /// Records `event`.
    fn record(&self, event: &AuditEvent);
}

impl<F> AuditSink for F
where
    F: Fn(&AuditEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &AuditEvent) {
        self(event)
    }
}

impl<S: AuditSink + ?Sized> AuditSink for Arc<S> {
    fn record(&self, event: &AuditEvent) {
        (**self).record(event)
    }
}

/// The default sink: one `tracing` event per audit event, at `INFO`, with
/// target `tower_keyauth::audit` and the fields `action`, `key_id`, `kind`
/// (the key's: `organization`, `workspace`, `personal`), `org`,
/// `workspace`, `user` (of a personal token's owner), `actor_key_id`,
/// `actor_user`, `successor` and `at` (seconds since the Unix epoch).
///
/// Filter them with `RUST_LOG=tower_keyauth::audit=info`, or route that
/// target to a file of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

impl AuditSink for TracingAudit {
    fn record(&self, event: &AuditEvent) {
        let at = event
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let successor = match &event.action {
            AuditAction::Rotated { successor } => Some(successor.as_str()),
            _ => None,
        };
        let owner_user = match &event.owner {
            Owner::User(user) => Some(user.as_str()),
            _ => None,
        };
        tracing::info!(
            target: "tower_keyauth::audit",
            action = event.action.as_str(),
            key_id = event.key_id.as_str(),
            kind = event.owner.kind().as_str(),
            org = event.org().map(OrgId::as_str),
            workspace = event.workspace().map(WorkspaceId::as_str),
            user = owner_user,
            actor_key_id = event.actor.as_ref().map(|actor| actor.key_id.as_str()),
            actor_user = event.actor.as_ref().and_then(|actor| actor.user.as_ref()).map(UserId::as_str),
            successor,
            at,
            "audit: {}",
            event.action
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_its_name() {
        let actions = [
            (AuditAction::Issued, "issued"),
            (
                AuditAction::Rotated {
                    successor: KeyId::from("Q7wErT5yUi9o"),
                },
                "rotated",
            ),
            (AuditAction::Revoked, "revoked"),
            (AuditAction::RefusedRevoked, "refused_revoked"),
            (AuditAction::RefusedExpired, "refused_expired"),
            (AuditAction::Leaked, "leaked"),
        ];
        for (action, name) in actions {
            assert_eq!(action.as_str(), name);
            assert_eq!(action.to_string(), name);
        }
    }
}
