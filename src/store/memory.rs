//! [`MemoryStore`]: keys in a map, for tests, examples and single-process
//! services.

use std::collections::HashMap;
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::format::KeyFormat;
use crate::hash::KeyHash;
use crate::ids::{KeyId, OrgId, UserId};
use crate::limit::{Credits, UsageLimits};
use crate::pepper::Peppers;
use crate::record::{KeyRecord, Membership, Owner};
use crate::store::lifecycle::{
    Insert, InsertMinted, IssuePlan, IssuedKey, KeyLifecycle, KeyListing, KeyPage, KeySummary,
    LifecycleError, NewKey, OldKey, PageRequest, Rotation, mint_and_insert, plan_issue,
    plan_rotation, storable,
};
use crate::store::usage::NotedFilter;
use crate::store::{CreditSpend, IdMap, KeyMatch, KeyMatchRef, KeyStore, StoreError, StoreOptions};

/// Keys and memberships in memory: no I/O, nothing survives a restart.
///
/// Clones share the same keys, so keep one clone to issue and revoke keys
/// while the layer holds another.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_keyauth::{KeyAuthLayer, KeyLifecycle, MemoryStore, NewKey};
///
/// let store = MemoryStore::new();
/// let issued = store.issue(NewKey::org("acme").name("ci")).await.unwrap();
/// println!("your key (shown once): {}", issued.token.expose_secret());
/// let layer = KeyAuthLayer::new(store.clone());
/// # let _ = layer;
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    options: StoreOptions,
    state: RwLock<State>,
    /// Debounces `last_used_at` writes when tracking is on.
    noted: Option<NotedFilter>,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new(StoreOptions::default())
    }
}

impl Shared {
    fn new(options: StoreOptions) -> Self {
        Self {
            noted: options.last_used_interval.map(NotedFilter::new),
            options,
            state: RwLock::default(),
        }
    }
}

#[derive(Default)]
struct State {
    keys: IdMap<KeyId, KeyRecord>,
    /// The ids of each owner's keys, so that issuing, rotating and listing
    /// read that owner's keys and no others.
    by_owner: HashMap<Owner, Vec<KeyId>>,
    /// The owners that hold keys in each organization: itself and its
    /// workspaces.
    owners_in_org: HashMap<OrgId, Vec<Owner>>,
    members: HashMap<UserId, HashMap<OrgId, Membership>>,
    /// When each key's credits were last refilled, for the keys refilled
    /// since they were issued and the successors of rotated keys; any other
    /// key's refill clock starts at its `created_at`.
    refilled_at: IdMap<KeyId, SystemTime>,
}

impl State {
    /// Stores `record`, replacing one with the same id.
    fn put(&mut self, record: KeyRecord) {
        let (id, owner) = (record.id.clone(), record.owner.clone());
        if let Some(replaced) = self.keys.insert(id.clone(), record) {
            if replaced.owner == owner {
                return;
            }
            self.forget_owner_of(&replaced.owner, &id);
        }
        if !self.by_owner.contains_key(&owner) {
            if let Some(org) = owner.org_id() {
                let owners = self.owners_in_org.entry(org.clone()).or_default();
                owners.push(owner.clone());
            }
        }
        self.by_owner.entry(owner).or_default().push(id);
    }

    fn forget_owner_of(&mut self, owner: &Owner, id: &KeyId) {
        let Some(ids) = self.by_owner.get_mut(owner) else {
            return;
        };
        ids.retain(|held| held != id);
        if !ids.is_empty() {
            return;
        }
        self.by_owner.remove(owner);
        if let Some(org) = owner.org_id() {
            if let Some(owners) = self.owners_in_org.get_mut(org) {
                owners.retain(|held| held != owner);
                if owners.is_empty() {
                    self.owners_in_org.remove(org);
                }
            }
        }
    }

    /// The keys of `owner`.
    fn keys_of<'a>(&'a self, owner: &Owner) -> impl Iterator<Item = &'a KeyRecord> + 'a {
        let ids = self.by_owner.get(owner).map_or(&[][..], Vec::as_slice);
        ids.iter().filter_map(|id| self.keys.get(id))
    }

    /// The ids of `owner`'s keys, to change them.
    fn ids_of(&self, owner: &Owner) -> Vec<KeyId> {
        self.by_owner.get(owner).cloned().unwrap_or_default()
    }

    /// When `record`'s credits were last refilled.
    fn refilled_at(&self, record: &KeyRecord) -> SystemTime {
        self.refilled_at
            .get(&record.id)
            .copied()
            .unwrap_or(record.created_at)
    }

    /// Spends `cost` of key `id`'s credits at `now` (see
    /// [`KeyStore::spend_credits`]).
    fn spend_credits(&mut self, id: &KeyId, cost: u64, now: SystemTime) -> CreditSpend {
        let Some(record) = self.keys.get(id) else {
            return CreditSpend::NotFound;
        };
        let Some(credits) = record
            .limits
            .as_deref()
            .and_then(UsageLimits::credits)
            .copied()
        else {
            return CreditSpend::Unlimited;
        };
        let refilled = refill_credits(&credits, self.refilled_at(record), now);
        let spent = refilled.remaining.checked_sub(cost);
        let remaining = spent.unwrap_or(refilled.remaining);
        if remaining != credits.remaining() {
            set_credits(self.keys.get_mut(id), credits.with_remaining(remaining));
        }
        if refilled.refilled {
            self.refilled_at.insert(id.clone(), refilled.refilled_at);
        }
        match spent {
            Some(remaining) => CreditSpend::Spent { remaining },
            None => CreditSpend::Exhausted {
                remaining,
                refill_in: refilled.refill_in(now),
            },
        }
    }
}

/// Replaces the credits of `record`'s limits (which has some).
fn set_credits(record: Option<&mut KeyRecord>, credits: Credits) {
    if let Some(limits) = record.and_then(|record| record.limits.as_mut()) {
        let limits = Arc::make_mut(limits);
        *limits = limits.clone().with_credits(credits);
    }
}

/// A key's credits once the refill due at `now`, if any, is applied: what
/// every store spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refilled {
    /// The credits left.
    pub(crate) remaining: u64,
    /// Whether a refill was due (and so `remaining` is its amount).
    pub(crate) refilled: bool,
    /// When the credits were last refilled: the start of the interval
    /// `now` falls in, counted from the previous refill.
    pub(crate) refilled_at: SystemTime,
    /// When the next refill is due, if the credits refill.
    pub(crate) next_refill: Option<SystemTime>,
}

impl Refilled {
    /// How long until the next refill, from `now`.
    pub(crate) fn refill_in(&self, now: SystemTime) -> Option<Duration> {
        self.next_refill
            .map(|next| next.duration_since(now).unwrap_or_default())
    }
}

/// `credits` last refilled at `refilled_at`, as they stand at `now`: set
/// back to the refill's amount when one or more intervals have passed, the
/// refill clock moved on by whole intervals so that refills stay on the
/// intervals counted from the key's issue. (The SQL stores compute the same
/// in their spending statement.)
pub(crate) fn refill_credits(
    credits: &Credits,
    refilled_at: SystemTime,
    now: SystemTime,
) -> Refilled {
    let unchanged = Refilled {
        remaining: credits.remaining(),
        refilled: false,
        refilled_at,
        next_refill: None,
    };
    let Some(refill) = credits.refill_policy() else {
        return unchanged;
    };
    let interval = refill.interval();
    match now.duration_since(refilled_at) {
        Ok(elapsed) if elapsed >= interval => {
            // The remainder is below the interval (at most a year), so it
            // fits in nanoseconds.
            let into_interval = elapsed.as_nanos() % interval.as_nanos();
            let start = now - Duration::from_nanos(u64::try_from(into_interval).unwrap_or(0));
            Refilled {
                remaining: refill.amount(),
                refilled: true,
                refilled_at: start,
                next_refill: Some(start + interval),
            }
        }
        _ => Refilled {
            next_refill: Some(refilled_at + interval),
            ..unchanged
        },
    }
}

impl InsertMinted for State {
    async fn insert_minted(&mut self, record: &KeyRecord) -> Result<Insert, StoreError> {
        if self.keys.contains_key(&record.id) {
            return Ok(Insert::IdTaken);
        }
        self.put(record.clone());
        Ok(Insert::Done)
    }
}

/// Drives a future that never waits, such as [`mint_and_insert`] writing
/// into the map, to its end at once: the map's lock guard is not `Send`, so
/// it cannot be held across an `.await` of a store method.
fn at_once<T>(
    future: impl Future<Output = Result<T, LifecycleError>>,
) -> Result<T, LifecycleError> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => Err(StoreError::backend("an insert into memory waited").into()),
    }
}

impl MemoryStore {
    /// An empty store that mints keys in the default [`KeyFormat`].
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that mints keys in `format`. Give the layer the same
    /// format.
    pub fn with_format(format: KeyFormat) -> Self {
        Self::with_options(StoreOptions::default().format(format))
    }

    /// An empty store with these options.
    pub fn with_options(options: StoreOptions) -> Self {
        Self {
            shared: Arc::new(Shared::new(options)),
        }
    }

    /// Stores a record as it is, for keys minted elsewhere (legacy keys, test
    /// fixtures). A record with the same id is replaced.
    pub fn insert(&self, record: KeyRecord) {
        let mut state = self.write();
        // A replaced key's credits start over on the new record's clock.
        state.refilled_at.remove(&record.id);
        state.put(record);
    }

    /// How many keys the store holds, revoked ones included.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written entry
        // (each write is a single insert), so a poisoned lock is still sound.
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&self, id: &KeyId) -> Option<KeyRecord> {
        self.read().keys.get(id).cloned()
    }

    /// `at`, if it is the first use of `record` to write in its window.
    fn first_use_in_window(&self, record: &KeyRecord, at: SystemTime) -> Option<SystemTime> {
        let noted = self.shared.noted.as_ref()?;
        noted.first_use_in_window(record, at).map(|_| at)
    }

    fn write_last_used(&self, id: &KeyId, at: SystemTime) {
        if let Some(stored) = self.write().keys.get_mut(id) {
            if stored.last_used_at.is_none_or(|last| last < at) {
                stored.last_used_at = Some(at);
            }
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("MemoryStore")
            .field("keys", &state.keys.len())
            .field("members", &state.members.len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lookup(id))
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        Ok(self
            .read()
            .members
            .get(user)
            .and_then(|orgs| orgs.get(org))
            .cloned())
    }

    /// Under the write lock, on the store's clock.
    async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
        let now = self.shared.options.now();
        Ok(self.write().spend_credits(id, cost, now))
    }

    fn find_key_now(&self, id: &KeyId) -> Option<Result<Option<KeyRecord>, StoreError>> {
        Some(Ok(self.lookup(id)))
    }

    /// Compares under the read lock and copies the record only when it
    /// matches.
    fn find_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Option<Result<KeyMatch, StoreError>> {
        Some(Ok(KeyMatch::compare_stored(
            self.read().keys.get(id),
            presented,
        )))
    }

    /// Compares under the read lock and lends the record where it is; a
    /// use to write waits for the write lock after it.
    fn with_key_matching_now(
        &self,
        id: &KeyId,
        presented: &KeyHash,
        examine: &mut dyn FnMut(KeyMatchRef<'_>) -> Option<SystemTime>,
    ) -> Option<Result<(), StoreError>> {
        let state = self.read();
        let found = state.keys.get(id);
        let used_at = examine(KeyMatchRef::compare(found, presented));
        let to_write = match (found, used_at) {
            (Some(record), Some(at)) => self.first_use_in_window(record, at),
            _ => None,
        };
        drop(state);
        if let Some(at) = to_write {
            self.write_last_used(id, at);
        }
        Some(Ok(()))
    }

    /// Writes `last_used_at` in the map at once, at most once per key and
    /// interval-long window (behind a cache, the record seen here is an old
    /// copy, so its own time is not enough to debounce).
    fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        if let Some(at) = self.first_use_in_window(record, at) {
            self.write_last_used(&record.id, at);
        }
    }

    fn peppers(&self) -> Peppers {
        self.shared.options.peppers.clone()
    }

    /// Under the write lock: replaces the hash only while it is `from`.
    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        let mut state = self.write();
        Ok(match state.keys.get_mut(id) {
            Some(record) if record.hash == *from => {
                record.hash = *to;
                true
            }
            _ => false,
        })
    }
}

#[async_trait]
impl KeyLifecycle for MemoryStore {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        storable(&new_key.scopes)?;
        let options = &self.shared.options;
        let mut state = self.write();
        let now = options.now();
        let usable = state
            .keys_of(&new_key.owner)
            .filter(|record| record.is_usable_at(now))
            .count();
        let plan = plan_issue(
            new_key.policy.unwrap_or(options.policy),
            &new_key.owner,
            usable,
        )?;
        // Nothing else changes until the new key is in, so a failure leaves
        // the store as it was.
        let issued = at_once(mint_and_insert(
            &mut *state,
            &options.format,
            &options.peppers,
            new_key,
            now,
        ))?;
        if plan == IssuePlan::RevokeOthersThenInsert {
            for id in state.ids_of(&issued.record.owner) {
                if let Some(record) = state.keys.get_mut(&id) {
                    if record.id != issued.record.id && !record.is_revoked() {
                        record.revoked_at = Some(now);
                    }
                }
            }
        }
        Ok(issued)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError> {
        let state = self.read();
        let mut keys: Vec<KeySummary> = state.keys_of(owner).map(KeySummary::from).collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        let state = self.read();
        let owners = state.owners_in_org.get(org).map_or(&[][..], Vec::as_slice);
        let mut keys: Vec<KeySummary> = owners
            .iter()
            .flat_map(|owner| state.keys_of(owner))
            .map(KeySummary::from)
            .collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Reads the listed owners' keys through the by-owner index, and makes
    /// summaries of the page's keys alone.
    async fn list_page(
        &self,
        listing: &KeyListing,
        page: &PageRequest,
    ) -> Result<KeyPage, LifecycleError> {
        let state = self.read();
        let owners: &[Owner] = match listing {
            KeyListing::Owner(owner) => std::slice::from_ref(owner),
            KeyListing::Org(org) => state.owners_in_org.get(org).map_or(&[][..], Vec::as_slice),
        };
        let mut keys: Vec<&KeyRecord> = owners
            .iter()
            .flat_map(|owner| state.keys_of(owner))
            .filter(|key| {
                page.after.as_ref().is_none_or(|cursor| {
                    (key.created_at, &key.id) < (cursor.created_at, &cursor.id)
                })
            })
            .collect();
        keys.sort_unstable_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        keys.truncate(page.limit.saturating_add(1));
        Ok(page.page_of_newest_first(keys.into_iter().map(KeySummary::from).collect()))
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        let mut state = self.write();
        let record = state
            .keys
            .get_mut(id)
            .ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        if !record.is_revoked() {
            record.revoked_at = Some(self.shared.options.now());
        }
        Ok(())
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError> {
        let options = &self.shared.options;
        let mut state = self.write();
        let now = options.now();
        let old = state
            .keys
            .get(id)
            .ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        let plan = plan_rotation(old, &options.format, rotation, now)?;
        let has_credits = old
            .limits
            .as_deref()
            .and_then(UsageLimits::credits)
            .is_some();
        let refilled_at = state.refilled_at(old);
        let issued = at_once(mint_and_insert(
            &mut *state,
            &options.format,
            &options.peppers,
            plan.successor,
            now,
        ))?;
        if has_credits {
            // The successor took the old key's credits and goes on with its
            // refill clock; the old key keeps none, so that two keys never
            // spend one key's credits, and rotating never resets them.
            state
                .refilled_at
                .insert(issued.record.id.clone(), refilled_at);
            set_credits(
                state.keys.get_mut(id),
                Credits::new(0).map_err(StoreError::backend)?,
            );
        }
        if let Some(old) = state.keys.get_mut(id) {
            match plan.old_key {
                OldKey::Revoke => old.revoked_at = Some(now),
                OldKey::GraceEndsAt(at) => old.grace_ends_at = Some(at),
            }
        }
        Ok(issued)
    }

    async fn set_membership(
        &self,
        user: &UserId,
        org: &OrgId,
        membership: Option<Membership>,
    ) -> Result<(), LifecycleError> {
        if let Some(membership) = &membership {
            storable(&membership.scopes)?;
        }
        let mut state = self.write();
        match membership {
            Some(membership) => {
                state
                    .members
                    .entry(user.clone())
                    .or_default()
                    .insert(org.clone(), membership);
            }
            None => {
                if let Some(orgs) = state.members.get_mut(user) {
                    orgs.remove(org);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;

    #[tokio::test]
    async fn issued_keys_are_found_by_id_and_only_their_hash_is_kept() {
        let store = MemoryStore::new();
        let issued = store.issue(NewKey::org("acme").name("ci")).await.unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(found, issued.record);
        assert!(found.hash.matches(&issued.token.hash()));
        assert_eq!(&*found.name, "ci");
        assert!(!format!("{store:?} {found:?}").contains(issued.token.expose_secret()));
        assert_eq!(
            store.find_key_now(&issued.record.id).unwrap().unwrap(),
            Some(found)
        );
        assert_eq!(store.find_key(&KeyId::from("nope")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn listings_are_masked_and_per_owner() {
        let store = MemoryStore::new();
        let first = store.issue(NewKey::org("acme").name("a")).await.unwrap();
        let second = store
            .issue(
                NewKey::org("acme")
                    .name("b")
                    .scopes(Scopes::parse(["objects.read"]).unwrap()),
            )
            .await
            .unwrap();
        store.issue(NewKey::org("globex")).await.unwrap();
        store
            .issue(NewKey::workspace("acme", "docs"))
            .await
            .unwrap();

        let listed = store.list(&Owner::org("acme")).await.unwrap();
        assert_eq!(listed.len(), 2);
        let ids: Vec<_> = listed.iter().map(|k| k.id.clone()).collect();
        assert!(ids.contains(&first.record.id) && ids.contains(&second.record.id));
        for summary in &listed {
            assert_eq!(summary.masked, format!("ak_{}.****", summary.id));
        }
        for issued in [&first, &second] {
            let secret = issued.token.expose_secret().split_once('.').unwrap().1;
            assert!(
                listed
                    .iter()
                    .all(|summary| !summary.masked.contains(&secret[..4]))
            );
        }
        assert_eq!(
            store
                .list(&Owner::workspace("acme", "docs"))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store.list(&Owner::org("initech")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn revoking_marks_the_key_and_unknown_ids_are_not_found() {
        let store = MemoryStore::new();
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        store.revoke(&issued.record.id).await.unwrap();
        let record = store.find_key(&issued.record.id).await.unwrap().unwrap();
        let revoked_at = record.revoked_at.expect("revoked");
        assert!(!record.is_usable_at(SystemTime::now()));
        // Revoking again keeps the first revocation time.
        store.revoke(&issued.record.id).await.unwrap();
        let again = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(revoked_at));
        assert!(matches!(
            store.revoke(&KeyId::from("missing")).await,
            Err(LifecycleError::NotFound(id)) if id == "missing"
        ));
    }

    #[tokio::test]
    async fn memberships_can_be_set_changed_and_removed() {
        let store = MemoryStore::new();
        let (ada, acme) = (UserId::from("ada"), OrgId::from("acme"));
        assert_eq!(store.membership(&ada, &acme).await.unwrap(), None);
        store
            .set_membership(&ada, &acme, Some(Membership::full_access()))
            .await
            .unwrap();
        assert_eq!(
            store.membership(&ada, &acme).await.unwrap(),
            Some(Membership::full_access())
        );
        assert_eq!(
            store
                .membership(&ada, &OrgId::from("globex"))
                .await
                .unwrap(),
            None
        );
        store.set_membership(&ada, &acme, None).await.unwrap();
        assert_eq!(store.membership(&ada, &acme).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_replaced_record_moves_to_its_new_owner() {
        let store = MemoryStore::new();
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        store
            .issue(NewKey::workspace("acme", "docs"))
            .await
            .unwrap();
        let moved = KeyRecord {
            owner: Owner::org("globex"),
            ..issued.record.clone()
        };
        store.insert(moved);
        assert!(store.list(&Owner::org("acme")).await.unwrap().is_empty());
        assert_eq!(store.list(&Owner::org("globex")).await.unwrap().len(), 1);
        let in_acme = store.list_in_org(&OrgId::from("acme")).await.unwrap();
        assert_eq!(in_acme.len(), 1, "the workspace key stays");
        // Replacing with the same owner keeps one entry.
        store.insert(issued.record.clone());
        store.insert(issued.record.clone());
        assert_eq!(store.list(&Owner::org("acme")).await.unwrap().len(), 1);
        assert!(store.list(&Owner::org("globex")).await.unwrap().is_empty());
        let state = store.read();
        assert!(!state.by_owner.contains_key(&Owner::org("globex")));
        assert!(!state.owners_in_org.contains_key(&OrgId::from("globex")));
    }

    #[tokio::test]
    async fn clones_share_their_keys() {
        let store = MemoryStore::new();
        let clone = store.clone();
        let issued = store.issue(NewKey::personal("ada")).await.unwrap();
        assert!(clone.find_key(&issued.record.id).await.unwrap().is_some());
        assert_eq!(clone.len(), 1);
        assert!(issued.token.expose_secret().starts_with("pat_"));
    }
}
