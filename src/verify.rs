//! From a request's head to a verdict: extract, parse, look up, compare,
//! check lifetime and tenancy; then what the verdict means for the request.
//!
//! Everything that needs no store runs synchronously in
//! [`check`]; what needs one is a boxed future. Each refusal is logged here,
//! once, with the key id when one is known, never with the secret. [`admit`]
//! lets the request in or has the refusal built.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, Response};

use crate::config::Config;
use crate::error::AuthError;
use crate::format::{Environment, KindSet};
use crate::guard::{CatchUnwind, catching};
use crate::hash::KeyHash;
use crate::ids::KeyKind;
use crate::ids::{KeyId, OrgId, UserId};
use crate::principal::{CredentialSource, Principal, Tenant, Unauthenticated};
use crate::record::{KeyRecord, Membership, Owner};
use crate::response::ResponseContext;
use crate::scope::Scopes;
use crate::store::{KeyMatch, KeyStore, StoreError};

/// What the layer decided about a request's credential.
#[derive(Debug)]
pub(crate) enum Verdict {
    Authenticated(Principal),
    Refused(AuthError),
}

pub(crate) type PendingVerdict = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// A verdict now, or one that waits on the store.
pub(crate) enum Check {
    Done(Verdict),
    Pending(PendingVerdict),
}

/// What becomes of a request once its verdict is known.
pub(crate) enum Admission {
    /// On to the inner service, with these parts.
    Pass(Parts),
    /// Answered here.
    Refuse(Response<Bytes>),
}

/// Lets the request in (with its principal, or on a public path with the
/// reason there is none) or has the refusal built. A request let in
/// carries the layer's response context, for refusals further in.
pub(crate) fn admit(
    verdict: Verdict,
    public: bool,
    context: &Arc<ResponseContext>,
    mut parts: Parts,
) -> Admission {
    match verdict {
        Verdict::Authenticated(principal) => {
            parts.extensions.insert(principal);
        }
        Verdict::Refused(rejection) if public => {
            tracing::debug!(
                outcome = rejection.error_code(),
                "public path: credential ignored"
            );
            parts.extensions.insert(Unauthenticated(rejection));
        }
        Verdict::Refused(rejection) => {
            return Admission::Refuse(context.respond(&rejection, &parts));
        }
    }
    parts.extensions.insert(Arc::clone(context));
    Admission::Pass(parts)
}

/// Runs every step that needs no I/O; asks the store only for a token whose
/// shape and checksum are valid.
pub(crate) fn check<S: KeyStore>(config: &Arc<Config<S>>, request: &Parts) -> Check {
    let credential = match config.extract.extract(request) {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            let refusal = config.extract.missing(request);
            tracing::debug!(
                outcome = "missing_credentials",
                reason = refusal.message(),
                "no credential in request"
            );
            return refuse(refusal);
        }
        Err(error) => {
            tracing::info!(
                outcome = "invalid_request",
                reason = error.message(),
                "malformed credential"
            );
            return refuse(error);
        }
    };
    if let CredentialSource::Query(parameter) = &credential.source {
        tracing::warn!(
            parameter = &**parameter,
            "credential sent in the URL query; URLs get logged, prefer a header"
        );
    }
    let parsed = match config.format.parse(&credential.token) {
        Ok(parsed) => parsed,
        Err(reason) => {
            tracing::info!(outcome = "invalid_token", reason = %reason, "token refused before lookup");
            return refuse(AuthError::invalid_token());
        }
    };
    let org_header = match organization_header(request, &config.org_header) {
        Ok(org) => org,
        Err(error) => return refuse(error),
    };
    let hash = KeyHash::of(&credential.token);
    let attempt = Attempt {
        id: parsed.lookup_id(&hash),
        hash,
        kinds: parsed.kinds(),
        environment: parsed.environment(),
        source: credential.source,
        org_header,
    };
    let store_answer = catching(|| {
        config
            .store
            .find_key_matching_now(&attempt.id, &attempt.hash)
    })
    .unwrap_or_else(|panic| Some(Err(panic)));
    match store_answer {
        Some(matched) => match attempt.examine(matched, config) {
            Ok(Examined::Done(principal)) => Check::Done(Verdict::Authenticated(principal)),
            Ok(Examined::NeedsMembership(pending)) => {
                let id = pending.attempt.id.clone();
                let config = Arc::clone(config);
                Check::Pending(contained(id, config.store_timeout, async move {
                    pending.resolve(&config).await
                }))
            }
            Err(error) => refuse(error),
        },
        None => {
            let id = attempt.id.clone();
            let config = Arc::clone(config);
            Check::Pending(contained(id, config.store_timeout, async move {
                attempt.run(&config).await
            }))
        }
    }
}

/// The pending part of a check, contained: a store that panics or does not
/// answer within `timeout` refuses the request with 503.
fn contained(
    id: KeyId,
    timeout: Option<Duration>,
    verdict: impl Future<Output = Verdict> + Send + 'static,
) -> PendingVerdict {
    Box::pin(async move {
        let verdict = CatchUnwind::new(verdict);
        let outcome = match timeout {
            #[cfg(feature = "tokio")]
            Some(limit) => tokio::time::timeout(limit, verdict)
                .await
                .unwrap_or(Err(StoreError::Timeout)),
            _ => verdict.await,
        };
        outcome.unwrap_or_else(|error| Verdict::Refused(store_failed(&id, &error)))
    })
}

fn refuse(error: AuthError) -> Check {
    Check::Done(Verdict::Refused(error))
}

/// The organization the request names in the org header, if any.
fn organization_header(request: &Parts, name: &HeaderName) -> Result<Option<OrgId>, AuthError> {
    let mut values = request.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::invalid_request(format!(
            "The {name} header must not be repeated."
        )));
    }
    match value.to_str() {
        Ok(org) if !org.is_empty() && org.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(OrgId::from(org)))
        }
        _ => Err(AuthError::invalid_request(format!(
            "The {name} header must be a non-empty organization id of visible ASCII."
        ))),
    }
}

/// A well-formed credential on its way through the store.
struct Attempt {
    id: KeyId,
    hash: KeyHash,
    kinds: KindSet,
    environment: Option<Environment>,
    source: CredentialSource,
    org_header: Option<OrgId>,
}

enum Examined {
    Done(Principal),
    /// Rare (personal tokens only), and waits on the store anyway.
    NeedsMembership(Box<MembershipCheck>),
}

impl Attempt {
    async fn run<S: KeyStore>(self, config: &Arc<Config<S>>) -> Verdict {
        let matched = config.store.find_key_matching(&self.id, &self.hash).await;
        match self.examine(matched, config) {
            Ok(Examined::Done(principal)) => Verdict::Authenticated(principal),
            Ok(Examined::NeedsMembership(pending)) => pending.resolve(config).await,
            Err(error) => Verdict::Refused(error),
        }
    }

    /// Everything after the lookup that needs no further I/O. Nothing of
    /// the record is looked at before its hash matched the token's.
    #[inline(always)]
    fn examine<S: KeyStore>(
        self,
        matched: Result<KeyMatch, StoreError>,
        config: &Config<S>,
    ) -> Result<Examined, AuthError> {
        let id = &self.id;
        let record = match matched.map_err(|error| store_failed(id, &error))? {
            KeyMatch::Matches(record) if self.kinds.contains(record.kind()) => record,
            KeyMatch::Matches(_) | KeyMatch::Differs => {
                tracing::info!(key_id = %id, outcome = "invalid_token", reason = "secret or prefix does not match", "credential refused");
                return Err(AuthError::invalid_token());
            }
            KeyMatch::Unknown => {
                tracing::info!(key_id = %id, outcome = "invalid_token", reason = "unknown key id", "credential refused");
                return Err(AuthError::invalid_token());
            }
        };
        // Only now that the secret matched may the client learn more. A
        // revocation holds whatever the clock says; expiry is a time.
        if record.is_revoked() {
            tracing::info!(key_id = %id, outcome = "revoked", "credential refused");
            return Err(AuthError::revoked());
        }
        let now = config.clock.now();
        if record.is_expired_at(now) {
            tracing::info!(key_id = %id, outcome = "expired", "credential refused");
            return Err(AuthError::expired());
        }
        let tenant = match &record.owner {
            Owner::Organization(org) => Tenant {
                org: org.clone(),
                workspace: None,
            },
            Owner::Workspace { org, workspace } => Tenant {
                org: org.clone(),
                workspace: Some(workspace.clone()),
            },
            Owner::User(user) => {
                let Some(org) = self.org_header.clone() else {
                    tracing::info!(key_id = %id, outcome = "missing_organization", "personal token without organization header");
                    return Err(AuthError::missing_organization()
                        .with_org_header(config.org_header.as_str()));
                };
                return Ok(Examined::NeedsMembership(Box::new(MembershipCheck {
                    user: user.clone(),
                    attempt: self,
                    record,
                    org,
                    now,
                })));
            }
        };
        if let Some(named) = &self.org_header {
            if *named != tenant.org {
                tracing::info!(key_id = %id, outcome = "forbidden", org = %named, "key used for another organization");
                return Err(AuthError::forbidden());
            }
        }
        note_use(config, &record, now);
        let principal = self.into_principal(record.kind(), tenant, None, record.scopes);
        tracing::debug!(key_id = %principal.key_id(), org = %principal.org(), source = %principal.source(), "credential accepted");
        Ok(Examined::Done(principal))
    }

    fn into_principal(
        self,
        kind: KeyKind,
        tenant: Tenant,
        user: Option<UserId>,
        scopes: Scopes,
    ) -> Principal {
        Principal::authenticated(
            self.id,
            kind,
            tenant,
            user,
            scopes,
            self.source,
            self.environment,
        )
    }
}

/// Tells the store that `record` authenticated an admitted request (never
/// for a refused one, so `last_used_at` means "let in"). A panicking store
/// does not fail the request.
fn note_use<S: KeyStore>(config: &Config<S>, record: &KeyRecord, now: SystemTime) {
    if let Err(panic) = catching(|| config.store.record_use(record, now)) {
        tracing::error!(key_id = %record.id, error = %panic, "recording a key's use failed; the request goes on");
    }
}

fn store_failed(id: &KeyId, error: &StoreError) -> AuthError {
    tracing::error!(key_id = %id, outcome = "unavailable", error = %ErrorChain(error), "key store failed; refusing the request");
    AuthError::unavailable()
}

/// A personal token whose secret matched, waiting for the membership of its
/// user in the organization the request names.
struct MembershipCheck {
    user: UserId,
    attempt: Attempt,
    record: KeyRecord,
    org: OrgId,
    /// When the token was checked, for its use once admitted.
    now: SystemTime,
}

impl MembershipCheck {
    async fn resolve<S: KeyStore>(self: Box<Self>, config: &Config<S>) -> Verdict {
        let (id, org, user) = (&self.attempt.id, &self.org, &self.user);
        match config.store.membership(user, org).await {
            Err(error) => Verdict::Refused(store_failed(id, &error)),
            Ok(None) => {
                tracing::info!(key_id = %id, user = %user, org = %org, outcome = "forbidden", "personal token for an organization its user is not a member of");
                Verdict::Refused(AuthError::forbidden())
            }
            Ok(Some(Membership { scopes, .. })) => {
                note_use(config, &self.record, self.now);
                tracing::debug!(key_id = %id, org = %org, source = %self.attempt.source, "personal token accepted");
                let scopes = self.record.scopes.intersection(&scopes);
                let tenant = Tenant {
                    org: self.org,
                    workspace: None,
                };
                let kind = self.record.kind();
                Verdict::Authenticated(self.attempt.into_principal(
                    kind,
                    tenant,
                    Some(self.user),
                    scopes,
                ))
            }
        }
    }
}

/// Displays an error with its sources: `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}
