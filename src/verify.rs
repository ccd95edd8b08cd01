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

use crate::audit::{AuditAction, AuditEvent, AuditSink};
use crate::config::Config;
use crate::enforce::{Enforced, client_of, cost_of, enforce};
use crate::error::AuthError;
use crate::extract::Credential;
use crate::format::{Environment, KindSet, ParseError, ParsedToken};
use crate::hash::KeyHash;
use crate::ids::KeyKind;
use crate::ids::{KeyId, OrgId, UserId};
use crate::limit::UsageLimits;
use crate::limit::fields::LimitFields;
use crate::metadata::KeyMetadata;
use crate::pepper::HashVersion;
use crate::principal::{CredentialSource, Principal, Tenant, Unauthenticated};
use crate::record::{KeyRecord, Membership, Owner};
use crate::response::{Answers, ResponseContext};
use crate::scope::Scopes;
use crate::store::guard::{CatchUnwind, catching};
use crate::store::{KeyMatchRef, KeyStore, StoreError, note_use};

/// What the layer decided about a request's credential, once the store
/// answered.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Admitted, with the `RateLimit` fields of its key's limits, if any.
    Authenticated(Principal, Option<LimitFields>),
    Refused(AuthError),
}

pub(crate) type PendingVerdict = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// A verdict now, or one that waits on the store.
pub(crate) enum Check {
    /// The credential is valid; its principal is in the request's
    /// extensions already. With the `RateLimit` fields of its key's limits,
    /// if any.
    Admitted(Option<LimitFields>),
    /// Valid, and its key has a usage policy to enforce: the principal is
    /// in the request's extensions; [`check`] turns this into one of the
    /// others.
    Enforce,
    Refused(AuthError),
    Pending(PendingVerdict),
}

/// What becomes of a request once its verdict is known.
pub(crate) enum Admission {
    /// On to the inner service, with these parts (and `RateLimit` fields
    /// for the response).
    Pass(Parts, Option<LimitFields>),
    /// Answered here.
    Refuse(Response<Bytes>),
}

/// Lets the request in (with its principal, or on a public path with the
/// reason there is none) or has the refusal built. A request let in
/// carries the layer's answers, for refusals further in: with a principal,
/// its [`Answers`]; without one, the whole context, whose advice on sending
/// a key a `Principal` extractor may need.
pub(crate) fn admit(
    verdict: Verdict,
    public: bool,
    answers: &Answers,
    context: &Arc<ResponseContext>,
    mut parts: Parts,
) -> Admission {
    match verdict {
        Verdict::Authenticated(principal, fields) => {
            parts.extensions.insert(principal);
            answers.mark(&mut parts.extensions);
            Admission::Pass(parts, fields)
        }
        Verdict::Refused(rejection) => refuse(rejection, public, context, parts),
    }
}

/// A refused credential: answered here, or on a public path let in without
/// a principal.
pub(crate) fn refuse(
    rejection: AuthError,
    public: bool,
    context: &Arc<ResponseContext>,
    mut parts: Parts,
) -> Admission {
    if !public {
        return Admission::Refuse(context.respond(&rejection, &parts));
    }
    tracing::debug!(
        outcome = rejection.error_code(),
        "public path: credential ignored"
    );
    parts.extensions.insert(Unauthenticated(rejection));
    parts.extensions.insert(Arc::clone(context));
    Admission::Pass(parts, None)
}

/// Runs every step that needs no I/O; asks the store only for a token whose
/// shape and checksum are valid. A valid credential's principal goes
/// straight into `request`'s extensions. A request that will reach the
/// inner service (admitted, on a public path, or waiting for the store)
/// leaves with its credentials scrubbed (see [`Extract::scrub`]).
///
/// [`Extract::scrub`]: crate::extract::Extract
pub(crate) fn check<S: KeyStore>(
    config: &Arc<Config<S>>,
    request: &mut Parts,
    public: bool,
) -> Check {
    let mut bearer_marked = false;
    #[cfg(feature = "metrics")]
    let mut source = crate::metrics::SOURCE_NONE;
    let mut check = match throttled(config, request) {
        Some(refusal) => Check::Refused(refusal),
        None => check_credential(
            config,
            request,
            &mut bearer_marked,
            #[cfg(feature = "metrics")]
            &mut source,
        ),
    };
    check = match check {
        Check::Enforce => enforce_policy(config, request, public),
        Check::Pending(verdict) => after_lookup(config, request, public, verdict),
        Check::Refused(refusal) => {
            // A public path answers without refusing: nothing to count.
            if !public {
                count_failed_attempt(config, request, &refusal);
            }
            Check::Refused(refusal)
        }
        admitted @ Check::Admitted(_) => admitted,
    };
    #[cfg(feature = "metrics")]
    let check = count_now(request, public, source, check);
    if public || !matches!(check, Check::Refused(_)) {
        config
            .extract
            .scrub(request, config.hide_credentials, public, bearer_marked);
    }
    check
}

/// The refusal of a client address the failed-attempt throttle blocks.
fn throttled<S>(config: &Config<S>, request: &Parts) -> Option<AuthError> {
    let throttle = config.throttle.as_ref()?;
    let now = config.clock.now();
    if !throttle.may_block(now) {
        return None;
    }
    let client = client_of(config, request)?;
    throttle
        .blocked(client, now)
        .map(crate::throttle::blocked_refusal)
}

/// Counts a refused credential against its client address, for the
/// failed-attempt throttle.
fn count_failed_attempt<S>(config: &Config<S>, request: &Parts, refusal: &AuthError) {
    if let Some(throttle) = &config.throttle {
        throttle.count_refusal(refusal, || client_of(config, request), &config.clock);
    }
}

/// Everything that follows a lookup the store answers later, in one
/// frame: the key's usage policy (on a public path, only its address
/// allowlist: a public path charges nothing), bounded like the lookup, and
/// the failed-attempt throttle's count of a refusal.
fn after_lookup<S: KeyStore>(
    config: &Arc<Config<S>>,
    request: &Parts,
    public: bool,
    verdict: PendingVerdict,
) -> Check {
    // Read now: the request's parts stay behind when the verdict waits.
    let cost = cost_of(config, request, public);
    let client = client_of(config, request);
    // A public path answers without refusing: nothing for the throttle.
    let throttle = config.throttle.as_ref().filter(|_| !public).map(Arc::clone);
    let config = Arc::clone(config);
    Check::Pending(Box::pin(async move {
        let verdict = match verdict.await {
            Verdict::Authenticated(principal, _) => {
                match enforce(&config, &principal, cost, || client) {
                    Enforced::Pass(fields) => Verdict::Authenticated(principal, fields),
                    Enforced::Refuse(error) => Verdict::Refused(error),
                    pending @ Enforced::Pending(_) => {
                        let id = principal.key_id().clone();
                        let enforcing = admitted_unless_refused(principal, pending);
                        contained(id, config.store_timeout, enforcing).await
                    }
                }
            }
            refused => refused,
        };
        if let (Some(throttle), Verdict::Refused(refusal)) = (&throttle, &verdict) {
            throttle.count_refusal(refusal, || client, &config.clock);
        }
        verdict
    }))
}

/// Enforces the usage policy of an admitted key whose principal is in the
/// request's extensions: at once with an in-process limiter, or as a
/// pending verdict. On a public path only the key's address allowlist
/// applies: a key refused there leaves no principal.
fn enforce_policy<S: KeyStore>(
    config: &Arc<Config<S>>,
    request: &mut Parts,
    public: bool,
) -> Check {
    let cost = cost_of(config, request, public);
    let Some(principal) = request.extensions.get::<Principal>() else {
        return Check::Admitted(None);
    };
    match enforce(config, principal, cost, || client_of(config, request)) {
        Enforced::Pass(fields) => Check::Admitted(fields),
        Enforced::Refuse(error) => {
            request.extensions.remove::<Principal>();
            Check::Refused(error)
        }
        pending @ Enforced::Pending(_) => {
            let principal = request
                .extensions
                .remove::<Principal>()
                .expect("the principal was just read");
            // Bounded like a lookup: a limiter or store that hangs refuses
            // with 503 once the store timeout passes.
            Check::Pending(contained(
                principal.key_id().clone(),
                config.store_timeout,
                admitted_unless_refused(principal, pending),
            ))
        }
    }
}

/// The verdict once enforcement is known.
async fn admitted_unless_refused(principal: Principal, enforced: Enforced) -> Verdict {
    let mut enforced = enforced;
    loop {
        match enforced {
            Enforced::Pass(fields) => return Verdict::Authenticated(principal, fields),
            Enforced::Refuse(error) => return Verdict::Refused(error),
            Enforced::Pending(later) => enforced = later.await,
        }
    }
}

/// The common path in one frame, with plain locals: every value moved
/// between frames here costs a copy through the stack. What is rare (no
/// credential, a malformed one, a refusal, a store that waits) is out of
/// line.
fn check_credential<S: KeyStore>(
    config: &Arc<Config<S>>,
    request: &mut Parts,
    bearer_marked: &mut bool,
    #[cfg(feature = "metrics")] source_label: &mut &'static str,
) -> Check {
    let credential = match config.extract.extract_marking(request, bearer_marked) {
        Ok(Some(credential)) => credential,
        Ok(None) => return no_credential(config, request),
        Err(error) => return Check::Refused(malformed_credential(error)),
    };
    #[cfg(feature = "metrics")]
    {
        *source_label = crate::metrics::source_label(&credential.source);
    }
    if let CredentialSource::Query(parameter) = &credential.source {
        warn_query(parameter);
    }
    let parsed = match config.format.parse_bytes(&credential.token) {
        // A token of the key format is visible ASCII by its shape; any
        // other still needs the check extraction may have left.
        Ok(parsed) if !parsed.is_opaque() => parsed,
        unusual => match opaque_or_refused(unusual, &credential) {
            Ok(parsed) => parsed,
            Err(refusal) => return Check::Refused(refusal),
        },
    };
    // Opaque tokens are looked up by their plain SHA-256 and stay there
    // (see `pepper`); any other is hashed under the current pepper.
    let opaque = parsed.is_opaque();
    let hash = if opaque {
        KeyHash::of_bytes(&credential.token)
    } else {
        config.peppers.hash_bytes(&credential.token)
    };
    let (id, kinds, environment) = (
        parsed.lookup_id(&hash),
        parsed.kinds(),
        parsed.environment(),
    );
    let source = credential.source;
    let org_header = match organization_header(request, &config.org_header) {
        Ok(org_header) => org_header,
        Err(refusal) => return Check::Refused(refusal),
    };
    // The store lends the record; the decision copies what the principal
    // needs, and anything but an admission is logged once the store let go
    // of the record.
    let mut examination = None;
    let mut limited = false;
    let extensions = &mut request.extensions;
    let answer = catching(|| {
        config.store.with_key_matching_now(&id, &hash, &mut |lent| {
            if let KeyMatchRef::OtherVersion(_) = lent {
                examination = Some(Examination::OtherVersion);
                return None;
            }
            match decide(kinds, org_header.as_ref(), lent, config) {
                // The common case builds the principal where it stays.
                Decision::Admit {
                    kind,
                    tenant,
                    scopes,
                    at,
                    expires_at,
                    metadata,
                    limits,
                } => {
                    limited = limits.is_some();
                    extensions.insert(Principal::authenticated(
                        id.clone(),
                        kind,
                        tenant,
                        None,
                        scopes,
                        source.clone(),
                        environment,
                        expires_at,
                        metadata,
                        limits,
                    ));
                    examination = Some(Examination::Admitted);
                    Some(at)
                }
                other => {
                    examination = Some(Examination::Decided(other));
                    None
                }
            }
        })
    })
    .unwrap_or_else(|panic| Some(Err(panic)));
    if let (Some(Ok(())), Some(Examination::Admitted)) = (&answer, &examination) {
        tracing::debug!(
            key_id = %id,
            org = request.extensions.get::<Principal>().map_or("", |p| p.org().as_str()),
            source = %source,
            "credential accepted"
        );
        return if limited {
            Check::Enforce
        } else {
            Check::Admitted(None)
        };
    }
    let attempt = Attempt {
        id,
        hash,
        token: token_again(config, request, &answer, &examination),
        opaque,
        rehash_from: None,
        kinds,
        environment,
        source,
        org_header,
    };
    attempt.conclude_unusual(answer, examination, config, request)
}

/// Counts a request once its verdict is known: now, or, for a pending
/// one, when the store and the limits have answered (the whole verdict,
/// limits included). `source` is where the credential was found (`none`
/// without one).
#[cfg(feature = "metrics")]
fn count_now(request: &Parts, public: bool, source: &'static str, check: Check) -> Check {
    match check {
        Check::Admitted(_) => {
            if let Some(principal) = request.extensions.get::<Principal>() {
                crate::metrics::admitted(principal);
            }
            check
        }
        Check::Refused(ref error) => {
            crate::metrics::refused(error, source, public);
            check
        }
        Check::Pending(verdict) => Check::Pending(Box::pin(async move {
            let verdict = verdict.await;
            match &verdict {
                Verdict::Authenticated(principal, _) => crate::metrics::admitted(principal),
                Verdict::Refused(error) => crate::metrics::refused(error, source, public),
            }
            verdict
        })),
        Check::Enforce => check,
    }
}

#[cold]
#[inline(never)]
fn no_credential<S>(config: &Config<S>, request: &Parts) -> Check {
    let refusal = config.extract.missing(request);
    tracing::debug!(
        outcome = "missing_credentials",
        reason = refusal.message(),
        "no credential in request"
    );
    Check::Refused(refusal)
}

#[cold]
#[inline(never)]
fn warn_query(parameter: &str) {
    tracing::warn!(
        parameter,
        "credential sent in the URL query; URLs get logged, prefer a header"
    );
}

/// An opaque token (checked for its bytes, if extraction left that), or the
/// refusal of a token that did not parse.
#[cold]
#[inline(never)]
fn opaque_or_refused<'a>(
    parsed: Result<ParsedToken<'a>, ParseError>,
    credential: &Credential<'_>,
) -> Result<ParsedToken<'a>, AuthError> {
    credential.check_bytes().map_err(malformed_credential)?;
    parsed.map_err(|reason| {
        tracing::info!(outcome = "invalid_token", reason = %reason, "token refused before lookup");
        AuthError::invalid_token()
    })
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

/// The token again, for a lookup that goes on without the request: the
/// store waits, or lent a key hashed under another pepper version, which
/// the lookup then settles by hashing the token again. Extracted a second
/// time rather than copied on every request: the credential borrows the
/// request, and only these rarer paths need it. Empty otherwise.
#[cold]
#[inline(never)]
fn token_again<S>(
    config: &Config<S>,
    request: &mut Parts,
    answer: &Option<Result<(), StoreError>>,
    examination: &Option<Examination>,
) -> Box<[u8]> {
    let needed = answer.is_none() || matches!(examination, Some(Examination::OtherVersion));
    if !needed {
        return Box::default();
    }
    match config.extract.extract_marking(request, &mut false) {
        Ok(Some(credential)) => credential.token.into(),
        _ => Box::default(),
    }
}

/// Decides a key hashed under another pepper version than the presented
/// hash (see [`pepper`](crate::pepper)): one more hash, under the record's
/// version, only for such a key. A match of a peppered token notes in
/// `rehash_from` the hash to replace once the request is admitted; `Err`
/// names a version the layer does not know (the request is refused, 503).
fn settle<'a, S>(
    lent: KeyMatchRef<'a>,
    config: &Config<S>,
    token: &[u8],
    opaque: bool,
    rehash_from: &mut Option<KeyHash>,
) -> Result<KeyMatchRef<'a>, HashVersion> {
    // Anything else is decided already: a key of the current version is
    // never re-hashed (a cache would forget it for nothing).
    if !matches!(lent, KeyMatchRef::OtherVersion(_)) {
        return Ok(lent);
    }
    match lent.settle(&config.peppers, token) {
        Ok(KeyMatchRef::Matches(record)) => {
            if !opaque {
                *rehash_from = Some(record.hash);
            }
            Ok(KeyMatchRef::Matches(record))
        }
        Ok(decided) => Ok(decided),
        Err(version) => Err(version),
    }
}

/// Everything after the lookup that needs no further I/O, read from the
/// record the store lends: only what the principal needs is copied.
/// Nothing of the record is looked at before its hash matched the
/// token's.
#[inline(always)]
fn decide<S>(
    kinds: KindSet,
    org_header: Option<&OrgId>,
    lent: KeyMatchRef<'_>,
    config: &Config<S>,
) -> Decision {
    let record = match lent {
        KeyMatchRef::Matches(record) if kinds.contains(record.kind()) => record,
        // `OtherVersion` was settled before; never let it through.
        KeyMatchRef::Matches(_) | KeyMatchRef::Differs | KeyMatchRef::OtherVersion(_) => {
            return Decision::Refuse(Refused::SecretOrPrefix);
        }
        KeyMatchRef::Unknown => return Decision::Refuse(Refused::UnknownId),
    };
    // Only now that the secret matched may the client learn more. A
    // revocation holds whatever the clock says; expiry is a time.
    if record.is_revoked() {
        return Decision::Refuse(Refused::Revoked(record.owner.clone()));
    }
    let now = config.clock.now();
    if record.is_expired_at(now) {
        return Decision::Refuse(Refused::Expired(record.owner.clone(), now));
    }
    let org = match &record.owner {
        Owner::Organization(org) | Owner::Workspace { org, .. } => org,
        Owner::User(user) => {
            let Some(org) = org_header.cloned() else {
                return Decision::Refuse(Refused::MissingOrganization);
            };
            return Decision::Membership(Box::new(PendingMembership {
                user: user.clone(),
                record: record.clone(),
                org,
                now,
            }));
        }
    };
    if org_header.is_some_and(|named| named != org) {
        return Decision::Refuse(Refused::OtherOrganization);
    }
    Decision::Admit {
        kind: record.kind(),
        tenant: Tenant {
            org: org.clone(),
            workspace: match &record.owner {
                Owner::Workspace { workspace, .. } => Some(workspace.clone()),
                _ => None,
            },
        },
        scopes: record.scopes.clone(),
        at: now,
        expires_at: record.stops_at(),
        metadata: record.metadata.clone(),
        limits: record.limits.clone(),
    }
}

fn malformed_credential(error: AuthError) -> AuthError {
    tracing::info!(
        outcome = "invalid_request",
        reason = error.message(),
        "malformed credential"
    );
    error
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
    /// The token's hash under the current pepper (plain for opaque tokens).
    hash: KeyHash,
    /// The token itself, to hash again under an earlier pepper version.
    token: Box<[u8]>,
    opaque: bool,
    /// The stored hash to replace once the request is admitted.
    rehash_from: Option<KeyHash>,
    kinds: KindSet,
    environment: Option<Environment>,
    source: CredentialSource,
    org_header: Option<OrgId>,
}

/// What the layer made of a lookup, before it is logged and turned into a
/// principal or a refusal.
enum Decision {
    /// Admit, acting for `tenant` with `scopes`; the use happened `at`.
    Admit {
        kind: KeyKind,
        tenant: Tenant,
        scopes: Scopes,
        at: SystemTime,
        expires_at: Option<SystemTime>,
        metadata: Option<KeyMetadata>,
        limits: Option<Arc<UsageLimits>>,
    },
    /// A personal token whose secret matched: its user's membership decides.
    Membership(Box<PendingMembership>),
    Refuse(Refused),
}

/// What became of a lent record.
enum Examination {
    /// Admitted: the principal is in the request's extensions.
    Admitted,
    /// Anything else, to conclude once the store let go of the record.
    Decided(Decision),
    /// The key is hashed under another pepper version: the lookup goes on
    /// with the token (see [`settle`]).
    OtherVersion,
}

impl Decision {
    /// When the request was admitted, for the store to note the key's use
    /// (never for a refused request, so `last_used_at` means "let in").
    fn used_at(&self) -> Option<SystemTime> {
        match self {
            Decision::Admit { at, .. } => Some(*at),
            _ => None,
        }
    }
}

/// Why a looked-up credential was refused, for the log (and, for a
/// revoked or expired key, the audit trail: its owner, and when expiry was
/// decided).
enum Refused {
    SecretOrPrefix,
    UnknownId,
    Revoked(Owner),
    Expired(Owner, SystemTime),
    MissingOrganization,
    OtherOrganization,
    /// The key's hash is of a pepper version the layer does not know.
    UnknownHashVersion(HashVersion),
}

/// What a personal token's membership check needs of its record.
struct PendingMembership {
    user: UserId,
    record: KeyRecord,
    org: OrgId,
    now: SystemTime,
}

// Built once per looked-up request and moved once: a box would add an
// allocation to save a copy.
#[allow(clippy::large_enum_variant)]
enum Examined {
    Done(Principal),
    /// Rare (personal tokens only), and waits on the store anyway.
    NeedsMembership(Box<MembershipCheck>),
}

impl Attempt {
    /// Everything but an admission the store answered at once: a store
    /// that waits, fails or answers strangely, a personal token, a refusal.
    #[cold]
    #[inline(never)]
    fn conclude_unusual<S: KeyStore>(
        self,
        answer: Option<Result<(), StoreError>>,
        examination: Option<Examination>,
        config: &Arc<Config<S>>,
        request: &mut Parts,
    ) -> Check {
        let concluded = match (answer, examination) {
            (None, _) | (Some(Ok(())), Some(Examination::OtherVersion)) => {
                let id = self.id.clone();
                let config = Arc::clone(config);
                return Check::Pending(contained(id, config.store_timeout, async move {
                    self.run(&config).await
                }));
            }
            (Some(Err(error)), _) => Err(store_failed(&self.id, &error)),
            (Some(Ok(())), Some(Examination::Decided(decision))) => self.conclude(decision, config),
            (Some(Ok(())), Some(Examination::Admitted)) => {
                let limited = request
                    .extensions
                    .get::<Principal>()
                    .is_some_and(|principal| principal.shared_limits().is_some());
                return if limited {
                    Check::Enforce
                } else {
                    Check::Admitted(None)
                };
            }
            (Some(Ok(())), None) => Err(store_failed(
                &self.id,
                &StoreError::backend("the store answered without lending the key"),
            )),
        };
        match concluded {
            Ok(Examined::Done(principal)) => {
                let limited = principal.shared_limits().is_some();
                request.extensions.insert(principal);
                if limited {
                    Check::Enforce
                } else {
                    Check::Admitted(None)
                }
            }
            Ok(Examined::NeedsMembership(pending)) => {
                let id = pending.attempt.id.clone();
                let config = Arc::clone(config);
                Check::Pending(contained(id, config.store_timeout, async move {
                    pending.resolve(&config).await
                }))
            }
            Err(error) => Check::Refused(error),
        }
    }

    async fn run<S: KeyStore>(mut self, config: &Arc<Config<S>>) -> Verdict {
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let found = config.store.find_key_matching(&self.id, &self.hash).await;
        #[cfg(feature = "metrics")]
        crate::metrics::store_lookup(started.elapsed());
        let matched = match found {
            Ok(matched) => matched,
            Err(error) => return Verdict::Refused(store_failed(&self.id, &error)),
        };
        let settled = settle(
            matched.lend(),
            config,
            &self.token,
            self.opaque,
            &mut self.rehash_from,
        );
        let decision = match settled {
            Ok(lent) => {
                let decision = decide(self.kinds, self.org_header.as_ref(), lent, config);
                if let (Some(at), KeyMatchRef::Matches(record)) = (decision.used_at(), lent) {
                    note_use(&*config.store, record, at);
                }
                decision
            }
            Err(version) => Decision::Refuse(Refused::UnknownHashVersion(version)),
        };
        match self.conclude(decision, config) {
            Ok(Examined::Done(principal)) => Verdict::Authenticated(principal, None),
            Ok(Examined::NeedsMembership(pending)) => pending.resolve(config).await,
            Err(error) => Verdict::Refused(error),
        }
    }

    /// What a decision means for the request: its principal, a membership
    /// to ask the store for, or a refusal, logged.
    fn conclude<S: KeyStore>(
        self,
        decision: Decision,
        config: &Config<S>,
    ) -> Result<Examined, AuthError> {
        let id = &self.id;
        match decision {
            Decision::Admit {
                kind,
                tenant,
                scopes,
                at: _,
                expires_at,
                metadata,
                limits,
            } => {
                self.rehash(config);
                let principal =
                    self.into_principal(kind, tenant, None, scopes, expires_at, metadata, limits);
                tracing::debug!(key_id = %principal.key_id(), org = %principal.org(), source = %principal.source(), "credential accepted");
                Ok(Examined::Done(principal))
            }
            Decision::Membership(pending) => {
                let PendingMembership {
                    user,
                    record,
                    org,
                    now,
                } = *pending;
                Ok(Examined::NeedsMembership(Box::new(MembershipCheck {
                    user,
                    attempt: self,
                    record,
                    org,
                    now,
                })))
            }
            Decision::Refuse(Refused::SecretOrPrefix) => {
                tracing::info!(key_id = %id, outcome = "invalid_token", reason = "secret or prefix does not match", "credential refused");
                Err(AuthError::invalid_token())
            }
            Decision::Refuse(Refused::UnknownId) => {
                tracing::info!(key_id = %id, outcome = "invalid_token", reason = "unknown key id", "credential refused");
                Err(AuthError::invalid_token())
            }
            Decision::Refuse(Refused::Revoked(owner)) => {
                tracing::info!(key_id = %id, outcome = "revoked", "credential refused");
                // Revocation never asks the clock to decide; the event's
                // time is read here, off the admitted path.
                let now = config.clock.now();
                config.audit.record(
                    &AuditEvent::new(AuditAction::RefusedRevoked, id.clone(), owner).at(now),
                );
                Err(AuthError::revoked())
            }
            Decision::Refuse(Refused::Expired(owner, now)) => {
                tracing::info!(key_id = %id, outcome = "expired", "credential refused");
                config.audit.record(
                    &AuditEvent::new(AuditAction::RefusedExpired, id.clone(), owner).at(now),
                );
                Err(AuthError::expired())
            }
            Decision::Refuse(Refused::MissingOrganization) => {
                tracing::info!(key_id = %id, outcome = "missing_organization", "personal token without organization header");
                Err(AuthError::missing_organization().with_org_header(config.org_header.as_str()))
            }
            Decision::Refuse(Refused::UnknownHashVersion(version)) => {
                tracing::error!(key_id = %id, outcome = "unavailable", hash_version = version, "the key's hash is of a pepper version this layer does not know (configure it as an earlier pepper); refusing the request");
                Err(AuthError::unavailable())
            }
            Decision::Refuse(Refused::OtherOrganization) => {
                let named = self
                    .org_header
                    .as_ref()
                    .map(OrgId::as_str)
                    .unwrap_or_default();
                tracing::info!(key_id = %id, outcome = "forbidden", org = %named, "key used for another organization");
                Err(AuthError::forbidden())
            }
        }
    }

    /// Queues the re-hash of an admitted key stored under an earlier pepper.
    fn rehash<S: KeyStore>(&self, config: &Config<S>) {
        if let Some(from) = self.rehash_from {
            config
                .rehasher
                .queue(&config.store, self.id.clone(), from, self.hash);
        }
    }

    // One argument per field the principal takes from the key's decision.
    #[allow(clippy::too_many_arguments)]
    fn into_principal(
        self,
        kind: KeyKind,
        tenant: Tenant,
        user: Option<UserId>,
        scopes: Scopes,
        expires_at: Option<SystemTime>,
        metadata: Option<KeyMetadata>,
        limits: Option<Arc<UsageLimits>>,
    ) -> Principal {
        Principal::authenticated(
            self.id,
            kind,
            tenant,
            user,
            scopes,
            self.source,
            self.environment,
            expires_at,
            metadata,
            limits,
        )
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
                note_use(&*config.store, &self.record, self.now);
                self.attempt.rehash(config);
                tracing::debug!(key_id = %id, org = %org, source = %self.attempt.source, "personal token accepted");
                let scopes = self.record.scopes.intersection(&scopes);
                let tenant = Tenant {
                    org: self.org,
                    workspace: None,
                };
                let kind = self.record.kind();
                let expires_at = self.record.stops_at();
                Verdict::Authenticated(
                    self.attempt.into_principal(
                        kind,
                        tenant,
                        Some(self.user),
                        scopes,
                        expires_at,
                        self.record.metadata,
                        self.record.limits,
                    ),
                    None,
                )
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
