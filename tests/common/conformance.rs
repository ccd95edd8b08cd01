//! The store conformance suite: every lifecycle rule, written once, run
//! against every store. `conformance_cases!` below is the one list of cases.
//!
//! Included by `tests/store_conformance.rs` alone (with `#[path]`), so that
//! an unlisted case is dead code there, which this module denies: forgetting
//! to list a case fails the build.

#![deny(dead_code)]

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::StatusCode;
use libtest_mimic::Trial;
use tower_keyauth::client_addr::IpAllowlist;
use tower_keyauth::clock::Clock;
use tower_keyauth::format::Environment;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::{KeyId, KeyKind, OrgId, UserId};
use tower_keyauth::limit::{Credits, MemoryLimiter, RateLimit, Refill, UsageLimits};
use tower_keyauth::metadata::KeyMetadata;
use tower_keyauth::pepper::Peppers;
use tower_keyauth::store::{
    CreditSpend, KeyListing, KeyMatch, KeyPolicy, KeySummary, LifecycleError, Membership, Owner,
    PageRequest, StoreOptions,
};
use tower_keyauth::{KeyAuthLayer, KeyFormat, KeyLifecycle, KeyStore, NewKey, Scopes};

use crate::common::{TestClock, app, bearer, get_bearer, get_with, run_multi_thread, send};

/// One store implementation under test.
#[async_trait]
pub(crate) trait Harness: Sized + Send + Sync + 'static {
    type Store: KeyLifecycle + Clone + Debug;

    /// A fresh, empty database. Panics (failing the case) when it cannot
    /// have one.
    async fn fresh() -> Self;

    /// A store instance on this harness's database. Calling it twice gives
    /// two instances sharing one database, as two processes would.
    async fn open(&self, options: StoreOptions) -> Self::Store;

    /// The key's `last_used_at` as stored, once buffered uses are written.
    /// Past any cache: a cache keeps the copy of a record it read before the
    /// write, as it is not told of uses (so that tracking them never evicts
    /// a key in use).
    async fn last_used_at(store: &Self::Store, id: &KeyId) -> Option<SystemTime>;
}

/// Defines `trials::<H>(store)`: one trial per listed case, named
/// `<store>::<case>`, each on a fresh harness and its own runtime.
macro_rules! conformance_cases {
    ($($case:ident),* $(,)?) => {
        /// One trial per case, run against the stores of harness `H`.
        pub(crate) fn trials<H: Harness>(store: &str) -> Vec<Trial> {
            vec![$(
                Trial::test(format!("{store}::{}", stringify!($case)), || {
                    run_multi_thread(async { $case(H::fresh().await).await });
                    Ok(())
                }),
            )*]
        }
    };
}

// Every case, once. A new case is an `async fn name<H: Harness>(h: H)` below
// and its name here.
conformance_cases!(
    issue_returns_the_token_once_and_stores_only_its_hash,
    issued_keys_authenticate_through_the_layer,
    listings_are_masked_and_per_owner,
    org_listings_cover_org_and_workspace_keys,
    revocation_takes_effect_on_the_next_request,
    revoking_twice_keeps_the_first_time_and_unknown_ids_are_not_found,
    expired_keys_are_refused_and_live_ones_accepted,
    rotation_without_grace_replaces_the_key_at_once,
    rotation_with_grace_keeps_the_old_key_until_it_ends,
    rotation_refuses_revoked_expired_and_unknown_keys,
    rotation_keeps_lifetime_length_and_environment,
    a_limit_refuses_one_key_too_many,
    a_policy_can_be_given_per_issue,
    single_active_key_revokes_the_previous_one,
    policies_apply_to_each_owner_alone,
    memberships_decide_personal_tokens,
    concurrent_issues_respect_the_limit,
    concurrent_issues_and_revocations_all_land,
    rotating_while_issuing_a_single_active_key_leaves_one_usable_key,
    a_second_instance_sees_revocations,
    last_used_is_written_at_most_once_per_interval,
    revocation_holds_whatever_the_clocks_say,
    a_grace_period_is_an_expiry_of_the_old_key,
    refused_requests_are_not_counted_as_use,
    scope_sets_beyond_the_bound_cannot_be_stored,
    metadata_round_trips,
    rate_limits_round_trip,
    rotated_limits_are_counted_under_the_first_key,
    credits_and_allowlists_round_trip,
    credits_are_spent_exactly_and_never_below_zero,
    a_refill_sets_credits_back_each_interval,
    spends_tell_unknown_keys_unlimited_keys_and_too_few_credits_apart,
    pages_list_newest_first_without_gaps,
    a_rehash_replaces_only_the_hash_it_was_given,
    keys_of_earlier_peppers_verify_and_move_to_the_current_one,
);

fn token(issued: &tower_keyauth::store::IssuedKey) -> &str {
    issued.token.expose_secret()
}

async fn status_of<S: KeyStore + Clone>(store: &S, token: &str) -> StatusCode {
    get_bearer(&app(KeyAuthLayer::new(store.clone())), "/v1/whoami", token)
        .await
        .status
}

/// As `status_of`, with the layer reading `clock`.
async fn status_at<S: KeyStore + Clone>(store: &S, clock: &TestClock, token: &str) -> StatusCode {
    let layer = KeyAuthLayer::new(store.clone()).clock(clock.clone());
    get_bearer(&app(layer), "/v1/whoami", token).await.status
}

async fn issue_returns_the_token_once_and_stores_only_its_hash<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let issued = store
        .issue(
            NewKey::org("acme")
                .name("ci")
                .scopes(Scopes::parse(["objects.read", "keys.*"]).unwrap())
                .expires_in(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert!(token(&issued).starts_with("ak_"));
    let format = KeyFormat::default();
    let parsed = format.parse(token(&issued)).unwrap();
    assert_eq!(parsed.key_id(), Some(issued.record.id.clone()));
    assert!(issued.record.hash.matches(&issued.token.hash()));

    let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(found, issued.record, "a record reads back as it was issued");
    assert_eq!(found.owner, Owner::org("acme"));
    assert_eq!(&*found.name, "ci");
    assert_eq!(
        found.scopes,
        Scopes::parse(["objects.read", "keys.*"]).unwrap()
    );
    assert!(found.expires_at.is_some());
    assert_eq!(found.revoked_at, None);
    // Nothing the store gives back holds the secret.
    let secret = token(&issued).split_once('.').unwrap().1;
    let shown = format!(
        "{found:?} {store:?} {:?}",
        store.list(&Owner::org("acme")).await.unwrap()
    );
    assert!(!shown.contains(secret));
    assert_eq!(store.find_key(&"missing".into()).await.unwrap(), None);
}

async fn issued_keys_authenticate_through_the_layer<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let org = store.issue(NewKey::org("acme")).await.unwrap();
    let workspace = store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));
    let reply = get_bearer(&app, "/v1/whoami", token(&org)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["org"], "acme");
    let reply = get_bearer(&app, "/v1/whoami", token(&workspace)).await;
    assert_eq!(reply.json()["workspace"], "docs");
    // A wrong secret for a stored id is refused.
    let forged = format!(
        "{}.{}",
        token(&org).split_once('.').unwrap().0,
        "A".repeat(28)
    );
    assert_eq!(
        get_bearer(&app, "/v1/whoami", &forged).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn listings_are_masked_and_per_owner<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h.open(StoreOptions::default().clock(clock.clone())).await;
    let first = store
        .issue(NewKey::org("acme").name("first"))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let second = store
        .issue(NewKey::org("acme").name("second"))
        .await
        .unwrap();
    store.issue(NewKey::org("globex")).await.unwrap();
    let pat = store.issue(NewKey::personal("ada")).await.unwrap();

    let listed = store.list(&Owner::org("acme")).await.unwrap();
    let ids: Vec<_> = listed.iter().map(|k| k.id.clone()).collect();
    assert_eq!(
        ids,
        vec![first.record.id.clone(), second.record.id.clone()],
        "oldest first"
    );
    for (summary, issued) in listed.iter().zip([&first, &second]) {
        assert_eq!(summary.masked, format!("ak_{}.****", issued.record.id));
        let secret = token(issued).split_once('.').unwrap().1;
        assert!(!summary.masked.contains(&secret[..6]));
    }
    assert_eq!(listed[0].name.as_ref(), "first");
    let mine = store.list(&Owner::user("ada")).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].masked, format!("pat_{}.****", pat.record.id));
    assert!(store.list(&Owner::org("initech")).await.unwrap().is_empty());
}

async fn org_listings_cover_org_and_workspace_keys<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let org = store.issue(NewKey::org("acme")).await.unwrap();
    let docs = store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap();
    store
        .issue(NewKey::workspace("globex", "docs"))
        .await
        .unwrap();
    store.issue(NewKey::personal("ada")).await.unwrap();
    let mut ids: Vec<_> = store
        .list_in_org(&OrgId::from("acme"))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    ids.sort();
    let mut expected = vec![org.record.id.clone(), docs.record.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
}

async fn revocation_takes_effect_on_the_next_request<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&issued)).await.status,
        StatusCode::OK
    );
    store.revoke(&issued.record.id).await.unwrap();
    let reply = get_bearer(&app, "/v1/whoami", token(&issued)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().unwrap().contains("revoked"));
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    assert!(listed[0].revoked_at.is_some());
}

async fn revoking_twice_keeps_the_first_time_and_unknown_ids_are_not_found<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h.open(StoreOptions::default().clock(clock.clone())).await;
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    store.revoke(&issued.record.id).await.unwrap();
    let first = store
        .find_key(&issued.record.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at;
    clock.advance(Duration::from_secs(1));
    store.revoke(&issued.record.id).await.unwrap();
    let second = store
        .find_key(&issued.record.id)
        .await
        .unwrap()
        .unwrap()
        .revoked_at;
    assert_eq!(first, second);
    assert!(matches!(
        store.revoke(&"missing".into()).await,
        Err(LifecycleError::NotFound(id)) if id == "missing"
    ));
}

async fn expired_keys_are_refused_and_live_ones_accepted<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let expired = store
        .issue(NewKey::org("acme").expires_at(SystemTime::now() - Duration::from_secs(1)))
        .await
        .unwrap();
    let live = store
        .issue(NewKey::org("acme").expires_in(Duration::from_secs(3600)))
        .await
        .unwrap();
    let soon = store
        .issue(NewKey::org("acme").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    let clock = TestClock::new();
    let app = app(KeyAuthLayer::new(store.clone()).clock(clock.clone()));
    let reply = get_bearer(&app, "/v1/whoami", token(&expired)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().unwrap().contains("expired"));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&live)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&soon)).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&soon)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn rotation_without_grace_replaces_the_key_at_once<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let old = store
        .issue(
            NewKey::workspace("acme", "docs")
                .name("deploy")
                .scopes(Scopes::parse(["objects.read"]).unwrap()),
        )
        .await
        .unwrap();
    let new = store.rotate(&old.record.id, Duration::ZERO).await.unwrap();
    assert_ne!(new.record.id, old.record.id);
    assert_ne!(token(&new), token(&old));
    assert_eq!(new.record.owner, old.record.owner);
    assert_eq!(new.record.scopes, old.record.scopes);
    assert_eq!(new.record.name, old.record.name);
    assert_eq!(
        store.find_key(&new.record.id).await.unwrap().unwrap(),
        new.record
    );
    assert_eq!(
        status_of(&store, token(&old)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_of(&store, token(&new)).await, StatusCode::OK);
}

async fn rotation_with_grace_keeps_the_old_key_until_it_ends<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h.open(StoreOptions::default().clock(clock.clone())).await;
    let old = store.issue(NewKey::org("acme")).await.unwrap();
    let before = SystemTime::now();
    let new = store
        .rotate(&old.record.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let old_record = store.find_key(&old.record.id).await.unwrap().unwrap();
    let grace_end = old_record
        .grace_ends_at
        .expect("the old key gets a grace end");
    assert_eq!(
        old_record.revoked_at, None,
        "a grace period is not a revocation"
    );
    assert!(
        grace_end >= before + Duration::from_secs(3599)
            && grace_end <= SystemTime::now() + Duration::from_secs(3600)
    );
    assert_eq!(
        status_at(&store, &clock, token(&old)).await,
        StatusCode::OK,
        "old key works in its grace period"
    );
    assert_eq!(status_at(&store, &clock, token(&new)).await, StatusCode::OK);
    // Revoking during the grace period ends it at once.
    store.revoke(&old.record.id).await.unwrap();
    assert_eq!(
        status_at(&store, &clock, token(&old)).await,
        StatusCode::UNAUTHORIZED
    );

    // A short grace period runs out on its own.
    let short = store.issue(NewKey::org("acme")).await.unwrap();
    store
        .rotate(&short.record.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        status_at(&store, &clock, token(&short)).await,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        status_at(&store, &clock, token(&short)).await,
        StatusCode::UNAUTHORIZED
    );

    // The grace period never outlives the key's own expiry.
    // (`expires_in` would read the real clock, which is behind this one.)
    let expiring = store
        .issue(NewKey::org("acme").expires_at(clock.now() + Duration::from_secs(60)))
        .await
        .unwrap();
    store
        .rotate(&expiring.record.id, Duration::from_secs(3600))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        status_at(&store, &clock, token(&expiring)).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn rotation_refuses_revoked_expired_and_unknown_keys<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let revoked = store.issue(NewKey::org("acme")).await.unwrap();
    store.revoke(&revoked.record.id).await.unwrap();
    assert!(matches!(
        store.rotate(&revoked.record.id, Duration::ZERO).await,
        Err(LifecycleError::Revoked(_))
    ));
    let expired = store
        .issue(NewKey::org("acme").expires_at(SystemTime::now() - Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(matches!(
        store.rotate(&expired.record.id, Duration::ZERO).await,
        Err(LifecycleError::Expired(_))
    ));
    assert!(matches!(
        store.rotate(&"missing".into(), Duration::ZERO).await,
        Err(LifecycleError::NotFound(_))
    ));
    // A key in its grace period has its successor already: a retried
    // rotation mints no second one and keeps the grace period.
    let rotated = store.issue(NewKey::org("acme")).await.unwrap();
    store
        .rotate(&rotated.record.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(matches!(
        store.rotate(&rotated.record.id, Duration::ZERO).await,
        Err(LifecycleError::AlreadyRotated(_))
    ));
    assert_eq!(
        status_of(&store, rotated.token.expose_secret()).await,
        StatusCode::OK,
        "the refused rotation cut the grace period short"
    );
    // Nothing was issued by the refused rotations.
    assert_eq!(store.list(&Owner::org("acme")).await.unwrap().len(), 4);
}

async fn rotation_keeps_lifetime_length_and_environment<H: Harness>(h: H) {
    let format = KeyFormat::new()
        .prefix_for_environment("andi_live", KeyKind::Workspace, Environment::Live)
        .prefix_for_environment("andi_test", KeyKind::Workspace, Environment::Test);
    let store = h.open(StoreOptions::default().format(format)).await;
    let old = store
        .issue(
            NewKey::workspace("acme", "docs")
                .environment(Environment::Test)
                .expires_in(Duration::from_secs(90 * 24 * 3600)),
        )
        .await
        .unwrap();
    assert!(token(&old).starts_with("andi_test_"));
    let new = store.rotate(&old.record.id, Duration::ZERO).await.unwrap();
    assert!(
        token(&new).starts_with("andi_test_"),
        "{}",
        new.record.masked()
    );
    let lifetime = |record: &tower_keyauth::store::KeyRecord| {
        record
            .expires_at
            .unwrap()
            .duration_since(record.created_at)
            .unwrap()
    };
    let difference = lifetime(&new.record).as_secs_f64() - lifetime(&old.record).as_secs_f64();
    assert!(difference.abs() < 1.0, "lifetimes differ by {difference} s");
}

async fn a_limit_refuses_one_key_too_many<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h
        .open(
            StoreOptions::default()
                .policy(KeyPolicy::AtMost(2))
                .clock(clock.clone()),
        )
        .await;
    let first = store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap();
    store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap();
    let refused = store.issue(NewKey::workspace("acme", "docs")).await;
    match refused {
        Err(LifecycleError::LimitReached { owner, limit }) => {
            assert_eq!(owner, Owner::workspace("acme", "docs"));
            assert_eq!(limit, 2);
        }
        other => panic!("expected LimitReached, got {other:?}"),
    }
    assert!(refused_message_is_clear(&store).await);
    // Other owners have their own count.
    store
        .issue(NewKey::workspace("acme", "billing"))
        .await
        .unwrap();
    // Revoked and expired keys do not count.
    store.revoke(&first.record.id).await.unwrap();
    store
        .issue(NewKey::workspace("acme", "docs").expires_in(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        store
            .issue(NewKey::workspace("acme", "docs"))
            .await
            .is_err()
    );
    clock.advance(Duration::from_secs(61));
    store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap();
    // Rotation replaces, so it is not refused at the limit.
    let listed = store.list(&Owner::workspace("acme", "docs")).await.unwrap();
    let usable = listed
        .iter()
        .find(|k| k.revoked_at.is_none() && k.expires_at.is_none())
        .unwrap();
    store
        .rotate(&usable.id, Duration::from_secs(60))
        .await
        .unwrap();
}

async fn refused_message_is_clear<S: KeyLifecycle>(store: &S) -> bool {
    let error = store
        .issue(NewKey::workspace("acme", "docs"))
        .await
        .unwrap_err();
    let message = error.to_string();
    message.contains("2") && message.contains("most")
}

async fn a_policy_can_be_given_per_issue<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    store.issue(NewKey::org("acme")).await.unwrap();
    store.issue(NewKey::org("acme")).await.unwrap();
    // This owner's plan allows two.
    assert!(matches!(
        store
            .issue(NewKey::org("acme").policy(KeyPolicy::AtMost(2)))
            .await,
        Err(LifecycleError::LimitReached { limit: 2, .. })
    ));
    store
        .issue(NewKey::org("acme").policy(KeyPolicy::AtMost(3)))
        .await
        .unwrap();
}

async fn single_active_key_revokes_the_previous_one<H: Harness>(h: H) {
    let store = h
        .open(StoreOptions::default().policy(KeyPolicy::SingleActive))
        .await;
    let first = store.issue(NewKey::org("acme")).await.unwrap();
    let other_org = store.issue(NewKey::org("globex")).await.unwrap();
    assert_eq!(status_of(&store, token(&first)).await, StatusCode::OK);
    let second = store.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(
        status_of(&store, token(&first)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_of(&store, token(&second)).await, StatusCode::OK);
    assert_eq!(status_of(&store, token(&other_org)).await, StatusCode::OK);
    let usable: Vec<_> = store
        .list(&Owner::org("acme"))
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .collect();
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].id, second.record.id);
}

/// An owner's keys are its own: a new key of an organization revokes none
/// of its workspaces' keys, a workspace's none of its organization's or of
/// a sibling workspace's, and none of them a user's, even one named like the
/// organization; a limit counts the owner's usable keys alone.
async fn policies_apply_to_each_owner_alone<H: Harness>(h: H) {
    let store = h
        .open(StoreOptions::default().policy(KeyPolicy::SingleActive))
        .await;
    let owners = [
        Owner::org("acme"),
        Owner::workspace("acme", "docs"),
        Owner::workspace("acme", "billing"),
        Owner::org("globex"),
        Owner::user("acme"),
    ];
    let mut latest = Vec::new();
    for owner in &owners {
        latest.push(store.issue(NewKey::new(owner.clone())).await.unwrap());
    }
    let usable = async |owner: &Owner| -> Vec<KeyId> {
        store
            .list(owner)
            .await
            .unwrap()
            .into_iter()
            .filter(|key| key.revoked_at.is_none())
            .map(|key| key.id)
            .collect()
    };
    for (i, owner) in owners.iter().enumerate() {
        latest[i] = store.issue(NewKey::new(owner.clone())).await.unwrap();
        for (other, issued) in owners.iter().zip(&latest) {
            assert_eq!(
                usable(other).await,
                vec![issued.record.id.clone()],
                "after a second key of {owner}, the usable keys of {other}"
            );
        }
    }
    for owner in &owners {
        assert_eq!(store.list(owner).await.unwrap().len(), 2, "{owner}");
        // One usable key of this owner, whatever its neighbours hold: a
        // limit of 2 allows one more, then refuses.
        let limited = || NewKey::new(owner.clone()).policy(KeyPolicy::AtMost(2));
        store.issue(limited()).await.unwrap();
        assert!(
            matches!(
                store.issue(limited()).await,
                Err(LifecycleError::LimitReached { .. })
            ),
            "{owner}"
        );
    }
}

async fn memberships_decide_personal_tokens<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let (ada, acme) = (UserId::from("ada"), OrgId::from("acme"));
    assert_eq!(store.membership(&ada, &acme).await.unwrap(), None);
    let member = Membership::new(Scopes::parse(["objects.read", "objects.write"]).unwrap());
    store
        .set_membership(&ada, &acme, Some(member.clone()))
        .await
        .unwrap();
    assert_eq!(store.membership(&ada, &acme).await.unwrap(), Some(member));
    assert_eq!(
        store
            .membership(&ada, &OrgId::from("globex"))
            .await
            .unwrap(),
        None
    );

    let pat = store.issue(NewKey::personal("ada")).await.unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));
    let whoami = |org: &'static str| {
        get_with(
            "/v1/whoami",
            &[("authorization", &bearer(token(&pat))), ("x-org-id", org)],
        )
    };
    let reply = send(&app, whoami("acme")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json()["scopes"],
        serde_json::json!(["objects.read", "objects.write"])
    );

    store
        .set_membership(
            &ada,
            &acme,
            Some(Membership::new(Scopes::parse(["objects.read"]).unwrap())),
        )
        .await
        .unwrap();
    assert_eq!(
        send(&app, whoami("acme")).await.json()["scopes"],
        serde_json::json!(["objects.read"])
    );
    store.set_membership(&ada, &acme, None).await.unwrap();
    assert_eq!(
        send(&app, whoami("acme")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(store.membership(&ada, &acme).await.unwrap(), None);
}

async fn concurrent_issues_respect_the_limit<H: Harness>(h: H) {
    let store = h
        .open(StoreOptions::default().policy(KeyPolicy::AtMost(5)))
        .await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.issue(NewKey::org("acme")).await })
        })
        .collect();
    let mut issued = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => issued += 1,
            Err(LifecycleError::LimitReached { .. }) => refused += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((issued, refused), (5, 11));
    assert_eq!(store.list(&Owner::org("acme")).await.unwrap().len(), 5);
}

async fn concurrent_issues_and_revocations_all_land<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let shared = store.issue(NewKey::org("acme")).await.unwrap();
    let shared_id = Arc::new(shared.record.id.clone());
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let shared_id = shared_id.clone();
            tokio::spawn(async move {
                let issued = store
                    .issue(NewKey::workspace("acme", format!("w{i}")))
                    .await?;
                store.revoke(&issued.record.id).await?;
                // Everyone also revokes the same key at once.
                store.revoke(&shared_id).await?;
                Ok::<_, LifecycleError>(issued)
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    let keys = store.list_in_org(&OrgId::from("acme")).await.unwrap();
    assert_eq!(keys.len(), 13);
    assert!(keys.iter().all(|k| k.revoked_at.is_some()));
    for issued in &tokens {
        assert_eq!(
            status_of(&store, token(issued)).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

async fn rotating_while_issuing_a_single_active_key_leaves_one_usable_key<H: Harness>(h: H) {
    let store = h
        .open(StoreOptions::default().policy(KeyPolicy::SingleActive))
        .await;
    for round in 0..25 {
        let org = format!("org{round}");
        let first = store.issue(NewKey::org(org.as_str())).await.unwrap();
        let rotating = {
            let store = store.clone();
            let id = first.record.id.clone();
            tokio::spawn(async move { store.rotate(&id, Duration::ZERO).await })
        };
        let issuing = {
            let store = store.clone();
            let org = org.clone();
            tokio::spawn(async move { store.issue(NewKey::org(org.as_str())).await })
        };
        // The rotation may lose the race (its key already revoked); the
        // policy must hold either way.
        let _ = rotating.await.unwrap();
        issuing.await.unwrap().unwrap();
        let now = SystemTime::now();
        let usable = store
            .list(&Owner::org(org.as_str()))
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.revoked_at.is_none() && k.grace_ends_at.is_none_or(|at| at > now))
            .count();
        assert_eq!(usable, 1, "round {round}: {usable} usable keys");
    }
}

async fn a_second_instance_sees_revocations<H: Harness>(h: H) {
    let first = h.open(StoreOptions::default()).await;
    let second = h.open(StoreOptions::default()).await;
    let issued = first.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(
        second.find_key(&issued.record.id).await.unwrap().as_ref(),
        Some(&issued.record)
    );
    let app_on_second = app(KeyAuthLayer::new(second.clone()));
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token(&issued))
            .await
            .status,
        StatusCode::OK
    );
    first.revoke(&issued.record.id).await.unwrap();
    assert_eq!(
        get_bearer(&app_on_second, "/v1/whoami", token(&issued))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn last_used_is_written_at_most_once_per_interval<H: Harness>(h: H) {
    let store = h
        .open(StoreOptions::default().last_used_interval(Duration::from_secs(3600)))
        .await;
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let idle = store.issue(NewKey::org("acme")).await.unwrap();
    // Uses are noted at the layer's time.
    let clock = TestClock::new();
    let app = app(KeyAuthLayer::new(store.clone()).clock(clock.clone()));
    let before = SystemTime::now();
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&issued)).await.status,
        StatusCode::OK
    );
    let first_use = H::last_used_at(&store, &issued.record.id)
        .await
        .expect("last_used_at is written");
    assert!(first_use + Duration::from_millis(1) >= before && first_use <= SystemTime::now());

    // A second write would show a later time.
    clock.advance(Duration::from_millis(5));
    for _ in 0..3 {
        assert_eq!(
            get_bearer(&app, "/v1/whoami", token(&issued)).await.status,
            StatusCode::OK
        );
    }
    let after = H::last_used_at(&store, &issued.record.id).await;
    assert_eq!(
        after,
        Some(first_use),
        "no second write within the interval"
    );
    assert_eq!(H::last_used_at(&store, &idle.record.id).await, None);
}

/// A clock `offset` ahead of (or, negative, behind) the real one.
fn clock_off_by(offset: i64) -> impl Fn() -> SystemTime + Send + Sync + 'static {
    move || {
        let now = SystemTime::now();
        let by = Duration::from_secs(offset.unsigned_abs());
        if offset >= 0 { now + by } else { now - by }
    }
}

async fn revocation_holds_whatever_the_clocks_say<H: Harness>(h: H) {
    // The instance that revokes runs an hour ahead of the one that checks;
    // a revocation must not wait for the checker's clock to catch up.
    let revoker = h
        .open(StoreOptions::default().clock(clock_off_by(3600)))
        .await;
    let checker = h.open(StoreOptions::default()).await;
    let issued = checker.issue(NewKey::org("acme")).await.unwrap();
    let behind = app(KeyAuthLayer::new(checker.clone()).clock(clock_off_by(-3600)));
    assert_eq!(
        get_bearer(&behind, "/v1/whoami", token(&issued))
            .await
            .status,
        StatusCode::OK
    );
    revoker.revoke(&issued.record.id).await.unwrap();
    for layer in [
        KeyAuthLayer::new(checker.clone()),
        KeyAuthLayer::new(checker.clone()).clock(clock_off_by(-3600)),
    ] {
        let reply = get_bearer(&app(layer), "/v1/whoami", token(&issued)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
        assert!(reply.challenge().unwrap().contains("revoked"));
    }
    // A rotation without grace is a revocation too.
    let rotated = checker.issue(NewKey::org("acme")).await.unwrap();
    revoker
        .rotate(&rotated.record.id, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        get_bearer(&behind, "/v1/whoami", token(&rotated))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_grace_period_is_an_expiry_of_the_old_key<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let old = store.issue(NewKey::org("acme")).await.unwrap();
    let new = store
        .rotate(&old.record.id, Duration::from_secs(600))
        .await
        .unwrap();
    let now = app(KeyAuthLayer::new(store.clone()));
    let within = app(KeyAuthLayer::new(store.clone()).clock(clock_off_by(590)));
    let after = app(KeyAuthLayer::new(store.clone()).clock(clock_off_by(610)));
    for (app, status) in [
        (&now, StatusCode::OK),
        (&within, StatusCode::OK),
        (&after, StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(
            get_bearer(app, "/v1/whoami", token(&old)).await.status,
            status
        );
        assert_eq!(
            get_bearer(app, "/v1/whoami", token(&new)).await.status,
            StatusCode::OK
        );
    }
    let reply = get_bearer(&after, "/v1/whoami", token(&old)).await;
    assert!(
        reply.challenge().unwrap().contains("expired"),
        "{}",
        reply.text
    );
    // Rotating the old key again (a retried request) is refused: it mints
    // no second successor and keeps the first grace end.
    assert!(matches!(
        store
            .rotate(&old.record.id, Duration::from_secs(3600))
            .await,
        Err(LifecycleError::AlreadyRotated(_))
    ));
    let old_record = store.find_key(&old.record.id).await.unwrap().unwrap();
    assert_eq!(
        old_record.grace_ends_at,
        store
            .list(&Owner::org("acme"))
            .await
            .unwrap()
            .iter()
            .find(|k| k.id == old.record.id)
            .unwrap()
            .grace_ends_at
    );
    let grace_end = old_record.grace_ends_at.unwrap();
    assert!(grace_end <= SystemTime::now() + Duration::from_secs(600));
}

async fn refused_requests_are_not_counted_as_use<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let org_key = store.issue(NewKey::org("acme")).await.unwrap();
    let pat = store.issue(NewKey::personal("ada")).await.unwrap();
    store
        .set_membership(
            &UserId::from("ada"),
            &OrgId::from("acme"),
            Some(Membership::full_access()),
        )
        .await
        .unwrap();
    let app = app(KeyAuthLayer::new(store.clone()));
    let last_used = |id: KeyId| {
        let store = store.clone();
        async move { H::last_used_at(&store, &id).await }
    };
    // An org key used for another organization, a personal token for an
    // organization its user does not belong to, and one without any.
    let refusals = [
        (token(&org_key), Some("globex"), StatusCode::FORBIDDEN),
        (token(&pat), Some("globex"), StatusCode::FORBIDDEN),
        (token(&pat), None, StatusCode::UNAUTHORIZED),
    ];
    for (key, org, status) in refusals {
        let authorization = bearer(key);
        let mut headers = vec![("authorization", authorization.as_str())];
        headers.extend(org.map(|org| ("x-org-id", org)));
        assert_eq!(
            send(&app, get_with("/v1/whoami", &headers)).await.status,
            status
        );
    }
    assert_eq!(last_used(org_key.record.id.clone()).await, None);
    assert_eq!(last_used(pat.record.id.clone()).await, None);

    // Admitted requests count.
    assert_eq!(
        get_bearer(&app, "/v1/whoami", token(&org_key)).await.status,
        StatusCode::OK
    );
    let authorization = bearer(token(&pat));
    let headers = [
        ("authorization", authorization.as_str()),
        ("x-org-id", "acme"),
    ];
    assert_eq!(
        send(&app, get_with("/v1/whoami", &headers)).await.status,
        StatusCode::OK
    );
    assert!(last_used(org_key.record.id.clone()).await.is_some());
    assert!(last_used(pat.record.id.clone()).await.is_some());
}

async fn scope_sets_beyond_the_bound_cannot_be_stored<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let half = Scopes::MAX_COUNT - 1;
    let names = |prefix: &'static str| (0..half).map(move |i| format!("{prefix}.n{i:04}"));
    // Two sets at the bound whose overlap is nearly twice as large.
    let first = Scopes::parse(names("q").chain(["p.*".to_owned()])).unwrap();
    let second = Scopes::parse(names("p").chain(["q.*".to_owned()])).unwrap();
    let overlap = first.intersection(&second);
    assert_eq!(overlap.len(), 2 * half);
    assert!(matches!(
        store
            .issue(NewKey::org("acme").scopes(overlap.clone()))
            .await,
        Err(LifecycleError::InvalidScopes(_))
    ));
    assert!(store.list(&Owner::org("acme")).await.unwrap().is_empty());
    let (ada, acme) = (UserId::from("ada"), OrgId::from("acme"));
    assert!(matches!(
        store
            .set_membership(&ada, &acme, Some(Membership::new(overlap)))
            .await,
        Err(LifecycleError::InvalidScopes(_))
    ));
    assert_eq!(store.membership(&ada, &acme).await.unwrap(), None);

    // A set at the bound is stored, read back whole, and works.
    let issued = store
        .issue(NewKey::org("acme").scopes(first.clone()))
        .await
        .unwrap();
    let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(found.scopes, first);
    let reply = get_bearer(
        &app(KeyAuthLayer::new(store.clone())),
        "/v1/whoami",
        token(&issued),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

async fn metadata_round_trips<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let json = r#"{"customer": "cus_123", "plan": "pro", "seats": [1, 2.5e3], "ok": true, "note": "caf\u00e9 ☕"}"#;
    let metadata = KeyMetadata::from_json(json).unwrap();
    let with = store
        .issue(
            NewKey::org("acme")
                .name("tagged")
                .metadata(metadata.clone()),
        )
        .await
        .unwrap();
    assert_eq!(with.record.metadata.as_ref(), Some(&metadata));
    let without = store.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(without.record.metadata, None);

    let found = store.find_key(&with.record.id).await.unwrap().unwrap();
    assert_eq!(
        found.metadata.as_ref().map(KeyMetadata::as_json),
        Some(json)
    );
    let plain = store.find_key(&without.record.id).await.unwrap().unwrap();
    assert_eq!(plain.metadata, None);

    let metadata_of = |keys: &[KeySummary], id: &KeyId| {
        keys.iter()
            .find(|key| &key.id == id)
            .expect("listed")
            .metadata
            .clone()
    };
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    assert_eq!(
        metadata_of(&listed, &with.record.id),
        Some(metadata.clone())
    );
    assert_eq!(metadata_of(&listed, &without.record.id), None);
    let in_org = store.list_in_org(&OrgId::from("acme")).await.unwrap();
    assert_eq!(
        metadata_of(&in_org, &with.record.id),
        Some(metadata.clone())
    );
    assert_eq!(metadata_of(&in_org, &without.record.id), None);

    let successor = store.rotate(&with.record.id, Duration::ZERO).await.unwrap();
    assert_eq!(successor.record.metadata.as_ref(), Some(&metadata));
    let stored = store.find_key(&successor.record.id).await.unwrap().unwrap();
    assert_eq!(stored.metadata.as_ref(), Some(&metadata));
    let plain_successor = store
        .rotate(&without.record.id, Duration::ZERO)
        .await
        .unwrap();
    let stored = store
        .find_key(&plain_successor.record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.metadata, None);
}

async fn rate_limits_round_trip<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let limits = UsageLimits::new()
        .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
        .unwrap()
        .rate_limit(
            RateLimit::per(10, Duration::from_secs(1))
                .unwrap()
                .named("burst")
                .unwrap(),
        )
        .unwrap();
    let with = store
        .issue(NewKey::org("acme").name("limited").limits(limits.clone()))
        .await
        .unwrap();
    assert_eq!(with.record.limits.as_deref(), Some(&limits));
    let without = store.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(without.record.limits, None);

    let found = store.find_key(&with.record.id).await.unwrap().unwrap();
    assert_eq!(found, with.record, "a record reads back as it was issued");
    assert_eq!(found.limits.as_deref(), Some(&limits));
    let plain = store.find_key(&without.record.id).await.unwrap().unwrap();
    assert_eq!(plain.limits, None);

    // Listings show each key's limits, as the store reads them back.
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    let in_org = store.list_in_org(&OrgId::from("acme")).await.unwrap();
    let page = store
        .list_page(&KeyListing::org("acme"), &PageRequest::default())
        .await
        .unwrap();
    for keys in [&listed, &in_org, &page.keys] {
        assert_eq!(keys.len(), 2);
        for key in keys.iter() {
            let record = store.find_key(&key.id).await.unwrap().unwrap();
            let expected = (key.id == with.record.id).then_some(&limits);
            assert_eq!(record.limits.as_deref(), expected);
            assert_eq!(key.limits.as_deref(), expected, "listed with its limits");
        }
    }

    // The successor's limits are counted under the key it replaced.
    let successor = store.rotate(&with.record.id, Duration::ZERO).await.unwrap();
    let counted_on = limits.clone().with_lineage(with.record.id.clone());
    assert_eq!(successor.record.limits.as_deref(), Some(&counted_on));
    let stored = store.find_key(&successor.record.id).await.unwrap().unwrap();
    assert_eq!(stored.limits.as_deref(), Some(&counted_on));
    let plain_successor = store
        .rotate(&without.record.id, Duration::ZERO)
        .await
        .unwrap();
    let stored = store
        .find_key(&plain_successor.record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.limits, None);

    // A key of another store instance on the same database reads the same.
    let other = h.open(StoreOptions::default()).await;
    let seen = other.find_key(&successor.record.id).await.unwrap().unwrap();
    assert_eq!(seen.limits.as_deref(), Some(&counted_on));
}

/// The first key of the rotation chain `limits` are counted under, if not
/// the key's own.
fn lineage_of(limits: Option<&UsageLimits>) -> Option<KeyId> {
    limits.and_then(UsageLimits::lineage).cloned()
}

/// Rotating a key hands its limits on with their counts: the limits of
/// every successor in a chain are counted under its first key
/// (`UsageLimits::lineage`), as issued, looked up, listed and read by
/// another instance, so that the layer neither resets a rate limit's count
/// on rotation nor doubles it while the old keys are in their grace
/// periods.
async fn rotated_limits_are_counted_under_the_first_key<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let limits = UsageLimits::new()
        .rate_limit(RateLimit::per(3, Duration::from_secs(3600)).unwrap())
        .unwrap();
    let first = store
        .issue(NewKey::org("acme").limits(limits.clone()))
        .await
        .unwrap();
    let grace = Duration::from_secs(3600);
    let second = store.rotate(&first.record.id, grace).await.unwrap();
    let third = store.rotate(&second.record.id, grace).await.unwrap();
    let first_id = first.record.id.clone();
    // The first key counts under its own id; both successors under the
    // first key's, not the one each replaced.
    let expected = [
        (&first, None),
        (&second, Some(first_id.clone())),
        (&third, Some(first_id.clone())),
    ];
    let other = h.open(StoreOptions::default()).await;
    for (key, lineage) in &expected {
        let id = &key.record.id;
        let limits_with = |lineage: &Option<KeyId>| match lineage {
            Some(first) => limits.clone().with_lineage(first.clone()),
            None => limits.clone(),
        };
        assert_eq!(key.record.limits.as_deref(), Some(&limits_with(lineage)));
        let found = store.find_key(id).await.unwrap().unwrap();
        assert_eq!(lineage_of(found.limits.as_deref()), *lineage, "{id}");
        assert_eq!(found.limits.as_deref(), Some(&limits_with(lineage)));
        // The lookup the layer makes.
        let KeyMatch::Matches(matched) = store
            .find_key_matching(id, &key.token.hash())
            .await
            .unwrap()
        else {
            panic!("{id} does not match its own token");
        };
        assert_eq!(lineage_of(matched.limits.as_deref()), *lineage, "{id}");
        let seen = other.find_key(id).await.unwrap().unwrap();
        assert_eq!(lineage_of(seen.limits.as_deref()), *lineage, "{id}");
    }
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    let in_org = store.list_in_org(&OrgId::from("acme")).await.unwrap();
    let page = store
        .list_page(&KeyListing::org("acme"), &PageRequest::default())
        .await
        .unwrap();
    for keys in [&listed, &in_org, &page.keys] {
        assert_eq!(keys.len(), expected.len());
        for (key, lineage) in &expected {
            let summary = keys
                .iter()
                .find(|summary| summary.id == key.record.id)
                .expect("every key of the chain is listed");
            assert_eq!(lineage_of(summary.limits.as_deref()), *lineage);
        }
    }

    // Through the layer: the three keys, all usable (two in their grace
    // periods), share one count of 3 an hour, on a clock that stands still
    // so that no window ends in between.
    let at = SystemTime::now();
    let layer =
        KeyAuthLayer::new(store.clone()).rate_limiter(MemoryLimiter::new().clock(move || at));
    let app = app(layer);
    for key in [&first, &second, &third] {
        let reply = get_bearer(&app, "/v1/whoami", token(key)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
    for key in [&first, &third] {
        let reply = get_bearer(&app, "/v1/whoami", token(key)).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            reply.text
        );
        assert_eq!(reply.error(), "rate_limited");
    }
}

fn with_credits(credits: Credits) -> UsageLimits {
    UsageLimits::new().with_credits(credits)
}

/// The credits of key `id` as the store reads them.
async fn credits_of<S: KeyStore>(store: &S, id: &KeyId) -> Option<Credits> {
    let record = store.find_key(id).await.unwrap().expect("the key exists");
    record
        .limits
        .as_deref()
        .and_then(UsageLimits::credits)
        .copied()
}

async fn credits_and_allowlists_round_trip<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    let allowlist = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]).unwrap();
    let credits = Credits::new(500)
        .unwrap()
        .refill(Refill::every(1_000, Duration::from_secs(3600)).unwrap());
    let limits = UsageLimits::new()
        .rate_limit(RateLimit::per(100, Duration::from_secs(60)).unwrap())
        .unwrap()
        .with_credits(credits)
        .with_allowed_ips(allowlist.clone());
    let no_address = IpAllowlist::parse(std::iter::empty::<&str>()).unwrap();
    let cases = [
        limits.clone(),
        with_credits(Credits::new(7).unwrap()),
        with_credits(Credits::new(0).unwrap()),
        UsageLimits::new().with_allowed_ips(allowlist.clone()),
        // An empty allowlist (no address may use the key) is not none.
        UsageLimits::new().with_allowed_ips(no_address),
    ];
    let mut issued = Vec::new();
    for limits in cases {
        let key = store
            .issue(NewKey::org("acme").limits(limits.clone()))
            .await
            .unwrap();
        assert_eq!(key.record.limits.as_deref(), Some(&limits));
        let found = store.find_key(&key.record.id).await.unwrap().unwrap();
        assert_eq!(found, key.record, "a record reads back as it was issued");
        issued.push((key, limits));
    }
    let plain = store.issue(NewKey::org("acme")).await.unwrap();
    assert_eq!(
        store
            .find_key(&plain.record.id)
            .await
            .unwrap()
            .unwrap()
            .limits,
        None
    );

    // The keys listed read back with their limits.
    let listed = store.list(&Owner::org("acme")).await.unwrap();
    let page = store
        .list_page(&KeyListing::org("acme"), &PageRequest::default())
        .await
        .unwrap();
    for keys in [&listed, &page.keys] {
        assert_eq!(keys.len(), issued.len() + 1);
        for key in keys.iter() {
            let record = store.find_key(&key.id).await.unwrap().unwrap();
            let expected = issued
                .iter()
                .find(|(issued, _)| issued.record.id == key.id)
                .map(|(_, limits)| limits);
            assert_eq!(record.limits.as_deref(), expected);
        }
    }

    // A successor takes the configuration and what is left: rotating
    // never resets credits.
    let old = &issued[0].0.record.id;
    assert_eq!(
        store.spend_credits(old, 120).await.unwrap(),
        CreditSpend::Spent { remaining: 380 }
    );
    let successor = store.rotate(old, Duration::from_secs(60)).await.unwrap();
    let carried = limits
        .clone()
        .with_credits(credits.with_remaining(380))
        .with_lineage(old.clone());
    assert_eq!(successor.record.limits.as_deref(), Some(&carried));
    let stored = store.find_key(&successor.record.id).await.unwrap().unwrap();
    assert_eq!(stored, successor.record);
    assert_eq!(
        store.spend_credits(&successor.record.id, 1).await.unwrap(),
        CreditSpend::Spent { remaining: 379 }
    );
    // The old key, in its grace period, keeps its rate limits and
    // allowlist but no credits: two keys never spend one key's credits.
    let retired = store.find_key(old).await.unwrap().unwrap();
    let retired_limits = retired.limits.as_deref().unwrap();
    assert_eq!(retired_limits.rate_limits(), limits.rate_limits());
    assert_eq!(retired_limits.allowed_ips(), Some(&allowlist));
    assert_eq!(retired_limits.credits(), Some(&Credits::new(0).unwrap()));
    assert_eq!(
        store.spend_credits(old, 1).await.unwrap(),
        CreditSpend::Exhausted {
            remaining: 0,
            refill_in: None
        }
    );
    // A key without credits rotates into one without credits.
    let ips_only = &issued[3];
    let successor_of_ips = store
        .rotate(&ips_only.0.record.id, Duration::ZERO)
        .await
        .unwrap();
    let ips_counted_on = ips_only
        .1
        .clone()
        .with_lineage(ips_only.0.record.id.clone());
    assert_eq!(
        successor_of_ips.record.limits.as_deref(),
        Some(&ips_counted_on)
    );

    // Another store instance on the same database reads the same.
    let other = h.open(StoreOptions::default()).await;
    let carried = limits
        .with_credits(credits.with_remaining(379))
        .with_lineage(old.clone());
    let seen = other.find_key(&successor.record.id).await.unwrap().unwrap();
    assert_eq!(seen.limits.as_deref(), Some(&carried));
    let seen = other
        .find_key(&successor_of_ips.record.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.limits.as_deref(), Some(&ips_counted_on));
}

async fn credits_are_spent_exactly_and_never_below_zero<H: Harness>(h: H) {
    let first = h.open(StoreOptions::default()).await;
    let second = h.open(StoreOptions::default()).await;
    let issued = first
        .issue(NewKey::org("acme").limits(with_credits(Credits::new(100).unwrap())))
        .await
        .unwrap();
    let spends: Vec<_> = (0..1000)
        .map(|i| {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let id = issued.record.id.clone();
            tokio::spawn(async move { store.spend_credits(&id, 1).await.unwrap() })
        })
        .collect();
    let mut left_after_spends = Vec::new();
    let mut exhausted = 0;
    for spend in spends {
        match spend.await.unwrap() {
            CreditSpend::Spent { remaining } => left_after_spends.push(remaining),
            CreditSpend::Exhausted {
                remaining: 0,
                refill_in: None,
            } => exhausted += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        left_after_spends.len(),
        100,
        "exactly the credits are spent"
    );
    assert_eq!(exhausted, 900);
    // Each spend took its own credit: every count from 99 down to 0 once.
    left_after_spends.sort_unstable();
    assert_eq!(left_after_spends, (0..100).collect::<Vec<u64>>());
    let third = h.open(StoreOptions::default()).await;
    assert_eq!(
        credits_of(&third, &issued.record.id).await,
        Some(Credits::new(0).unwrap())
    );
    assert_eq!(
        first.spend_credits(&issued.record.id, 0).await.unwrap(),
        CreditSpend::Spent { remaining: 0 }
    );
}

async fn a_refill_sets_credits_back_each_interval<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h.open(StoreOptions::default().clock(clock.clone())).await;
    let minute = Duration::from_secs(60);
    let credits = Credits::new(10)
        .unwrap()
        .refill(Refill::every(10, minute).unwrap());
    let issued = store
        .issue(NewKey::org("acme").limits(with_credits(credits)))
        .await
        .unwrap();
    let id = &issued.record.id;
    assert_eq!(
        store.spend_credits(id, 7).await.unwrap(),
        CreditSpend::Spent { remaining: 3 }
    );
    let refill_in = |spend: CreditSpend| match spend {
        CreditSpend::Exhausted {
            remaining: 3,
            refill_in: Some(refill_in),
        } => refill_in,
        other => panic!("unexpected {other:?}"),
    };
    let wait = refill_in(store.spend_credits(id, 4).await.unwrap());
    assert!(
        wait <= minute && wait > minute - Duration::from_secs(10),
        "{wait:?}"
    );

    // Half an interval later, rotated: the successor goes on with the old
    // key's refill clock, not its own.
    clock.advance(Duration::from_secs(30));
    let successor = store.rotate(id, Duration::ZERO).await.unwrap();
    let id = &successor.record.id;
    let wait = refill_in(store.spend_credits(id, 4).await.unwrap());
    assert!(
        wait <= Duration::from_secs(30) && wait > Duration::from_secs(20),
        "{wait:?}"
    );

    // Once the interval since the issue has passed: set back to the
    // refill's amount (not added to what was left), then spent.
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        store.spend_credits(id, 4).await.unwrap(),
        CreditSpend::Spent { remaining: 6 }
    );
    // Within the same interval, no second refill.
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        store.spend_credits(id, 6).await.unwrap(),
        CreditSpend::Spent { remaining: 0 }
    );
    // Several intervals later: one refill, not several.
    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(
        store.spend_credits(id, 1).await.unwrap(),
        CreditSpend::Spent { remaining: 9 }
    );
    // The refills stay on the intervals counted from the issue (61 + 20 +
    // 300 s after it, the next is due at 420 s): a spend too large is told
    // when, and charges nothing.
    match store.spend_credits(id, 11).await.unwrap() {
        CreditSpend::Exhausted {
            remaining: 9,
            refill_in: Some(wait),
        } => assert!(
            wait <= Duration::from_secs(39) && wait > Duration::from_secs(29),
            "{wait:?}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(credits_of(&store, id).await.map(|c| c.remaining()), Some(9));
}

async fn spends_tell_unknown_keys_unlimited_keys_and_too_few_credits_apart<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default()).await;
    assert_eq!(
        store
            .spend_credits(&KeyId::from("missing"), 1)
            .await
            .unwrap(),
        CreditSpend::NotFound
    );
    let plain = store.issue(NewKey::org("acme")).await.unwrap();
    let rate_limited = store
        .issue(
            NewKey::org("acme").limits(
                UsageLimits::new()
                    .rate_limit(RateLimit::per(5, Duration::from_secs(60)).unwrap())
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    for key in [&plain, &rate_limited] {
        assert_eq!(
            store.spend_credits(&key.record.id, 1).await.unwrap(),
            CreditSpend::Unlimited
        );
    }
    let issued = store
        .issue(NewKey::org("acme").limits(with_credits(Credits::new(5).unwrap())))
        .await
        .unwrap();
    let id = &issued.record.id;
    for cost in [6, u64::MAX] {
        assert_eq!(
            store.spend_credits(id, cost).await.unwrap(),
            CreditSpend::Exhausted {
                remaining: 5,
                refill_in: None
            },
            "a cost of {cost} charges nothing"
        );
    }
    assert_eq!(
        store.spend_credits(id, 0).await.unwrap(),
        CreditSpend::Spent { remaining: 5 }
    );
    assert_eq!(
        store.spend_credits(id, 5).await.unwrap(),
        CreditSpend::Spent { remaining: 0 }
    );
    assert_eq!(
        store.spend_credits(id, 1).await.unwrap(),
        CreditSpend::Exhausted {
            remaining: 0,
            refill_in: None
        }
    );
    // A revoked key's credits are the layer's concern no more, but a spend
    // still tells the truth about them.
    store.revoke(id).await.unwrap();
    assert_eq!(
        store.spend_credits(id, 1).await.unwrap(),
        CreditSpend::Exhausted {
            remaining: 0,
            refill_in: None
        }
    );
}

/// Every page of `listing`, `limit` keys at a time, each checked for its
/// length and its cursor.
async fn all_pages<S: KeyLifecycle>(
    store: &S,
    listing: &KeyListing,
    limit: usize,
) -> Vec<KeySummary> {
    let mut seen = Vec::new();
    let mut request = PageRequest::first(limit);
    for _ in 0..100 {
        let page = store.list_page(listing, &request).await.unwrap();
        assert!(page.keys.len() <= limit, "{listing:?}: a page too long");
        seen.extend(page.keys.iter().cloned());
        match page.next {
            Some(cursor) => {
                assert_eq!(
                    page.keys.len(),
                    limit,
                    "{listing:?}: a short page before the last"
                );
                let last = page.keys.last().unwrap();
                assert_eq!((cursor.created_at, &cursor.id), (last.created_at, &last.id));
                // Through its text, as the key API hands it out.
                let cursor = cursor.to_string().parse().unwrap();
                request = PageRequest::first(limit).after(cursor);
            }
            None => return seen,
        }
    }
    panic!("{listing:?}: pages never end");
}

async fn pages_list_newest_first_without_gaps<H: Harness>(h: H) {
    let clock = TestClock::new();
    let store = h.open(StoreOptions::default().clock(clock.clone())).await;
    for i in 0..7 {
        let new_key = if i % 3 == 2 {
            NewKey::workspace("acme", "docs")
        } else {
            NewKey::org("acme")
        };
        store
            .issue(new_key.name(format!("acme-{i}")))
            .await
            .unwrap();
        // Steps below and above the microsecond that SQL stores keep.
        clock.advance(Duration::from_nanos(if i % 2 == 0 {
            300
        } else {
            1_000_700
        }));
    }
    store.issue(NewKey::org("globex")).await.unwrap();
    store
        .issue(NewKey::workspace("globex", "docs"))
        .await
        .unwrap();
    store.issue(NewKey::personal("ada")).await.unwrap();

    let newest_first = |mut keys: Vec<KeySummary>| {
        keys.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        keys.into_iter().map(|key| key.id).collect::<Vec<_>>()
    };
    let listings = [
        (
            KeyListing::org("acme"),
            store.list_in_org(&OrgId::from("acme")).await.unwrap(),
        ),
        (
            KeyListing::owner(Owner::org("acme")),
            store.list(&Owner::org("acme")).await.unwrap(),
        ),
        (
            KeyListing::owner(Owner::workspace("acme", "docs")),
            store.list(&Owner::workspace("acme", "docs")).await.unwrap(),
        ),
        (
            KeyListing::org("globex"),
            store.list_in_org(&OrgId::from("globex")).await.unwrap(),
        ),
        (
            KeyListing::owner(Owner::user("ada")),
            store.list(&Owner::user("ada")).await.unwrap(),
        ),
        (KeyListing::org("initech"), Vec::new()),
    ];
    assert_eq!(listings[0].1.len(), 7);
    assert_eq!(listings[1].1.len(), 5);
    assert_eq!(listings[2].1.len(), 2);
    assert_eq!(listings[3].1.len(), 2);
    for (listing, whole) in listings {
        let expected = newest_first(whole);
        for limit in [1, 3, 7, 100] {
            let paged: Vec<_> = all_pages(&store, &listing, limit)
                .await
                .into_iter()
                .map(|key| key.id)
                .collect();
            assert_eq!(
                paged, expected,
                "{listing:?} by {limit}: every key once, newest first"
            );
        }
    }
}

/// Version 2 current, version 1 earlier.
fn two_peppers() -> Peppers {
    Peppers::new(2, [2u8; 32])
        .unwrap()
        .earlier(1, [1u8; 32])
        .unwrap()
}

/// The stored hash of key `id`, read past any cache (a cache forgets a key
/// it re-hashed, so `find_key` reads it again).
async fn stored_hash<S: KeyStore>(store: &S, id: &KeyId) -> KeyHash {
    store.find_key(id).await.unwrap().unwrap().hash
}

async fn a_rehash_replaces_only_the_hash_it_was_given<H: Harness>(h: H) {
    let store = h.open(StoreOptions::default().peppers(two_peppers())).await;
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let id = &issued.record.id;
    let current = issued.record.hash;
    assert_eq!(current.version(), 2, "issued under the current pepper");
    assert_eq!(stored_hash(&store, id).await, current);
    let earlier = two_peppers().hash_with(1, token(&issued)).unwrap();
    let plain = KeyHash::of(token(&issued));

    // Not the stored hash (same bytes under another version, or another
    // hash): nothing changes.
    let lookalike = KeyHash::from_bytes(*current.as_bytes()).with_version(1);
    assert!(!store.rehash(id, &lookalike, &earlier).await.unwrap());
    assert!(!store.rehash(id, &plain, &earlier).await.unwrap());
    assert_eq!(stored_hash(&store, id).await, current);
    // The stored hash: replaced, bytes and version, once.
    assert!(store.rehash(id, &current, &earlier).await.unwrap());
    assert_eq!(stored_hash(&store, id).await.version(), 1);
    assert_eq!(stored_hash(&store, id).await, earlier);
    assert!(!store.rehash(id, &current, &plain).await.unwrap());
    assert_eq!(stored_hash(&store, id).await, earlier);
    // Unknown ids change nothing; a revocation is never undone.
    assert!(
        !store
            .rehash(&"missing".into(), &earlier, &current)
            .await
            .unwrap()
    );
    store.revoke(id).await.unwrap();
    assert!(store.rehash(id, &earlier, &current).await.unwrap());
    let record = store.find_key(id).await.unwrap().unwrap();
    assert!(record.is_revoked());
    assert_eq!(record.hash, current);
    assert_eq!(
        status_of(&store, token(&issued)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Waits for the layer's background re-hash of key `id` to version 2.
async fn rehashed<S: KeyStore>(store: &S, id: &KeyId) -> KeyHash {
    for _ in 0..500 {
        let hash = stored_hash(store, id).await;
        if hash.version() == 2 {
            return hash;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("key {id} was not re-hashed under the current pepper");
}

async fn keys_of_earlier_peppers_verify_and_move_to_the_current_one<H: Harness>(h: H) {
    let peppers = two_peppers();
    let store = h
        .open(StoreOptions::default().peppers(peppers.clone()))
        .await;
    let issued = store.issue(NewKey::org("acme")).await.unwrap();
    let other = store.issue(NewKey::org("acme")).await.unwrap();
    let id = &issued.record.id;
    let secret = token(&issued);
    let forged = format!("{}.{}", secret.split_once('.').unwrap().0, "A".repeat(28));
    assert_eq!(status_of(&store, secret).await, StatusCode::OK);
    assert_eq!(status_of(&store, &forged).await, StatusCode::UNAUTHORIZED);

    // As stored before peppers (plain SHA-256), then under the earlier
    // pepper: each verifies, a wrong secret never does, and one use moves
    // the key to the current version, where it goes on verifying.
    for version in [0, 1] {
        let old = peppers.hash_with(version, secret).unwrap();
        let now = stored_hash(&store, id).await;
        assert!(store.rehash(id, &now, &old).await.unwrap());
        assert_eq!(stored_hash(&store, id).await.version(), version);
        assert_eq!(
            status_of(&store, &forged).await,
            StatusCode::UNAUTHORIZED,
            "v{version}"
        );
        assert_eq!(
            stored_hash(&store, id).await,
            old,
            "a refused token re-hashes nothing"
        );
        assert_eq!(
            status_of(&store, secret).await,
            StatusCode::OK,
            "v{version}"
        );
        assert_eq!(rehashed(&store, id).await, peppers.hash(secret));
        assert_eq!(status_of(&store, secret).await, StatusCode::OK);
        assert_eq!(status_of(&store, &forged).await, StatusCode::UNAUTHORIZED);
    }

    // A version the peppers do not know fails closed, for that key only.
    let unknown = KeyHash::from_bytes([9; 32]).with_version(7);
    let now = stored_hash(&store, id).await;
    assert!(store.rehash(id, &now, &unknown).await.unwrap());
    assert_eq!(
        status_of(&store, secret).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(status_of(&store, token(&other)).await, StatusCode::OK);
}
