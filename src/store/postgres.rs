//! [`PostgresStore`]: keys in PostgreSQL (feature `postgres`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnection, PgListener, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use time::OffsetDateTime;

use crate::client_addr::IpAllowlist;
use crate::hash::KeyHash;
use crate::ids::{KeyId, OrgId, UserId};
use crate::limit::UsageLimits;
use crate::metadata::KeyMetadata;
use crate::pepper::Peppers;
use crate::record::{KeyRecord, Membership, Owner};
use crate::scope::Scopes;
use crate::store::lifecycle::{
    Insert, InsertMinted, IssuePlan, IssuedKey, KeyLifecycle, KeyListing, KeyPage, KeySummary,
    LifecycleError, NewKey, OldKey, PageRequest, Rotation, plan_issue, plan_rotation, storable,
};
use crate::store::sql::{
    Dialect, Migration, PerOwnerKind, SqlCore, allowlist_from_text, bind_key, column_error,
    counts_usable_keys, credits_are_sound, dialect_migrations, hand_over_credits, inserted,
    key_from_row, limits_from_text, lineage_from_text, lineage_to_store, metadata_from_text,
    migrate, owner_columns, owner_ids, page_rows, page_start, per_owner_kind, pool_options,
    scopes_from_names, summaries, to_micros_precision,
};
use crate::store::{
    CreditSpend, Invalidate, Invalidation, KeyMatch, KeyStore, StoreError, StoreOptions,
};

/// Serializes migrations across processes starting at once (an arbitrary
/// constant: "keyauth" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_6175_7468;

/// The `scopes` column, cut just past the bounds of a valid set.
macro_rules! bounded_scopes {
    () => {
        "ARRAY(SELECT left(name, 129) FROM unnest(scopes[1:257]) AS name)"
    };
}

/// The `metadata` column, cut one character past the largest valid value:
/// a longer one is over [`KeyMetadata::MAX_BYTES`] bytes either way.
macro_rules! bounded_metadata {
    () => {
        "left(metadata, 4097)"
    };
}

/// The `rate_limits` column, cut one character past the longest valid
/// text: a longer one is over [`RateLimits::MAX_TEXT_LEN`](crate::limit::RateLimits::MAX_TEXT_LEN) bytes either
/// way.
macro_rules! bounded_limits {
    () => {
        "left(rate_limits, 513)"
    };
}

/// The `allowed_ips` column, cut one character past the longest valid
/// text: a longer one is over
/// [`MAX_ALLOWLIST_TEXT_LEN`](crate::store::sql::MAX_ALLOWLIST_TEXT_LEN)
/// bytes either way.
macro_rules! bounded_allowlist {
    () => {
        "left(allowed_ips, 4160)"
    };
}

/// The `limits_lineage` column, cut one character past the longest key id
/// ([`MAX_LINEAGE_LEN`](crate::store::sql::MAX_LINEAGE_LEN)): a longer one
/// is not a key id either way.
macro_rules! bounded_lineage {
    () => {
        "left(limits_lineage, 65)"
    };
}

/// The credit columns of a key.
macro_rules! credit_columns {
    () => {
        "credits_remaining, credits_refill_amount, credits_refill_interval_seconds,
 credits_refilled_at"
    };
}

/// Selects a key. A stored array of scopes is read only up to one element
/// past [`Scopes::MAX_COUNT`], each element up to one character past
/// [`Scope::MAX_LEN`](crate::scope::Scope::MAX_LEN) (the numbers are written out
/// in `bounded_scopes!`), so a corrupt row costs no more to refuse than a
/// valid one costs to read.
macro_rules! select_key {
    ($scopes:expr) => {
        concat!(
            "SELECT id, hash, hash_version, prefix, owner_kind, org_id, workspace_id, user_id, ",
            $scopes,
            " AS scopes, name, created_at, expires_at, grace_ends_at, revoked_at, last_used_at, ",
            bounded_metadata!(),
            " AS metadata, ",
            bounded_limits!(),
            " AS rate_limits, ",
            bounded_allowlist!(),
            " AS allowed_ips, ",
            bounded_lineage!(),
            " AS limits_lineage, ",
            credit_columns!(),
            "
 FROM keyauth_keys"
        )
    };
}

/// Whether a refill of the key row's credits is due at `$2` (the row's
/// credits are sound, see `credits_are_sound!`).
macro_rules! refill_due {
    () => {
        "credits_refill_amount IS NOT NULL
   AND $2::timestamptz >= credits_refilled_at + credits_refill_interval_seconds * interval '1 second'"
    };
}

/// The key row's credits at `$2`, a due refill applied.
macro_rules! credits_at_now {
    () => {
        concat!(
            "(CASE WHEN ",
            refill_due!(),
            " THEN credits_refill_amount ELSE credits_remaining END)"
        )
    };
}

/// Spends `$3` credits of the key of id `$1` at `$2` (see
/// [`Dialect::SPEND_CREDITS`]). A due refill moves the refill clock to the
/// start of the interval `$2` falls in, counted from the last refill, in
/// whole microseconds. Concurrent spends of one key wait for its row's lock
/// and check the condition again on the row as the previous one left it
/// (READ COMMITTED), so none goes below zero.
const SPEND_CREDITS: &str = concat!(
    "UPDATE keyauth_keys
 SET credits_remaining = ",
    credits_at_now!(),
    " - $3,
     credits_refilled_at = CASE WHEN ",
    refill_due!(),
    " THEN $2::timestamptz
             - (trunc(extract(epoch FROM $2::timestamptz - credits_refilled_at) * 1000000)::bigint
                % (credits_refill_interval_seconds * 1000000)) * interval '1 microsecond'
         ELSE credits_refilled_at END
 WHERE id = $1 AND ",
    credits_are_sound!(),
    " AND ",
    credits_at_now!(),
    " >= $3
 RETURNING credits_remaining"
);

/// The credit columns of the key of id `$1`.
const SELECT_CREDITS: &str = concat!(
    "SELECT ",
    credit_columns!(),
    " FROM keyauth_keys WHERE id = $1"
);

/// A rotated key's (`$2`) credits handed over to its successor (`$1`): the
/// successor takes the refill clock, the old key keeps no credits.
const HAND_OVER_CREDITS: [&str; 2] = [
    "UPDATE keyauth_keys
 SET credits_refilled_at = (SELECT credits_refilled_at FROM keyauth_keys WHERE id = $2)
 WHERE id = $1 AND credits_remaining IS NOT NULL",
    "UPDATE keyauth_keys
 SET credits_remaining = 0, credits_refill_amount = NULL,
     credits_refill_interval_seconds = NULL, credits_refilled_at = NULL
 WHERE id = $2 AND id <> $1 AND credits_remaining IS NOT NULL",
];

/// One key by its id (`$1`), and the same locking the row.
const SELECT_KEY_BY_ID: &str = concat!(select_key!(bounded_scopes!()), " WHERE id = $1");
const SELECT_KEY_BY_ID_FOR_UPDATE: &str =
    concat!(select_key!(bounded_scopes!()), " WHERE id = $1 FOR UPDATE");

/// One key, for a presented hash (`$2`): its scopes are read only when the
/// stored hash equals it, so a forged token never pays for reading a long
/// list. The decision stays the constant-time comparison in Rust; the `=`
/// only spares the read (it compares SHA-256 outputs, which a database copy
/// reveals anyway, never a secret).
const SELECT_KEY_MATCHING: &str = concat!(
    select_key!(concat!(
        "CASE WHEN hash = $2 OR hash_version <> $3 THEN ",
        bounded_scopes!(),
        " END"
    )),
    " WHERE id = $1"
);

/// Revokes the key of id `$1` at `$2` unless it is revoked already, locking
/// its row; one row (`true`) if the key exists.
const REVOKE_BY_ID: &str = "WITH target AS (SELECT id FROM keyauth_keys WHERE id = $1 FOR UPDATE),
      revoked AS (
          UPDATE keyauth_keys SET revoked_at = $2
          WHERE id = $1 AND revoked_at IS NULL
      )
 SELECT true FROM target";

/// What becomes of a rotated key (id `$1`): revoked at `$2`, or usable
/// until `$2`.
const RETIRE_REVOKE: &str = "UPDATE keyauth_keys SET revoked_at = $2 WHERE id = $1";
const RETIRE_GRACE: &str = "UPDATE keyauth_keys SET grace_ends_at = $2 WHERE id = $1";

/// The owner's (`$2`, `$3`) usable keys at `$1`: what a limit counts.
const COUNT_USABLE: PerOwnerKind = per_owner_kind!(
    "SELECT COUNT(*) FROM keyauth_keys WHERE ",
    "$2",
    "$3",
    " AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > $1)
      AND (grace_ends_at IS NULL OR grace_ends_at > $1)"
);

/// Revokes at `$1` the owner's (`$2`, `$3`) keys not revoked yet; their
/// ids.
const REVOKE_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    "UPDATE keyauth_keys SET revoked_at = $1 WHERE ",
    "$2",
    "$3",
    " AND revoked_at IS NULL RETURNING id"
);

/// The owner's (`$1`, `$2`) keys, oldest first.
const LIST_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    concat!(select_key!(bounded_scopes!()), " WHERE "),
    "$1",
    "$2",
    " ORDER BY created_at, id"
);

/// The keys of the organization `$1` and of its workspaces, oldest first.
const LIST_ORG_KEYS: &str = concat!(
    select_key!(bounded_scopes!()),
    " WHERE org_id = $1 AND owner_kind IN ('organization', 'workspace')
 ORDER BY created_at, id"
);

/// A page of the owner's (`$4`, `$5`) keys, newest first: at most `$3`
/// after the time `$1` and the id `$2` (all when `$1` is NULL).
const PAGE_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    concat!(select_key!(bounded_scopes!()), " WHERE "),
    "$4",
    "$5",
    " AND ($1::timestamptz IS NULL OR created_at < $1 OR (created_at = $1 AND id < $2))
 ORDER BY created_at DESC, id DESC LIMIT $3"
);

/// A page of the keys of the organization `$4` and of its workspaces, as
/// [`PAGE_OWNER_KEYS`].
const PAGE_ORG_KEYS: &str = concat!(
    select_key!(bounded_scopes!()),
    " WHERE org_id = $4 AND owner_kind IN ('organization', 'workspace')
   AND ($1::timestamptz IS NULL OR created_at < $1 OR (created_at = $1 AND id < $2))
 ORDER BY created_at DESC, id DESC LIMIT $3"
);

/// The channel on which changes are announced to other instances.
pub const INVALIDATION_CHANNEL: &str = "keyauth_invalidations";

/// Keys and memberships in PostgreSQL, through a sqlx connection pool.
///
/// The constructors create the tables (`keyauth_keys`,
/// `keyauth_memberships`) through embedded migrations recorded in
/// `keyauth_migrations` (never in sqlx's own `_sqlx_migrations`, so they
/// do not clash with yours). Any number of application instances may share
/// one database: issuing and rotating are serialized per owner, so limits
/// and single-active-key policies hold under concurrency, and a revocation
/// is seen by every instance on its next lookup.
///
/// Alone, it answers every authenticated request with a query. Put it
/// behind a [`CachedStore`](crate::store::CachedStore) (feature `cache`) fed
/// by [`listen_for_invalidations`](Self::listen_for_invalidations), as
/// below and as the quickstart does: a request then reads its key from
/// memory, a key revoked through that cache is refused on its next request,
/// and every other instance forgets it as soon as the notification arrives
/// (while the listener's connection is down, within the cache's positive
/// TTL, 30 s by default).
///
/// For TLS, enable one of sqlx's TLS features (for example
/// `sqlx = { version = "0.9", features = ["tls-rustls"] }`) in your
/// application; features unify.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_keyauth::KeyAuthLayer;
/// use tower_keyauth::store::{CachedStore, PostgresStore};
///
/// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
/// let cached = CachedStore::new(store.clone());
/// let _listener = store.listen_for_invalidations(cached.invalidator()).await?; // keep it alive
/// let layer = KeyAuthLayer::new(cached.clone()); // issue and revoke through `cached` too
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<SqlCore<Postgres>>,
}

impl Dialect for Postgres {
    const MIGRATIONS: &'static [Migration] = dialect_migrations!("postgres");
    const MIGRATIONS_RECORDED: &'static str =
        "SELECT to_regclass('keyauth_migrations') IS NOT NULL";
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS keyauth_migrations (
        version BIGINT PRIMARY KEY,
        description TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )";
    const APPLIED_VERSION: &'static str =
        "SELECT COALESCE(MAX(version), 0)::BIGINT FROM keyauth_migrations";
    const SELECT_KEY_MATCHING: &'static str = SELECT_KEY_MATCHING;
    const BEGIN_WRITE: &'static str = "BEGIN";
    const SPEND_CREDITS: &'static str = SPEND_CREDITS;
    const SELECT_CREDITS: &'static str = SELECT_CREDITS;
    const HAND_OVER_CREDITS: [&'static str; 2] = HAND_OVER_CREDITS;

    fn lock_migrations() -> Option<Query<'static, Postgres, PgArguments>> {
        Some(sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK))
    }

    fn record_migration(migration: &Migration) -> Query<'static, Postgres, PgArguments> {
        sqlx::query("INSERT INTO keyauth_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
    }

    fn time_of_row(row: &PgRow, column: &str) -> Result<Option<SystemTime>, StoreError> {
        let time: Option<OffsetDateTime> = row.try_get(column).map_err(column_error)?;
        Ok(time.map(SystemTime::from))
    }

    fn bind_time<'q>(
        query: Query<'q, Postgres, PgArguments>,
        at: Option<SystemTime>,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(at.map(timestamp))
    }

    /// An array of names (see `bounded_scopes!`).
    fn scopes_of_row(row: &PgRow) -> Result<Scopes, StoreError> {
        let names: Vec<String> = row.try_get("scopes").map_err(column_error)?;
        scopes_from_names(names)
    }

    fn metadata_of_row(row: &PgRow) -> Result<Option<KeyMetadata>, StoreError> {
        let text: Option<&str> = row.try_get("metadata").map_err(column_error)?;
        metadata_from_text(text)
    }

    fn limits_of_row(row: &PgRow) -> Result<Option<UsageLimits>, StoreError> {
        let text: Option<&str> = row.try_get("rate_limits").map_err(column_error)?;
        limits_from_text(text)
    }

    fn allowed_ips_of_row(row: &PgRow) -> Result<Option<IpAllowlist>, StoreError> {
        let text: Option<&str> = row.try_get("allowed_ips").map_err(column_error)?;
        allowlist_from_text(text)
    }

    fn lineage_of_row(row: &PgRow) -> Result<Option<KeyId>, StoreError> {
        let text: Option<&str> = row.try_get("limits_lineage").map_err(column_error)?;
        lineage_from_text(text)
    }

    fn bind_scopes<'q>(
        query: Query<'q, Postgres, PgArguments>,
        scopes: &Scopes,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(scope_names(scopes))
    }

    async fn write_uses(pool: &PgPool, uses: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        let ids: Vec<&str> = uses.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<OffsetDateTime> = uses.iter().map(|(_, at)| timestamp(*at)).collect();
        // One statement for the whole batch.
        sqlx::query(
            "UPDATE keyauth_keys AS k SET last_used_at = u.at
             FROM UNNEST($1::TEXT[], $2::TIMESTAMPTZ[]) AS u(id, at)
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        )
        .bind(&ids)
        .bind(&times)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(StoreError::backend)
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host/database`) and
    /// migrates the database.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool = pool_options(16)
            .connect(url)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool, options).await
    }

    /// Uses an existing pool (migrating its database).
    pub async fn from_pool(pool: PgPool, options: StoreOptions) -> Result<Self, StoreError> {
        let inner = SqlCore::open(pool, options).await?;
        Ok(Self { inner })
    }

    /// Applies the embedded migrations that `pool`'s database lacks. The
    /// constructors call it; call it yourself to migrate ahead of time.
    ///
    /// An up-to-date database is only read, so an application role without
    /// DDL rights can start once the schema exists.
    pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
        migrate(pool).await
    }

    /// The pool, for your own queries.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Writes the buffered `last_used_at` times now (they are otherwise
    /// written once per interval in the background). Returns how many keys
    /// were written. Call it on shutdown to lose none.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        self.inner.flush_last_used().await
    }
}

impl PostgresStore {
    /// Listens for the changes other instances announce (revocations,
    /// rotations, membership changes) and hands each to `target`, typically
    /// a [`CachedStore`](crate::store::CachedStore)'s
    /// [`invalidator`](crate::store::CachedStore::invalidator): every instance's cache
    /// then drops a revoked key as soon as the announcement arrives (measured
    /// in BENCHMARKS.md) instead of within its TTL.
    ///
    /// Announcements sent while the listener is not listening are lost, so
    /// when its connection drops, `target` is told to forget everything:
    /// once the listener is listening again, and after every failed attempt
    /// to get there. It reconnects at once, then retries once a second, each
    /// attempt waiting at most the pool's acquire timeout. **Bound:** a change
    /// made elsewhere while the listener is not listening is seen no later
    /// than the end of the listener's next attempt to reconnect (and never
    /// later than the cache's TTL).
    ///
    /// Listening holds one connection of the pool for as long as the
    /// returned [`InvalidationListener`] lives.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_keyauth::KeyAuthLayer;
    /// use tower_keyauth::store::{CachedStore, PostgresStore};
    ///
    /// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
    /// let cached = CachedStore::new(store.clone());
    /// let _listener = store.listen_for_invalidations(cached.invalidator()).await?;
    /// let layer = KeyAuthLayer::new(cached);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn listen_for_invalidations(
        &self,
        target: impl Invalidate,
    ) -> Result<InvalidationListener, StoreError> {
        let pool = self.inner.pool.clone();
        let mut listener = listen(&pool).await.map_err(StoreError::backend)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => match decode_invalidation(notification.payload()) {
                        Some(change) => target.invalidate(change).await,
                        None => tracing::warn!(
                            payload = notification.payload(),
                            "ignoring an unreadable invalidation"
                        ),
                    },
                    // sqlx has reconnected and listens again before it
                    // reports the loss.
                    Ok(None) => {
                        tracing::warn!(
                            "invalidation listener lost its connection; forgetting all cached keys"
                        );
                        target.invalidate(Invalidation::Everything).await;
                    }
                    // Reconnecting failed, or something else did. Had
                    // `try_recv` been called again, it would reconnect
                    // without a word, and what was cached between this
                    // failure and then could be stale: reconnect here
                    // instead, and forget everything once listening.
                    Err(error) => {
                        tracing::warn!(error = %error, "invalidation listener failed; forgetting all cached keys and reconnecting");
                        target.invalidate(Invalidation::Everything).await;
                        listener = listen_again(&pool, &target).await;
                    }
                }
            }
        });
        Ok(InvalidationListener { task })
    }
}

/// How long the listener waits between attempts to reconnect.
const RELISTEN_INTERVAL: Duration = Duration::from_secs(1);

/// A listener on a connection of `pool`, listening on [`INVALIDATION_CHANNEL`].
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(INVALIDATION_CHANNEL).await?;
    Ok(listener)
}

/// Retries [`listen`] once a second until it succeeds; `target` forgets
/// everything after every failed attempt (what was cached meanwhile may
/// have changed unannounced) and once more when listening again.
async fn listen_again(pool: &PgPool, target: &impl Invalidate) -> PgListener {
    loop {
        tokio::time::sleep(RELISTEN_INTERVAL).await;
        let attempt = listen(pool).await;
        target.invalidate(Invalidation::Everything).await;
        match attempt {
            Ok(listener) => {
                tracing::info!("invalidation listener is listening again");
                return listener;
            }
            Err(error) => {
                tracing::warn!(error = %error, "invalidation listener could not reconnect; retrying");
            }
        }
    }
}

/// Keeps a [`PostgresStore::listen_for_invalidations`] subscription alive;
/// dropping it stops listening.
#[derive(Debug)]
pub struct InvalidationListener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Announces `change` to every listening instance when the transaction
/// commits (and never if it rolls back).
async fn announce(connection: &mut PgConnection, change: &Invalidation) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(INVALIDATION_CHANNEL)
        .bind(encode_invalidation(change))
        .execute(connection)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

/// `k:<key id>`, `m:<user length>:<user><org>` or `*`.
fn encode_invalidation(change: &Invalidation) -> String {
    match change {
        Invalidation::Key(id) => format!("k:{id}"),
        Invalidation::Membership { user, org } => {
            format!("m:{}:{user}{org}", user.as_str().len())
        }
        _ => "*".to_owned(),
    }
}

fn decode_invalidation(payload: &str) -> Option<Invalidation> {
    if payload == "*" {
        return Some(Invalidation::Everything);
    }
    if let Some(id) = payload.strip_prefix("k:") {
        return Some(Invalidation::Key(KeyId::from(id)));
    }
    let (length, rest) = payload.strip_prefix("m:")?.split_once(':')?;
    let length: usize = length.parse().ok()?;
    if !rest.is_char_boundary(length) {
        return None;
    }
    let (user, org) = rest.split_at(length);
    Some(Invalidation::Membership {
        user: UserId::from(user),
        org: OrgId::from(org),
    })
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as("PostgresStore", f)
    }
}

fn timestamp(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(time)
}

fn scope_names(scopes: &Scopes) -> Vec<&str> {
    scopes.iter().map(|scope| scope.as_str()).collect()
}

async fn fetch_key_row(
    connection: &mut PgConnection,
    id: &KeyId,
    for_update: bool,
) -> Result<Option<PgRow>, StoreError> {
    let sql = if for_update {
        SELECT_KEY_BY_ID_FOR_UPDATE
    } else {
        SELECT_KEY_BY_ID
    };
    sqlx::query(sql)
        .bind(id.as_str())
        .fetch_optional(connection)
        .await
        .map_err(StoreError::backend)
}

async fn fetch_key(
    connection: &mut PgConnection,
    id: &KeyId,
    for_update: bool,
) -> Result<Option<KeyRecord>, StoreError> {
    let row = fetch_key_row(connection, id, for_update).await?;
    row.as_ref().map(key_from_row::<Postgres>).transpose()
}

/// A savepoint keeps the transaction usable after an id collision.
impl InsertMinted for PgConnection {
    async fn insert_minted(&mut self, record: &KeyRecord) -> Result<Insert, StoreError> {
        lineage_to_store(record)?;
        sqlx::query("SAVEPOINT keyauth_insert")
            .execute(&mut *self)
            .await
            .map_err(StoreError::backend)?;
        let insert = sqlx::query(
            "INSERT INTO keyauth_keys (id, hash, prefix, owner_kind, org_id, workspace_id, user_id,
                                       scopes, name, created_at, expires_at, grace_ends_at,
                                       revoked_at, last_used_at, metadata, rate_limits,
                                       allowed_ips, credits_remaining, credits_refill_amount,
                                       credits_refill_interval_seconds, credits_refilled_at,
                                       limits_lineage, hash_version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     $17, $18, $19, $20, $21, $22, $23)",
        );
        let result = bind_key(insert, record).execute(&mut *self).await;
        let outcome = inserted(result)?;
        if outcome == Insert::IdTaken {
            sqlx::query("ROLLBACK TO SAVEPOINT keyauth_insert")
                .execute(self)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(outcome)
    }
}

/// Takes a transaction-scoped lock for one owner, so that counting its keys
/// and inserting one cannot interleave with another issuer.
async fn lock_owner(connection: &mut PgConnection, owner: &Owner) -> Result<(), StoreError> {
    let (kind, org, workspace, user) = owner_columns(owner);
    let name = format!(
        "keyauth:{kind}:{}:{}:{}",
        org.unwrap_or(""),
        workspace.unwrap_or(""),
        user.unwrap_or("")
    );
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(name)
        .execute(connection)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        fetch_key(&mut *self.inner.acquire().await?, id, false).await
    }

    /// Reads the row, compares its hash, and parses the rest (scopes
    /// included) only for a matching token.
    async fn find_key_matching(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Result<KeyMatch, StoreError> {
        self.inner.find_key_matching(id, presented).await
    }

    async fn membership(
        &self,
        user: &UserId,
        org: &OrgId,
    ) -> Result<Option<Membership>, StoreError> {
        let scopes: Option<Vec<String>> = sqlx::query_scalar(concat!(
            "SELECT ",
            bounded_scopes!(),
            " FROM keyauth_memberships WHERE user_id = $1 AND org_id = $2"
        ))
        .bind(user.as_str())
        .bind(org.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(StoreError::backend)?;
        scopes
            .map(|names| scopes_from_names(names).map(Membership::new))
            .transpose()
    }

    /// One conditional `UPDATE`, then, only when it changed nothing, one
    /// read.
    async fn spend_credits(&self, id: &KeyId, cost: u64) -> Result<CreditSpend, StoreError> {
        self.inner.spend_credits(id, cost).await
    }

    fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        self.inner.record_use(record, at);
    }

    fn peppers(&self) -> Peppers {
        self.inner.options.peppers.clone()
    }

    /// One conditional `UPDATE` of the hash and its version together.
    async fn rehash(&self, id: &KeyId, from: &KeyHash, to: &KeyHash) -> Result<bool, StoreError> {
        let result = sqlx::query(REHASH)
            .bind(id.as_str())
            .bind(from.as_bytes().as_slice())
            .bind(i64::from(from.version()))
            .bind(to.as_bytes().as_slice())
            .bind(i64::from(to.version()))
            .execute(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(result.rows_affected() == 1)
    }
}

/// Re-hashes the key of id `$1` (hash `$4`, version `$5`), only while
/// its hash is still `$2` of version `$3`.
const REHASH: &str = "UPDATE keyauth_keys SET hash = $4, hash_version = $5
                      WHERE id = $1 AND hash = $2 AND hash_version = $3";

#[async_trait]
impl KeyLifecycle for PostgresStore {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        storable(&new_key.scopes)?;
        let options = &self.inner.options;
        let mut tx = self.inner.begin().await?;
        lock_owner(&mut tx, &new_key.owner).await?;
        // The time is read once the lock is held, so it is never earlier
        // than a change another writer made before us.
        let now = to_micros_precision(options.now());
        let policy = new_key.policy.unwrap_or(options.policy);
        let owner = &new_key.owner;
        let usable = if counts_usable_keys(policy) {
            let query = sqlx::query_scalar(COUNT_USABLE.of(owner)).bind(timestamp(now));
            let usable: i64 = owner_ids(owner)
                .fold(query, |query, id| query.bind(id))
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            usize::try_from(usable).unwrap_or(usize::MAX)
        } else {
            0
        };
        if plan_issue(policy, owner, usable)? == IssuePlan::RevokeOthersThenInsert {
            let query = sqlx::query_scalar(REVOKE_OWNER_KEYS.of(owner)).bind(timestamp(now));
            let revoked: Vec<String> = owner_ids(owner)
                .fold(query, |query, id| query.bind(id))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
            for id in revoked {
                announce(&mut tx, &Invalidation::Key(KeyId::from(id))).await?;
            }
        }
        let issued = self.inner.mint_and_insert(&mut *tx, new_key, now).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(issued)
    }

    async fn list(&self, owner: &Owner) -> Result<Vec<KeySummary>, LifecycleError> {
        let rows = owner_ids(owner)
            .fold(sqlx::query(LIST_OWNER_KEYS.of(owner)), |query, id| {
                query.bind(id)
            })
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        summaries(&rows, key_from_row::<Postgres>)
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        let rows = sqlx::query(LIST_ORG_KEYS)
            .bind(org.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        summaries(&rows, key_from_row::<Postgres>)
    }

    /// Reads the page alone, and one key more, through the owner indexes.
    async fn list_page(
        &self,
        listing: &KeyListing,
        page: &PageRequest,
    ) -> Result<KeyPage, LifecycleError> {
        let (after, after_id) = page_start(page.after.as_ref());
        let (sql, ids): (_, Vec<&str>) = match listing {
            KeyListing::Owner(owner) => (PAGE_OWNER_KEYS.of(owner), owner_ids(owner).collect()),
            KeyListing::Org(org) => (PAGE_ORG_KEYS, vec![org.as_str()]),
        };
        let query = sqlx::query(sql)
            .bind(after.map(timestamp))
            .bind(after_id)
            .bind(page_rows(page));
        let rows = ids
            .into_iter()
            .fold(query, |query, id| query.bind(id))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(page.page_of_newest_first(summaries(&rows, key_from_row::<Postgres>)?))
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        let mut tx = self.inner.begin().await?;
        let found: Option<bool> = sqlx::query_scalar(REVOKE_BY_ID)
            .bind(id.as_str())
            .bind(timestamp(self.inner.options.now()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        if found.is_none() {
            return Err(LifecycleError::NotFound(id.clone()));
        }
        announce(&mut tx, &Invalidation::Key(id.clone())).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(())
    }

    async fn rotate_with(
        &self,
        id: &KeyId,
        rotation: Rotation,
    ) -> Result<IssuedKey, LifecycleError> {
        let options = &self.inner.options;
        let mut tx = self.inner.begin().await?;
        // A rotation inserts a key for the owner, so it takes the owner's
        // lock like an issue does: otherwise a single-active-key issue could
        // miss the successor and leave two keys usable. A key's owner never
        // changes, so it can be read before the lock.
        let owner = fetch_key(&mut tx, id, false)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id.clone()))?
            .owner;
        lock_owner(&mut tx, &owner).await?;
        let old = fetch_key(&mut tx, id, true)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        let now = to_micros_precision(options.now());
        let plan = plan_rotation(&old, &options.format, rotation, now)?;
        let issued = self
            .inner
            .mint_and_insert(&mut *tx, plan.successor, now)
            .await?;
        // The old row is locked: no spend of it lands in between.
        if old
            .limits
            .as_deref()
            .and_then(UsageLimits::credits)
            .is_some()
        {
            hand_over_credits::<Postgres>(&mut tx, id, &issued.record.id).await?;
        }
        let (retire, at) = match plan.old_key {
            OldKey::Revoke => (RETIRE_REVOKE, now),
            OldKey::GraceEndsAt(at) => (RETIRE_GRACE, at),
        };
        sqlx::query(retire)
            .bind(id.as_str())
            .bind(timestamp(at))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        announce(&mut tx, &Invalidation::Key(id.clone())).await?;
        tx.commit().await.map_err(StoreError::backend)?;
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
        let mut tx = self.inner.begin().await?;
        let query = match &membership {
            Some(membership) => sqlx::query(
                "INSERT INTO keyauth_memberships (user_id, org_id, scopes) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, org_id) DO UPDATE SET scopes = excluded.scopes",
            )
            .bind(user.as_str())
            .bind(org.as_str())
            .bind(scope_names(&membership.scopes)),
            None => {
                sqlx::query("DELETE FROM keyauth_memberships WHERE user_id = $1 AND org_id = $2")
                    .bind(user.as_str())
                    .bind(org.as_str())
            }
        };
        query.execute(&mut *tx).await.map_err(StoreError::backend)?;
        let change = Invalidation::Membership {
            user: user.clone(),
            org: org.clone(),
        };
        announce(&mut tx, &change).await?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::*;

    /// The variable naming the PostgreSQL server for tests, as in
    /// `tests/postgres.rs`.
    const POSTGRES_URL_VAR: &str = "KEYAUTH_TEST_POSTGRES_URL";

    /// A statement the stores run on one owner or one key, with arguments
    /// as SQL literals, and how PostgreSQL must find its rows: through
    /// `index`, with every condition of `conditions` in its `Index Cond`.
    struct Hot {
        what: String,
        sql: &'static str,
        args: Vec<&'static str>,
        index: &'static str,
        conditions: Vec<&'static str>,
    }

    /// Every statement of issue, rotate, revoke, list and list_in_org that
    /// selects or updates keys, and the lookups by id.
    fn hot_statements() -> Vec<Hot> {
        const BY_ORG: &str = "keyauth_keys_by_org_owner";
        const BY_USER: &str = "keyauth_keys_by_user_owner";
        const BY_ID: &str = "keyauth_keys_pkey";
        const NOW: &str = "'2030-01-01 00:00:00+00'";
        let owners = [
            (
                Owner::org("org-7"),
                vec!["'org-7'"],
                BY_ORG,
                vec!["(org_id = ", "(workspace_id IS NULL)"],
            ),
            (
                Owner::workspace("org-7", "ws-7"),
                vec!["'org-7'", "'ws-7'"],
                BY_ORG,
                vec!["(org_id = ", "(workspace_id = "],
            ),
            (
                Owner::user("user-7"),
                vec!["'user-7'"],
                BY_USER,
                vec!["(user_id = "],
            ),
        ];
        let mut hot = Vec::new();
        for (owner, ids, index, conditions) in owners {
            let usable = || {
                let mut usable = conditions.clone();
                usable.push("(revoked_at IS NULL)");
                usable
            };
            let with_now = || [NOW].into_iter().chain(ids.iter().copied()).collect();
            hot.push(Hot {
                what: format!("issue: count the usable keys of {owner}"),
                sql: COUNT_USABLE.of(&owner),
                args: with_now(),
                index,
                conditions: usable(),
            });
            hot.push(Hot {
                what: format!("issue: revoke the other keys of {owner}"),
                sql: REVOKE_OWNER_KEYS.of(&owner),
                args: with_now(),
                index,
                conditions: usable(),
            });
            hot.push(Hot {
                what: format!("list the keys of {owner}"),
                sql: LIST_OWNER_KEYS.of(&owner),
                args: ids.clone(),
                index,
                conditions: conditions.clone(),
            });
            hot.push(Hot {
                what: format!("a page of the keys of {owner}"),
                sql: PAGE_OWNER_KEYS.of(&owner),
                args: [NOW, "'key42'", "21"]
                    .into_iter()
                    .chain(ids.iter().copied())
                    .collect(),
                index,
                conditions: conditions.clone(),
            });
        }
        hot.push(Hot {
            what: "list_in_org".to_owned(),
            sql: LIST_ORG_KEYS,
            args: vec!["'org-7'"],
            index: BY_ORG,
            conditions: vec!["(org_id = "],
        });
        hot.push(Hot {
            what: "a page of list_in_org".to_owned(),
            sql: PAGE_ORG_KEYS,
            args: vec![NOW, "'key42'", "21", "'org-7'"],
            index: BY_ORG,
            conditions: vec!["(org_id = "],
        });
        let by_id = [
            ("find_key", SELECT_KEY_BY_ID, vec!["'key42'"]),
            (
                "rotate: lock the old key",
                SELECT_KEY_BY_ID_FOR_UPDATE,
                vec!["'key42'"],
            ),
            (
                "find_key_matching",
                SELECT_KEY_MATCHING,
                vec!["'key42'", "'\\x00'", "2"],
            ),
            ("revoke", REVOKE_BY_ID, vec!["'key42'", NOW]),
            (
                "rotate: revoke the old key",
                RETIRE_REVOKE,
                vec!["'key42'", NOW],
            ),
            (
                "rotate: end the old key's grace",
                RETIRE_GRACE,
                vec!["'key42'", NOW],
            ),
        ];
        for (what, sql, args) in by_id {
            hot.push(Hot {
                what: what.to_owned(),
                sql,
                args,
                index: BY_ID,
                conditions: vec!["(id = "],
            });
        }
        hot
    }

    /// The lines of `EXPLAIN` for `hot`, prepared as sqlx prepares it.
    async fn plan_of(connection: &mut PgConnection, hot: &Hot) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PREPARE keyauth_hot AS {}",
            hot.sql
        )))
        .execute(&mut *connection)
        .await
        .unwrap();
        let plan = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN EXECUTE keyauth_hot ({})",
            hot.args.join(", ")
        )))
        .fetch_all(&mut *connection)
        .await
        .unwrap();
        sqlx::query("DEALLOCATE keyauth_hot")
            .execute(&mut *connection)
            .await
            .unwrap();
        plan
    }

    /// 30 000 keys, 10 for each of 1 000 organizations, 1 000 workspaces
    /// and 1 000 users, a fifth of them revoked, analyzed: every statement
    /// of [`hot_statements`] finds its rows through its own index, on all
    /// the columns it names, and scans nothing, in the plan made for its
    /// arguments and in the generic plan that a statement prepared by
    /// sqlx's cache may switch to after five runs.
    #[tokio::test]
    #[ignore = "needs KEYAUTH_TEST_POSTGRES_URL"]
    async fn statements_on_one_owner_or_key_search_its_index() {
        let url = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| panic!("this test needs {POSTGRES_URL_VAR}, which is unset"));
        let schema = format!(
            "keyauth_plans_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let connect = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| {
                panic!("{POSTGRES_URL_VAR} is set but the server does not answer: {e}")
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        let store = PostgresStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        let mut connection = store.inner.acquire().await.unwrap();
        for statement in [
            "INSERT INTO keyauth_keys (id, hash, owner_kind, org_id, workspace_id, user_id,
                                       scopes, created_at, revoked_at)
             SELECT 'key' || i, sha256(i::TEXT::BYTEA),
                    (ARRAY['organization', 'workspace', 'user'])[i % 3 + 1],
                    CASE WHEN i % 3 < 2 THEN 'org-' || i / 30 END,
                    CASE WHEN i % 3 = 1 THEN 'ws-' || i / 30 END,
                    CASE WHEN i % 3 = 2 THEN 'user-' || i / 30 END,
                    '{*}', now(), CASE WHEN i % 5 = 0 THEN now() END
             FROM generate_series(0, 29999) AS i",
            "ANALYZE keyauth_keys",
        ] {
            sqlx::query(statement)
                .execute(&mut *connection)
                .await
                .unwrap();
        }
        for mode in ["force_custom_plan", "force_generic_plan"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
                .execute(&mut *connection)
                .await
                .unwrap();
            for hot in hot_statements() {
                let plan = plan_of(&mut connection, &hot).await;
                let shown = plan.join("\n");
                assert!(
                    !plan.iter().any(|line| line.contains("Seq Scan")),
                    "{mode}, {}: a sequential scan\n{shown}",
                    hot.what
                );
                // Each scan of the table or of an index of it, as a
                // search of `hot.index`; nothing but a bitmap heap scan
                // besides (the scopes' subplan scans `unnest` instead).
                let searches = [
                    format!("Index Scan using {} on keyauth_keys ", hot.index),
                    format!("Index Only Scan using {} on keyauth_keys ", hot.index),
                    format!("Bitmap Index Scan on {} ", hot.index),
                ];
                let scans: Vec<&str> = plan
                    .iter()
                    .map(|line| line.trim_start().trim_start_matches("->  "))
                    .filter(|line| line.contains(" Scan ") && line.contains("keyauth_keys"))
                    .collect();
                assert!(
                    scans
                        .iter()
                        .any(|line| searches.iter().any(|s| line.starts_with(s)))
                        && scans.iter().all(|line| {
                            searches.iter().any(|s| line.starts_with(s))
                                || line.starts_with("Bitmap Heap Scan on keyauth_keys ")
                        }),
                    "{mode}, {}: expected a search of {}, got\n{shown}",
                    hot.what,
                    hot.index
                );
                let searched = plan
                    .iter()
                    .filter(|line| line.trim_start().starts_with("Index Cond:"))
                    .any(|line| hot.conditions.iter().all(|c| line.contains(c)));
                assert!(
                    searched,
                    "{mode}, {}: expected an Index Cond with {:?}, got\n{shown}",
                    hot.what, hot.conditions
                );
            }
        }
        drop(connection);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(store.pool())
            .await
            .unwrap();
    }

    #[test]
    fn scope_arrays_are_read_just_past_their_bounds() {
        let bounded = bounded_scopes!();
        assert!(bounded.contains(&format!("left(name, {})", crate::scope::Scope::MAX_LEN + 1)));
        assert!(bounded.contains(&format!("scopes[1:{}]", Scopes::MAX_COUNT + 1)));
    }

    #[test]
    fn metadata_is_read_just_past_its_bound() {
        let read = format!("left(metadata, {}) AS metadata", KeyMetadata::MAX_BYTES + 1);
        assert!(SELECT_KEY_BY_ID.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
    }

    #[test]
    fn rate_limits_are_read_just_past_their_bound() {
        let read = format!(
            "left(rate_limits, {}) AS rate_limits",
            crate::limit::RateLimits::MAX_TEXT_LEN + 1
        );
        assert!(SELECT_KEY_BY_ID.contains(&read));
        assert!(SELECT_KEY_BY_ID_FOR_UPDATE.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
    }

    /// A store on a fresh schema of the server named by
    /// [`POSTGRES_URL_VAR`]; drop the schema with [`drop_schema`].
    async fn store_in_fresh_schema(what: &str) -> (PostgresStore, String) {
        let url = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| panic!("this test needs {POSTGRES_URL_VAR}, which is unset"));
        let schema = format!(
            "keyauth_{what}_{}_{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let connect = PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await
            .unwrap_or_else(|e| {
                panic!("{POSTGRES_URL_VAR} is set but the server does not answer: {e}")
            });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&pool)
            .await
            .unwrap();
        let store = PostgresStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        (store, schema)
    }

    async fn drop_schema(store: &PostgresStore, schema: &str) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(store.pool())
            .await
            .unwrap();
    }

    /// Stored rate limits that are not the text form of valid limits are
    /// a corrupt record: reading the key, or listing it, fails; it is never
    /// handed out without its limits.
    #[tokio::test]
    #[ignore = "needs KEYAUTH_TEST_POSTGRES_URL"]
    async fn corrupt_rate_limits_fail_closed() {
        let (store, schema) = store_in_fresh_schema("limits").await;
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        let overlong = format!(
            "{}q=1;w=1",
            " ".repeat(crate::limit::RateLimits::MAX_TEXT_LEN)
        );
        // 513 characters read, over 512 bytes.
        let wide = "\u{e9}".repeat(600);
        for stored in [
            "q=100",
            "q=0;w=60",
            "q=1;w=1, q=2;w=1",
            "1burst;q=1;w=1",
            "q=1;w=1,",
            overlong.as_str(),
            wide.as_str(),
        ] {
            sqlx::query("UPDATE keyauth_keys SET rate_limits = $1 WHERE id = $2")
                .bind(stored)
                .bind(issued.record.id.as_str())
                .execute(store.pool())
                .await
                .unwrap();
            assert!(
                store.find_key(&issued.record.id).await.is_err(),
                "{stored:.20}"
            );
            crate::store::sql::tests::assert_unreadable(&store, &issued, stored).await;
            assert!(
                store
                    .rotate(&issued.record.id, Duration::ZERO)
                    .await
                    .is_err(),
                "a corrupt key is not rotated into one without limits"
            );
        }
        sqlx::query("UPDATE keyauth_keys SET rate_limits = 'q=5;w=60' WHERE id = $1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(
            found.limits.unwrap().rate_limit_set().to_string(),
            "q=5;w=60"
        );
        drop_schema(&store, &schema).await;
    }

    #[test]
    fn lineages_are_read_just_past_their_bound() {
        let read = format!(
            "left(limits_lineage, {}) AS limits_lineage",
            crate::store::sql::MAX_LINEAGE_LEN + 1
        );
        assert!(SELECT_KEY_BY_ID.contains(&read));
        assert!(SELECT_KEY_BY_ID_FOR_UPDATE.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
        assert!(LIST_ORG_KEYS.contains(&read));
        assert!(PAGE_ORG_KEYS.contains(&read));
    }

    /// A stored lineage that is not a key id is a corrupt record: reading
    /// the key, listing it or rotating it fails, so its limits are never
    /// counted under another id; the error names no secret. A lineage
    /// that is not a key id is never written.
    #[tokio::test]
    #[ignore = "needs KEYAUTH_TEST_POSTGRES_URL"]
    async fn corrupt_lineages_fail_closed() {
        let (store, schema) = store_in_fresh_schema("lineage").await;
        let limits = UsageLimits::new()
            .rate_limit(crate::limit::RateLimit::per(5, Duration::from_secs(60)).unwrap())
            .unwrap();
        let first = store
            .issue(NewKey::org("acme").limits(limits.clone()))
            .await
            .unwrap();
        let issued = store
            .rotate(&first.record.id, Duration::from_secs(60))
            .await
            .unwrap();
        let lineage = |record: &KeyRecord| {
            record
                .limits
                .as_deref()
                .and_then(UsageLimits::lineage)
                .cloned()
        };
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(lineage(&found), Some(first.record.id.clone()));
        let secret = issued.token.expose_secret().split_once('.').unwrap().1;
        let overlong = "k".repeat(crate::store::sql::MAX_LINEAGE_LEN + 1);
        let huge = "k".repeat(1 << 20);
        // 65 characters read, over 64 bytes and not ASCII.
        let wide = "\u{e9}".repeat(100);
        let spaced = format!("{} ", first.record.id);
        for stored in [
            "",
            " ",
            "key 1",
            "key_1",
            "k\u{e9}y",
            spaced.as_str(),
            overlong.as_str(),
            huge.as_str(),
            wide.as_str(),
        ] {
            sqlx::query("UPDATE keyauth_keys SET limits_lineage = $1 WHERE id = $2")
                .bind(stored)
                .bind(issued.record.id.as_str())
                .execute(store.pool())
                .await
                .unwrap();
            let what: String = stored.chars().take(20).collect();
            let error = store.find_key(&issued.record.id).await.unwrap_err();
            assert!(!format!("{error:?}").contains(secret), "{what}");
            crate::store::sql::tests::assert_unreadable(&store, &issued, &what).await;
            assert!(
                store
                    .rotate(&issued.record.id, Duration::ZERO)
                    .await
                    .is_err(),
                "{what}: a corrupt key is not rotated into one counted apart"
            );
        }
        sqlx::query("UPDATE keyauth_keys SET limits_lineage = 'Other-key-1' WHERE id = $1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(lineage(&found), Some(KeyId::from("Other-key-1")));
        // A key id on a key without limits means nothing; any other value
        // is corrupt there too.
        let plain = store.issue(NewKey::org("globex")).await.unwrap();
        for (stored, readable) in [("Xb3kP9qLm2Ts", true), ("not an id", false)] {
            sqlx::query("UPDATE keyauth_keys SET limits_lineage = $1 WHERE id = $2")
                .bind(stored)
                .bind(plain.record.id.as_str())
                .execute(store.pool())
                .await
                .unwrap();
            let read = store.find_key(&plain.record.id).await;
            assert_eq!(read.is_ok(), readable, "{stored}");
            if let Ok(found) = read {
                assert_eq!(found.unwrap().limits, None);
            }
        }
        // The store writes no lineage it would refuse to read.
        let refused = store
            .issue(NewKey::org("initech").limits(limits.with_lineage(KeyId::from("key 1"))))
            .await;
        assert!(refused.is_err());
        assert!(store.list(&Owner::org("initech")).await.unwrap().is_empty());
        drop_schema(&store, &schema).await;
    }

    #[test]
    fn allowlists_are_read_just_past_their_bound() {
        let read = format!(
            "left(allowed_ips, {}) AS allowed_ips",
            crate::store::sql::MAX_ALLOWLIST_TEXT_LEN + 1
        );
        assert!(SELECT_KEY_BY_ID.contains(&read));
        assert!(SELECT_KEY_BY_ID_FOR_UPDATE.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
    }

    /// Stored credits or allowlists out of their bounds, or inconsistent,
    /// are a corrupt record: reading the key, listing it or rotating it
    /// fails, and a spend changes nothing and fails.
    #[tokio::test]
    #[ignore = "needs KEYAUTH_TEST_POSTGRES_URL"]
    async fn corrupt_credits_and_allowlists_fail_closed() {
        let (store, schema) = store_in_fresh_schema("credits").await;
        let credits = crate::limit::Credits::new(5)
            .unwrap()
            .refill(crate::limit::Refill::every(10, Duration::from_secs(60)).unwrap());
        let limits = UsageLimits::new()
            .with_credits(credits)
            .with_allowed_ips(IpAllowlist::parse(["192.0.2.0/24"]).unwrap());
        let issued = store
            .issue(NewKey::org("acme").limits(limits))
            .await
            .unwrap();
        let id = issued.record.id.as_str();
        let sound = "UPDATE keyauth_keys SET allowed_ips = '192.0.2.0/24',
                            credits_remaining = 5, credits_refill_amount = 10,
                            credits_refill_interval_seconds = 60,
                            credits_refilled_at = 'epoch'
                     WHERE id = $1";
        // 4160 characters read, over 4159 bytes.
        let wide = format!("allowed_ips = '{}'", "\u{e9}".repeat(4200));
        let overlong = format!("allowed_ips = '{}192.0.2.0/24'", " ".repeat(4200));
        let corruptions = [
            "allowed_ips = '192.0.2.1/24'".to_owned(),
            "allowed_ips = '192.0.2.0/24,'".to_owned(),
            "allowed_ips = ' '".to_owned(),
            overlong,
            wide,
            "credits_remaining = -1".to_owned(),
            "credits_remaining = 1000000000000001".to_owned(),
            "credits_remaining = NULL".to_owned(),
            "credits_refill_amount = 0".to_owned(),
            "credits_refill_amount = NULL".to_owned(),
            "credits_refill_interval_seconds = 0".to_owned(),
            "credits_refill_interval_seconds = 31622401".to_owned(),
            "credits_refilled_at = NULL".to_owned(),
        ];
        for corruption in &corruptions {
            sqlx::query(sound)
                .bind(id)
                .execute(store.pool())
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE keyauth_keys SET {corruption} WHERE id = $1"
            )))
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
            let what: String = corruption.chars().take(40).collect();
            assert!(store.find_key(&issued.record.id).await.is_err(), "{what}");
            crate::store::sql::tests::assert_unreadable(&store, &issued, &what).await;
            assert!(
                store
                    .rotate(&issued.record.id, Duration::ZERO)
                    .await
                    .is_err(),
                "{what}: a corrupt key is not rotated into one without limits"
            );
            if corruption.starts_with("credits") {
                let remaining = "SELECT credits_remaining FROM keyauth_keys WHERE id = $1";
                let before: Option<i64> = sqlx::query_scalar(remaining)
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                assert!(
                    store.spend_credits(&issued.record.id, 1).await.is_err(),
                    "{what}"
                );
                let after: Option<i64> = sqlx::query_scalar(remaining)
                    .bind(id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
                assert_eq!(before, after, "{what}: a corrupt row is not spent");
            }
        }
        sqlx::query(sound)
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(found.limits.unwrap().credits(), Some(&credits));
        // Refilled: its clock (the epoch) is long past an interval.
        assert_eq!(
            store.spend_credits(&issued.record.id, 1).await.unwrap(),
            CreditSpend::Spent { remaining: 9 }
        );
        drop_schema(&store, &schema).await;
    }

    #[test]
    fn invalidations_round_trip_through_payloads() {
        let changes = [
            Invalidation::Key(KeyId::from("Xb3kP9qLm2Ts")),
            Invalidation::Membership {
                user: UserId::from("ada:lovelace"),
                org: OrgId::from("acme:1"),
            },
            Invalidation::Membership {
                user: UserId::from("é"),
                org: OrgId::from(""),
            },
            Invalidation::Everything,
        ];
        for change in changes {
            assert_eq!(
                decode_invalidation(&encode_invalidation(&change)),
                Some(change)
            );
        }
        for garbage in ["", "x", "m:", "m:9:ab", "m:a:b", "m:1:\u{e9}"] {
            assert_eq!(decode_invalidation(garbage), None, "{garbage:?}");
        }
    }
}
