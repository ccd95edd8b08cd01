//! What the SQL stores share: the pool, options and `last_used_at` buffer
//! they hold ([`SqlCore`]), the migration loop, the insert of a minted key,
//! how an owner maps to columns, and how times and scopes are stored. Each
//! dialect's SQL stays in its store's file, behind [`Dialect`].

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client_addr::IpAllowlist;
use crate::hash::KeyHash;
use crate::ids::{KeyId, OrgId, UserId, WorkspaceId};
use crate::limit::{Credits, MAX_CREDITS, RateLimits, Refill, UsageLimits};
use crate::metadata::KeyMetadata;
use crate::pepper::HashVersion;
use crate::record::{KeyRecord, Owner};
use crate::scope::Scopes;
use crate::store::lifecycle::{
    self, Insert, InsertMinted, IssuedKey, KeyPolicy, KeySummary, LifecycleError, NewKey,
    PageCursor, PageRequest,
};
use crate::store::memory::refill_credits;
use crate::store::usage::UsageBuffer;
use crate::store::{CreditSpend, KeyMatch, StoreError, StoreOptions};

/// A schema change, applied once, in order, inside a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

/// The schema changes of a dialect, from its folder under `migrations/`:
/// every dialect has the same versions, each in its own SQL.
macro_rules! dialect_migrations {
    ($dialect:literal) => {
        &[
            Migration {
                version: 1,
                description: "keys and memberships",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0001_keys_and_memberships.sql"
                )),
            },
            Migration {
                version: 2,
                description: "clock-free revocation",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0002_clock_free_revocation.sql"
                )),
            },
            Migration {
                version: 3,
                description: "owner indexes",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0003_owner_indexes.sql"
                )),
            },
            Migration {
                version: 4,
                description: "key metadata",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0004_key_metadata.sql"
                )),
            },
            Migration {
                version: 5,
                description: "key rate limits",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0005_key_rate_limits.sql"
                )),
            },
            Migration {
                version: 6,
                description: "key credits and allowlists",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0006_key_credits_and_allowlists.sql"
                )),
            },
            Migration {
                version: 7,
                description: "key limits lineage",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0007_key_limits_lineage.sql"
                )),
            },
            Migration {
                version: 8,
                description: "peppered hashes",
                sql: include_str!(concat!(
                    "../../migrations/",
                    $dialect,
                    "/0008_peppered_hashes.sql"
                )),
            },
        ]
    };
}
pub(crate) use dialect_migrations;

/// What a SQL dialect brings to the code its store shares with the other:
/// its migrations and the statements that apply them, how it begins a
/// writing transaction, how it stores times and scopes, and how it writes
/// `last_used_at` times.
pub(crate) trait Dialect: Database<Arguments: IntoArguments<Self>> {
    /// The schema changes, oldest first.
    const MIGRATIONS: &'static [Migration];
    /// Whether `keyauth_migrations` exists: one boolean.
    const MIGRATIONS_RECORDED: &'static str;
    /// Creates `keyauth_migrations` if it is missing.
    const CREATE_MIGRATIONS_TABLE: &'static str;
    /// The newest applied version, 0 before any: one BIGINT.
    const APPLIED_VERSION: &'static str;
    /// Begins a transaction that reads and then writes.
    const BEGIN_WRITE: &'static str;
    /// Selects the key row of id `$1`/`?1`, its scopes read only when its
    /// hash equals `$2`/`?2` or its hash version differs from `$3`/`?3`
    /// (then the layer hashes again under the row's version).
    const SELECT_KEY_MATCHING: &'static str;
    /// Spends `$3`/`?3` credits of the key of id `$1`/`?1` at the time
    /// `$2`/`?2`, in one conditional `UPDATE`: a refill due then is applied
    /// first, and the row is changed only when its credits are sound (see
    /// [`credits_are_sound!`]) and enough. Returns the credits left (one
    /// BIGINT), or no row.
    const SPEND_CREDITS: &'static str;
    /// The credit columns of the key of id `$1`/`?1`: `credits_remaining`,
    /// `credits_refill_amount`, `credits_refill_interval_seconds`,
    /// `credits_refilled_at`.
    const SELECT_CREDITS: &'static str;
    /// Hands the credits of a rotated key (id `$2`/`?2`) over to its
    /// successor (id `$1`/`?1`), inserted with the old key's credits as
    /// read in the same transaction: the successor takes its refill clock,
    /// and the old key keeps no credits.
    const HAND_OVER_CREDITS: [&'static str; 2];

    /// Serializes migrating processes, run first in the migration's
    /// transaction, where [`BEGIN_WRITE`](Self::BEGIN_WRITE) alone does not.
    fn lock_migrations() -> Option<Query<'static, Self, Self::Arguments>> {
        None
    }

    /// Records that `migration` was applied.
    fn record_migration(migration: &Migration) -> Query<'static, Self, Self::Arguments>;

    /// A time column of a key row; `None` for NULL.
    fn time_of_row(row: &Self::Row, column: &str) -> Result<Option<SystemTime>, StoreError>;

    /// Binds a time as the dialect stores it.
    fn bind_time<'q>(
        query: Query<'q, Self, Self::Arguments>,
        at: Option<SystemTime>,
    ) -> Query<'q, Self, Self::Arguments>;

    /// The `scopes` column of a key row, as its `SELECT` bounds it.
    fn scopes_of_row(row: &Self::Row) -> Result<Scopes, StoreError>;

    /// The `metadata` column of a key row, as its `SELECT` bounds it;
    /// `None` for NULL.
    fn metadata_of_row(row: &Self::Row) -> Result<Option<KeyMetadata>, StoreError>;

    /// The `rate_limits` column of a key row, as its `SELECT` bounds it;
    /// `None` for NULL.
    fn limits_of_row(row: &Self::Row) -> Result<Option<UsageLimits>, StoreError>;

    /// The `allowed_ips` column of a key row, as its `SELECT` bounds it;
    /// `None` for NULL.
    fn allowed_ips_of_row(row: &Self::Row) -> Result<Option<IpAllowlist>, StoreError>;

    /// The `limits_lineage` column of a key row, as its `SELECT` bounds it
    /// (see [`lineage_from_text`]); `None` for NULL.
    fn lineage_of_row(row: &Self::Row) -> Result<Option<KeyId>, StoreError>;

    /// Binds scopes as the dialect stores them.
    fn bind_scopes<'q>(
        query: Query<'q, Self, Self::Arguments>,
        scopes: &Scopes,
    ) -> Query<'q, Self, Self::Arguments>;

    /// Writes buffered `last_used_at` times, never moving one back.
    fn write_uses(
        pool: &Pool<Self>,
        uses: &[(KeyId, SystemTime)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Applies the migrations of `D` that `pool`'s database lacks, in one
/// transaction. An up-to-date database is only read, so an application role
/// without DDL rights can start once the schema exists.
pub(crate) async fn migrate<D: Dialect>(pool: &Pool<D>) -> Result<(), StoreError>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    bool: Type<D> + for<'r> Decode<'r, D>,
    i64: Type<D> + for<'r> Decode<'r, D>,
    usize: ColumnIndex<D::Row>,
{
    let recorded: bool = sqlx::query_scalar(D::MIGRATIONS_RECORDED)
        .fetch_one(pool)
        .await
        .map_err(StoreError::backend)?;
    let latest = D::MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
    if recorded && applied_version(pool).await? >= latest {
        return Ok(());
    }
    let mut tx = pool
        .begin_with(D::BEGIN_WRITE)
        .await
        .map_err(StoreError::backend)?;
    if let Some(lock) = D::lock_migrations() {
        lock.execute(&mut *tx).await.map_err(StoreError::backend)?;
    }
    sqlx::query(D::CREATE_MIGRATIONS_TABLE)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
    let applied = applied_version(&mut *tx).await?;
    for migration in D::MIGRATIONS.iter().filter(|m| m.version > applied) {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        D::record_migration(migration)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
    }
    tx.commit().await.map_err(StoreError::backend)
}

async fn applied_version<'e, D: Dialect>(
    executor: impl Executor<'e, Database = D>,
) -> Result<i64, StoreError>
where
    i64: Type<D> + for<'r> Decode<'r, D>,
    usize: ColumnIndex<D::Row>,
{
    sqlx::query_scalar(D::APPLIED_VERSION)
        .fetch_one(executor)
        .await
        .map_err(StoreError::backend)
}

/// Pool settings both stores start from: a database that cannot be reached
/// fails within seconds, not after sqlx's default 30 s.
pub(crate) fn pool_options<D: Database>(max_connections: u32) -> PoolOptions<D> {
    PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
}

/// What a SQL store holds besides its SQL: the pool, the options, and the
/// `last_used_at` times waiting for their background writer.
pub(crate) struct SqlCore<D: Dialect> {
    pub(crate) pool: Pool<D>,
    pub(crate) options: StoreOptions,
    usage: Option<UsageBuffer>,
}

impl<D: Dialect> SqlCore<D> {
    /// Migrates `pool`'s database and holds it. With `last_used_at` tracking
    /// on, a task writes the buffered times once per interval for as long as
    /// the core lives.
    pub(crate) async fn open(pool: Pool<D>, options: StoreOptions) -> Result<Arc<Self>, StoreError>
    where
        for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
        bool: Type<D> + for<'r> Decode<'r, D>,
        i64: Type<D> + for<'r> Decode<'r, D>,
        usize: ColumnIndex<D::Row>,
    {
        migrate(&pool).await?;
        let usage = options.last_used_interval.map(UsageBuffer::new);
        let core = Arc::new(Self {
            pool,
            options,
            usage,
        });
        if let Some(usage) = &core.usage {
            spawn_usage_writer(
                Arc::downgrade(&core),
                usage.interval(),
                usage.overflow_signal(),
            );
        }
        Ok(core)
    }

    /// A connection of the pool.
    pub(crate) async fn acquire(&self) -> Result<PoolConnection<D>, StoreError> {
        self.pool.acquire().await.map_err(StoreError::backend)
    }

    /// The key `id`, its hash compared with `presented` before anything
    /// else of its row is decoded, so a forged token never pays for parsing
    /// a record's scopes.
    pub(crate) async fn find_key_matching(
        &self,
        id: &KeyId,
        presented: &KeyHash,
    ) -> Result<KeyMatch, StoreError>
    where
        for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
        for<'t> &'t str: Encode<'t, D> + Type<D>,
        for<'t> &'t [u8]: Encode<'t, D> + Type<D> + Decode<'t, D>,
        String: Type<D> + for<'r> Decode<'r, D>,
        i64: Type<D> + for<'r> Decode<'r, D> + for<'t> Encode<'t, D>,
        &'static str: ColumnIndex<D::Row>,
    {
        let mut connection = self.acquire().await?;
        let row = sqlx::query(D::SELECT_KEY_MATCHING)
            .bind(id.as_str())
            .bind(presented.as_bytes().as_slice())
            .bind(i64::from(presented.version()))
            .fetch_optional(&mut *connection)
            .await
            .map_err(StoreError::backend)?;
        match_key_row(row, presented, hash_of_row, key_from_row::<D>)
    }

    /// Spends `cost` of key `id`'s credits (see
    /// [`KeyStore::spend_credits`](crate::KeyStore::spend_credits)): one
    /// conditional `UPDATE` ([`Dialect::SPEND_CREDITS`]), which refills and
    /// spends in the database, at the store clock's time. Only when it
    /// changed nothing, one read tells why: no key, no credits, or too few.
    pub(crate) async fn spend_credits(
        &self,
        id: &KeyId,
        cost: u64,
    ) -> Result<CreditSpend, StoreError>
    where
        for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
        for<'t> &'t str: Encode<'t, D> + Type<D>,
        i64: Type<D> + for<'r> Decode<'r, D> + for<'t> Encode<'t, D>,
        &'static str: ColumnIndex<D::Row>,
        usize: ColumnIndex<D::Row>,
    {
        // More than a key can hold is never spent, and is bound as a BIGINT.
        let bound_cost = column_count(cost.min(MAX_CREDITS + 1));
        let mut connection = self.acquire().await?;
        for _ in 0..SPEND_ATTEMPTS {
            let now = to_micros_precision(self.options.now());
            let spend = sqlx::query(D::SPEND_CREDITS).bind(id.as_str());
            let spent = D::bind_time(spend, Some(now))
                .bind(bound_cost)
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::backend)?;
            if let Some(row) = spent {
                let remaining: i64 = row.try_get(0usize).map_err(column_error)?;
                let remaining = u64::try_from(remaining)
                    .ok()
                    .filter(|&remaining| remaining <= MAX_CREDITS)
                    .ok_or_else(|| corrupt("key credits out of bounds after a spend".to_owned()))?;
                return Ok(CreditSpend::Spent { remaining });
            }
            let row = sqlx::query(D::SELECT_CREDITS)
                .bind(id.as_str())
                .fetch_optional(&mut *connection)
                .await
                .map_err(StoreError::backend)?;
            let Some(row) = row else {
                return Ok(CreditSpend::NotFound);
            };
            let Some((credits, refilled_at)) = credits_of_row::<D>(&row)? else {
                return Ok(CreditSpend::Unlimited);
            };
            // As the `UPDATE` saw them at `now`, unless another writer
            // changed them in between (refilled them on a later clock, say):
            // then spend again.
            let refilled = refill_credits(&credits, refilled_at, now);
            if refilled.remaining < cost {
                return Ok(CreditSpend::Exhausted {
                    remaining: refilled.remaining,
                    refill_in: refilled.refill_in(now),
                });
            }
        }
        Err(StoreError::backend(
            "a key's credits kept changing while they were being spent",
        ))
    }

    /// A transaction that reads and then writes.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, D>, StoreError> {
        self.pool
            .begin_with(D::BEGIN_WRITE)
            .await
            .map_err(StoreError::backend)
    }

    /// Mints `new_key` and inserts it into `connection`, its expiry at the
    /// database's precision so that the record handed out reads back equal.
    pub(crate) async fn mint_and_insert<C: InsertMinted>(
        &self,
        connection: &mut C,
        mut new_key: NewKey,
        now: SystemTime,
    ) -> Result<IssuedKey, LifecycleError> {
        new_key.expires_at = new_key.expires_at.map(to_micros_precision);
        lifecycle::mint_and_insert(
            connection,
            &self.options.format,
            &self.options.peppers,
            new_key,
            now,
        )
        .await
    }

    /// Notes a use for the background writer: no lock, no allocation;
    /// comparisons of times and two atomic loads for a key already noted in
    /// its window (see `UsageBuffer`).
    pub(crate) fn record_use(&self, record: &KeyRecord, at: SystemTime) {
        if let Some(usage) = &self.usage {
            usage.note(record, at);
        }
    }

    /// Writes the buffered `last_used_at` times now (those of a failed
    /// write first, latest time per key, at most a queue's worth); returns
    /// how many.
    pub(crate) async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let Some(usage) = &self.usage else {
            return Ok(0);
        };
        usage
            .flush(async |uses: &[(KeyId, SystemTime)]| D::write_uses(&self.pool, uses).await)
            .await
    }

    /// `Debug` for the store named `name`.
    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("pool", &self.pool)
            .field("options", &self.options)
            .finish()
    }
}

/// How many times a spend of credits is tried when another writer changed
/// them between its `UPDATE` and its read.
const SPEND_ATTEMPTS: usize = 3;

/// Hands the credits of the rotated key `old` over to its `successor`,
/// inserted in the same transaction (see [`Dialect::HAND_OVER_CREDITS`]):
/// the successor has the old key's remaining credits (as read in the
/// transaction, which holds the old row against spends) and goes on with
/// its refill clock; the old key keeps none. Rotating is never a way to
/// reset credits, and during a grace period two keys never spend one key's
/// credits.
pub(crate) async fn hand_over_credits<D: Dialect>(
    connection: &mut D::Connection,
    old: &KeyId,
    successor: &KeyId,
) -> Result<(), StoreError>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'t> &'t str: Encode<'t, D> + Type<D>,
{
    for statement in D::HAND_OVER_CREDITS {
        sqlx::query(statement)
            .bind(successor.as_str())
            .bind(old.as_str())
            .execute(&mut *connection)
            .await
            .map_err(StoreError::backend)?;
    }
    Ok(())
}

/// The condition on a key row that its credit columns hold credits a spend
/// may change: what is left within its bounds, and either no refill or a
/// refill within its bounds with the time of its last refill. A spend never
/// changes a row that fails it, and reading the row fails
/// ([`credits_from_columns`]). The bounds, [`MAX_CREDITS`] and
/// [`MAX_WINDOW`](crate::limit::MAX_WINDOW) in seconds, are written out
/// (a unit test checks them).
macro_rules! credits_are_sound {
    () => {
        "credits_remaining BETWEEN 0 AND 1000000000000000
         AND ((credits_refill_amount IS NULL AND credits_refill_interval_seconds IS NULL)
              OR (credits_refill_amount BETWEEN 1 AND 1000000000000000
                  AND credits_refill_interval_seconds BETWEEN 1 AND 31622400
                  AND credits_refilled_at IS NOT NULL))"
    };
}
pub(crate) use credits_are_sound;

/// Flushes `core`'s buffered `last_used_at` times every `interval` while it
/// lives, and at once when a use finds the queue full (`overflow`), so that
/// more keys than the queue holds are written within an interval too. After
/// a failed write it waits for the next tick, whatever the queue: a database
/// that is down is not retried faster than once per interval. Failures are
/// logged, never returned to a request.
fn spawn_usage_writer<D: Dialect>(
    core: Weak<SqlCore<D>>,
    interval: Duration,
    overflow: Arc<Notify>,
) {
    tokio::spawn(async move {
        let mut tick = Instant::now() + interval;
        let mut last_failed = false;
        loop {
            let woken_early = if last_failed {
                tokio::time::sleep_until(tick).await;
                false
            } else {
                tokio::time::timeout_at(tick, overflow.notified())
                    .await
                    .is_ok()
            };
            if !woken_early {
                // As `MissedTickBehavior::Delay`: a whole interval from now.
                tick = Instant::now() + interval;
            }
            let Some(core) = core.upgrade() else {
                break;
            };
            let flushed = core.flush_last_used().await;
            drop(core);
            last_failed = flushed.is_err();
            if let Err(error) = flushed {
                tracing::warn!(error = %error, "could not write last-used times; they are kept for the next attempt");
            }
        }
    });
}

/// The condition that selects the rows of one owner of kind `organization`,
/// `workspace` or `user`, its ids in the placeholders `$first` (the
/// organization or the user) and `$second` (the workspace). It names the
/// columns of the owner indexes of migration 3 as they stand, with no `IS`
/// between a column and a placeholder: PostgreSQL uses no index for `IS NOT
/// DISTINCT FROM`, and SQLite picked the index on `user_id` for
/// `user_id IS NULL`, which matches every organization and workspace key.
/// The columns a kind leaves NULL need no condition: the table's `CHECK`
/// ties them to `owner_kind`, which is compared last, on the owner's rows.
macro_rules! owner_is {
    (organization, $first:literal, $second:literal) => {
        concat!(
            "org_id = ",
            $first,
            " AND workspace_id IS NULL AND owner_kind = 'organization'"
        )
    };
    (workspace, $first:literal, $second:literal) => {
        concat!(
            "org_id = ",
            $first,
            " AND workspace_id = ",
            $second,
            " AND owner_kind = 'workspace'"
        )
    };
    (user, $first:literal, $second:literal) => {
        concat!("user_id = ", $first, " AND owner_kind = 'user'")
    };
}
pub(crate) use owner_is;

/// A statement written for each kind of owner: `$before`, the condition of
/// [`owner_is!`] on the placeholders `$first` and `$second`, then `$after`.
macro_rules! per_owner_kind {
    ($before:expr, $first:literal, $second:literal, $after:expr) => {
        $crate::store::sql::PerOwnerKind {
            organization: concat!(
                $before,
                $crate::store::sql::owner_is!(organization, $first, $second),
                $after
            ),
            workspace: concat!(
                $before,
                $crate::store::sql::owner_is!(workspace, $first, $second),
                $after
            ),
            user: concat!(
                $before,
                $crate::store::sql::owner_is!(user, $first, $second),
                $after
            ),
        }
    };
}
pub(crate) use per_owner_kind;

/// One statement per kind of owner (see [`per_owner_kind!`]); bind the
/// owner's ids with [`owner_ids`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PerOwnerKind {
    pub(crate) organization: &'static str,
    pub(crate) workspace: &'static str,
    pub(crate) user: &'static str,
}

impl PerOwnerKind {
    /// The statement for `owner`'s kind.
    pub(crate) fn of(&self, owner: &Owner) -> &'static str {
        match owner {
            Owner::Organization(_) => self.organization,
            Owner::Workspace { .. } => self.workspace,
            Owner::User(_) => self.user,
        }
    }
}

/// The ids of `owner` in the order [`owner_is!`] places them: the
/// organization then the workspace, or the user. Bind them with
/// `owner_ids(owner).fold(query, |query, id| query.bind(id))`.
pub(crate) fn owner_ids(owner: &Owner) -> impl Iterator<Item = &str> {
    let (first, second) = match owner {
        Owner::Organization(org) => (org.as_str(), None),
        Owner::Workspace { org, workspace } => (org.as_str(), Some(workspace.as_str())),
        Owner::User(user) => (user.as_str(), None),
    };
    std::iter::once(first).chain(second)
}

/// Whether issuing under `policy` needs the owner's usable keys counted:
/// only a limit does.
pub(crate) fn counts_usable_keys(policy: KeyPolicy) -> bool {
    matches!(policy, KeyPolicy::AtMost(_))
}

/// The owner as `(owner_kind, org_id, workspace_id, user_id)` columns.
pub(crate) fn owner_columns(
    owner: &Owner,
) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
    match owner {
        Owner::Organization(org) => ("organization", Some(org.as_str()), None, None),
        Owner::Workspace { org, workspace } => (
            "workspace",
            Some(org.as_str()),
            Some(workspace.as_str()),
            None,
        ),
        Owner::User(user) => ("user", None, None, Some(user.as_str())),
    }
}

/// The owner read back from its columns.
pub(crate) fn owner_from_columns(
    kind: &str,
    org: Option<String>,
    workspace: Option<String>,
    user: Option<String>,
) -> Result<Owner, StoreError> {
    match (kind, org, workspace, user) {
        ("organization", Some(org), None, None) => Ok(Owner::Organization(OrgId::from(org))),
        ("workspace", Some(org), Some(workspace), None) => Ok(Owner::Workspace {
            org: OrgId::from(org),
            workspace: WorkspaceId::from(workspace),
        }),
        ("user", None, None, Some(user)) => Ok(Owner::User(UserId::from(user))),
        (kind, ..) => Err(corrupt(format!(
            "inconsistent owner columns for kind {kind:?}"
        ))),
    }
}

/// Scopes as stored: space-separated names.
#[cfg(feature = "sqlite")]
pub(crate) fn scopes_to_text(scopes: &Scopes) -> String {
    scopes.to_string()
}

/// Scopes read back from an array of names; a list beyond the bounds of
/// [`Scopes`] is a corrupt record.
#[cfg(feature = "postgres")]
pub(crate) fn scopes_from_names<I>(names: I) -> Result<Scopes, StoreError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    Scopes::parse(names).map_err(|error| corrupt(error.to_string()))
}

/// Scopes read back from their text; a list beyond the bounds of
/// [`Scopes`] is a corrupt record.
#[cfg(feature = "sqlite")]
pub(crate) fn scopes_from_text(text: &str) -> Result<Scopes, StoreError> {
    Scopes::parse_space_separated(text).map_err(|error| corrupt(error.to_string()))
}

/// Metadata read back from its text (at most one byte past
/// [`KeyMetadata::MAX_BYTES`], as the stores read it); text that is not a
/// JSON object of at most that many bytes is a corrupt record.
pub(crate) fn metadata_from_text(text: Option<&str>) -> Result<Option<KeyMetadata>, StoreError> {
    text.map(|text| {
        KeyMetadata::from_json(text).map_err(|error| corrupt(format!("key metadata: {error}")))
    })
    .transpose()
}

/// Rate limits read back from their text (at most one byte past
/// [`RateLimits::MAX_TEXT_LEN`], as the stores read it); text that is not
/// the text form of valid limits is a corrupt record, so a key is never
/// handed out without its limits.
pub(crate) fn limits_from_text(text: Option<&str>) -> Result<Option<UsageLimits>, StoreError> {
    text.map(|text| {
        text.parse::<RateLimits>()
            .map(|rate_limits| UsageLimits::new().with_rate_limits(rate_limits))
            .map_err(|error| corrupt(format!("key rate limits: {error}")))
    })
    .transpose()
}

/// The longest text of a valid [`IpAllowlist`], in bytes: its most
/// networks, each entry at its longest, separated by commas (the text the
/// stores write, `192.0.2.0/24, 2001:db8::/32`, is shorter).
pub(crate) const MAX_ALLOWLIST_TEXT_LEN: usize =
    IpAllowlist::MAX_NETWORKS * (IpAllowlist::MAX_ENTRY_BYTES + 1) - 1;

/// An allowlist as stored: its networks joined by `", "`; the empty text
/// for an empty allowlist.
fn allowlist_to_text(allowlist: &IpAllowlist) -> String {
    allowlist.to_string()
}

/// An allowlist read back from its text (at most one byte past
/// [`MAX_ALLOWLIST_TEXT_LEN`], as the stores read it); text that is not
/// valid networks is a corrupt record, so a key is never handed out without
/// its allowlist.
pub(crate) fn allowlist_from_text(text: Option<&str>) -> Result<Option<IpAllowlist>, StoreError> {
    text.map(|text| {
        if text.len() > MAX_ALLOWLIST_TEXT_LEN {
            return Err(corrupt(format!(
                "a key's IP allowlist is over {MAX_ALLOWLIST_TEXT_LEN} bytes"
            )));
        }
        let entries = text.split(',').filter(|_| !text.is_empty());
        IpAllowlist::parse(entries).map_err(|error| corrupt(format!("key IP allowlist: {error}")))
    })
    .transpose()
}

/// Credits read back from their columns (see migration 6), with the time of
/// their last refill (the epoch for credits that never refill); `None` for
/// a key without credits. Values out of bounds, or a refill's columns not
/// all set together, are a corrupt record.
pub(crate) fn credits_from_columns(
    remaining: Option<i64>,
    refill_amount: Option<i64>,
    refill_interval_seconds: Option<i64>,
    refilled_at: Option<SystemTime>,
) -> Result<Option<(Credits, SystemTime)>, StoreError> {
    let bad = |what: String| corrupt(format!("key credits: {what}"));
    let count = |value: i64| u64::try_from(value).unwrap_or(u64::MAX);
    let Some(remaining) = remaining else {
        if refill_amount.is_some() || refill_interval_seconds.is_some() || refilled_at.is_some() {
            return Err(bad("a refill without credits".to_owned()));
        }
        return Ok(None);
    };
    let credits = Credits::new(count(remaining)).map_err(|error| bad(error.to_string()))?;
    match (refill_amount, refill_interval_seconds, refilled_at) {
        (None, None, at) => Ok(Some((credits, at.unwrap_or(UNIX_EPOCH)))),
        (Some(amount), Some(seconds), Some(at)) => {
            let interval = Duration::from_secs(count(seconds));
            let refill =
                Refill::every(count(amount), interval).map_err(|error| bad(error.to_string()))?;
            Ok(Some((credits.refill(refill), at)))
        }
        _ => Err(bad(
            "a refill's amount, interval and time are not set together".to_owned(),
        )),
    }
}

/// The credit columns of a key row, read back (see
/// [`credits_from_columns`]).
fn credits_of_row<D: Dialect>(row: &D::Row) -> Result<Option<(Credits, SystemTime)>, StoreError>
where
    i64: Type<D> + for<'r> Decode<'r, D>,
    &'static str: ColumnIndex<D::Row>,
{
    let count = |column: &'static str| -> Result<Option<i64>, StoreError> {
        row.try_get(column).map_err(column_error)
    };
    credits_from_columns(
        count("credits_remaining")?,
        count("credits_refill_amount")?,
        count("credits_refill_interval_seconds")?,
        D::time_of_row(row, "credits_refilled_at")?,
    )
}

/// A count as a BIGINT column holds it (counts are at most
/// [`MAX_CREDITS`], far below its bound).
fn column_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// What a key may use, from what its columns hold: `None` when none of
/// them limits it. The lineage goes with limits only: alone, it limits
/// nothing (the stores write one only with a key's limits).
fn usage_limits(
    rate_limits: Option<UsageLimits>,
    credits: Option<Credits>,
    allowed_ips: Option<IpAllowlist>,
    lineage: Option<KeyId>,
) -> Option<UsageLimits> {
    if rate_limits.is_none() && credits.is_none() && allowed_ips.is_none() {
        return None;
    }
    let mut limits = rate_limits.unwrap_or_default();
    if let Some(credits) = credits {
        limits = limits.with_credits(credits);
    }
    if let Some(allowed_ips) = allowed_ips {
        limits = limits.with_allowed_ips(allowed_ips);
    }
    if let Some(lineage) = lineage {
        limits = limits.with_lineage(lineage);
    }
    Some(limits)
}

/// The stored hash of a key row, read before anything else of it.
fn hash_of_row<R>(row: &R) -> Result<KeyHash, StoreError>
where
    R: sqlx::Row,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let hash: &[u8] = row.try_get("hash").map_err(column_error)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("a key hash is not 32 bytes".to_owned()))?;
    let version: i64 = row.try_get("hash_version").map_err(column_error)?;
    let version = HashVersion::try_from(version)
        .map_err(|_| corrupt(format!("a key's hash version is {version}")))?;
    Ok(KeyHash::from_bytes(hash).with_version(version))
}

/// A key row as a record: the columns [`bind_key`] writes, read back.
pub(crate) fn key_from_row<D: Dialect>(row: &D::Row) -> Result<KeyRecord, StoreError>
where
    String: Type<D> + for<'r> Decode<'r, D>,
    for<'r> &'r [u8]: Type<D> + Decode<'r, D>,
    i64: Type<D> + for<'r> Decode<'r, D>,
    &'static str: ColumnIndex<D::Row>,
{
    let hash = hash_of_row(row)?;
    let owner = owner_from_columns(
        row.try_get::<String, _>("owner_kind")
            .map_err(column_error)?
            .as_str(),
        row.try_get("org_id").map_err(column_error)?,
        row.try_get("workspace_id").map_err(column_error)?,
        row.try_get("user_id").map_err(column_error)?,
    )?;
    let time = |column| D::time_of_row(row, column);
    let mut record = KeyRecord::new(
        row.try_get::<String, _>("id").map_err(column_error)?,
        hash,
        owner,
    )
    .with_scopes(D::scopes_of_row(row)?)
    .with_name(row.try_get::<String, _>("name").map_err(column_error)?)
    .with_created_at(time("created_at")?.unwrap_or(SystemTime::UNIX_EPOCH));
    record.prefix = row
        .try_get::<Option<String>, _>("prefix")
        .map_err(column_error)?
        .map(Into::into);
    record.expires_at = time("expires_at")?;
    record.grace_ends_at = time("grace_ends_at")?;
    record.revoked_at = time("revoked_at")?;
    record.last_used_at = time("last_used_at")?;
    record.metadata = D::metadata_of_row(row)?;
    let credits = credits_of_row::<D>(row)?.map(|(credits, _)| credits);
    record.limits = usage_limits(
        D::limits_of_row(row)?,
        credits,
        D::allowed_ips_of_row(row)?,
        D::lineage_of_row(row)?,
    )
    .map(Arc::new);
    Ok(record)
}

/// Binds the columns of `record` in the order the stores insert them: id,
/// hash, prefix, the four owner columns, scopes, name, the five times
/// (created, expires, grace ends, revoked, last used), the metadata, the
/// rate limits, the allowlist, the credits (remaining, refill amount,
/// refill interval in seconds, last refilled: at the key's creation), and
/// the limits' lineage, and the hash's version. Check the record with [`lineage_to_store`] first.
pub(crate) fn bind_key<'q, D: Dialect>(
    query: Query<'q, D, D::Arguments>,
    record: &KeyRecord,
) -> Query<'q, D, D::Arguments>
where
    for<'t> &'t str: Encode<'t, D> + Type<D>,
    for<'t> Option<&'t str>: Encode<'t, D>,
    for<'t> Option<String>: Encode<'t, D>,
    String: Type<D>,
    for<'t> Option<i64>: Encode<'t, D>,
    i64: Type<D> + for<'t> Encode<'t, D>,
    for<'t> &'t [u8]: Encode<'t, D> + Type<D>,
{
    let limits = record.limits.as_deref();
    let credits = limits.and_then(UsageLimits::credits);
    let refill = credits.and_then(Credits::refill_policy);
    let (kind, org, workspace, user) = owner_columns(&record.owner);
    let query = query
        .bind(record.id.as_str())
        .bind(record.hash.as_bytes().as_slice())
        .bind(record.prefix.as_deref())
        .bind(kind)
        .bind(org)
        .bind(workspace)
        .bind(user);
    let query = D::bind_scopes(query, &record.scopes).bind(&*record.name);
    let query = [
        Some(record.created_at),
        record.expires_at,
        record.grace_ends_at,
        record.revoked_at,
        record.last_used_at,
    ]
    .into_iter()
    .fold(query, D::bind_time)
    .bind(record.metadata.as_ref().map(KeyMetadata::as_json))
    .bind(limits.map(|limits| limits.rate_limit_set().to_string()))
    .bind(
        limits
            .and_then(UsageLimits::allowed_ips)
            .map(allowlist_to_text),
    )
    .bind(credits.map(|credits| column_count(credits.remaining())))
    .bind(refill.map(|refill| column_count(refill.amount())))
    .bind(refill.map(|refill| column_count(refill.interval().as_secs())));
    D::bind_time(query, credits.map(|_| record.created_at))
        .bind(limits.and_then(UsageLimits::lineage).map(KeyId::as_str))
        .bind(i64::from(record.hash.version()))
}

/// The longest key id a token carries (the id bound of
/// [`KeyFormat`](crate::KeyFormat)'s parser), and so the longest lineage.
pub(crate) const MAX_LINEAGE_LEN: usize = 64;

/// Whether `text` is a key id as tokens carry it: 1 to
/// [`MAX_LINEAGE_LEN`] ASCII letters, digits and `-` (the ids the stores
/// mint, and the opaque ids of legacy keys).
fn is_key_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_LINEAGE_LEN
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks, before `record` is inserted, that its limits' lineage (if any)
/// is a key id, as [`lineage_from_text`] reads it back: a store never
/// writes a record it would refuse to read. (A rotation takes the lineage
/// from the old key's id or from its own lineage, read through the same
/// check; only a key inserted behind the store's back has another id.)
pub(crate) fn lineage_to_store(record: &KeyRecord) -> Result<(), StoreError> {
    match record.limits.as_deref().and_then(UsageLimits::lineage) {
        Some(lineage) if !is_key_id(lineage.as_str()) => Err(StoreError::backend(
            "a key's limits can only be counted under a key id of 1 to 64 letters, digits and `-`",
        )),
        _ => Ok(()),
    }
}

/// A lineage read back from its text (at most one byte past
/// [`MAX_LINEAGE_LEN`], as the stores read it); text that is not a key id
/// (see migration 7) is a corrupt record, so a key's limits are never
/// counted under another id than the one it was written with.
pub(crate) fn lineage_from_text(text: Option<&str>) -> Result<Option<KeyId>, StoreError> {
    text.map(|text| {
        if is_key_id(text) {
            Ok(KeyId::from(text))
        } else {
            Err(corrupt(format!(
                "a key's limits lineage is not a key id ({} bytes)",
                text.len()
            )))
        }
    })
    .transpose()
}

/// Compares the hash of a fetched key row with `presented`, and decodes the
/// rest of the row (its scopes above all) only when they match.
fn match_key_row<Row>(
    row: Option<Row>,
    presented: &KeyHash,
    hash_of_row: fn(&Row) -> Result<KeyHash, StoreError>,
    key_from_row: fn(&Row) -> Result<KeyRecord, StoreError>,
) -> Result<KeyMatch, StoreError> {
    let stored = row.as_ref().map(hash_of_row).transpose()?;
    KeyMatch::compare_then(stored.as_ref(), presented, || match &row {
        Some(row) => key_from_row(row),
        None => Err(corrupt("a hash without its row".to_owned())),
    })
}

/// Rows as masked summaries.
pub(crate) fn summaries<Row>(
    rows: &[Row],
    key_from_row: fn(&Row) -> Result<KeyRecord, StoreError>,
) -> Result<Vec<KeySummary>, LifecycleError> {
    rows.iter()
        .map(|row| key_from_row(row).map(|record| KeySummary::from(&record)))
        .collect::<Result<_, _>>()
        .map_err(LifecycleError::from)
}

/// What the insert of a minted key came to: a unique violation means that
/// its id is taken (the id is the one unique column of `keyauth_keys`).
pub(crate) fn inserted<T>(result: Result<T, sqlx::Error>) -> Result<Insert, StoreError> {
    match result {
        Ok(_) => Ok(Insert::Done),
        Err(error)
            if error
                .as_database_error()
                .is_some_and(|error| error.is_unique_violation()) =>
        {
            Ok(Insert::IdTaken)
        }
        Err(error) => Err(StoreError::backend(error)),
    }
}

/// Where a page after `cursor` starts, as a page statement binds it: a time
/// at microseconds and an id, keys listed when `(created_at, id)` is below
/// them; `None` for the first page. A cursor between two microseconds (the
/// stores never hand one out, but its text can say so) starts at the next
/// microsecond with an empty id, which no id is below: the keys stored at or
/// before the microsecond it falls in.
pub(crate) fn page_start(cursor: Option<&PageCursor>) -> (Option<SystemTime>, &str) {
    match cursor {
        None => (None, ""),
        Some(cursor) => {
            let micros = to_micros(cursor.created_at);
            if from_micros(micros) == cursor.created_at {
                (Some(cursor.created_at), cursor.id.as_str())
            } else {
                (Some(from_micros(micros.saturating_add(1))), "")
            }
        }
    }
}

/// How many rows a page statement reads: one past the page, to tell that
/// there is a next one.
pub(crate) fn page_rows(page: &PageRequest) -> i64 {
    i64::try_from(page.limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Databases keep microseconds; so do the records the stores hand out, so
/// that a record reads back equal to what was written.
pub(crate) fn to_micros_precision(time: SystemTime) -> SystemTime {
    from_micros(to_micros(time))
}

pub(crate) fn to_micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A column that could not be read as its type: a corrupt record.
pub(crate) fn column_error(error: sqlx::Error) -> StoreError {
    corrupt(error.to_string())
}

pub(crate) fn corrupt(detail: String) -> StoreError {
    StoreError::backend(format!("unexpected data in the key store: {detail}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Asserts that a corrupt record of `issued` (an organization key of
    /// `acme`) fails closed on every read but `find_key`, which each test
    /// checks with its own expectations: the match, both listings and a
    /// page. `what` names the corruption.
    pub(crate) async fn assert_unreadable(
        store: &impl crate::store::KeyLifecycle,
        issued: &crate::store::IssuedKey,
        what: &str,
    ) {
        use crate::ids::OrgId;
        use crate::store::{KeyListing, PageRequest};
        let id = &issued.record.id;
        assert!(
            store
                .find_key_matching(id, &issued.record.hash)
                .await
                .is_err(),
            "{what:.40}: matched"
        );
        assert!(
            store.list(&Owner::org("acme")).await.is_err(),
            "{what:.40}: listed"
        );
        assert!(
            store.list_in_org(&OrgId::from("acme")).await.is_err(),
            "{what:.40}: listed in its organization"
        );
        let page = store
            .list_page(&KeyListing::org("acme"), &PageRequest::default())
            .await;
        assert!(page.is_err(), "{what:.40}: paged");
    }

    #[test]
    fn owners_round_trip_through_columns() {
        for owner in [
            Owner::org("acme"),
            Owner::workspace("acme", "docs"),
            Owner::user("ada"),
        ] {
            let (kind, org, workspace, user) = owner_columns(&owner);
            let back = owner_from_columns(
                kind,
                org.map(str::to_owned),
                workspace.map(str::to_owned),
                user.map(str::to_owned),
            )
            .unwrap();
            assert_eq!(back, owner);
        }
        assert!(owner_from_columns("user", Some("acme".into()), None, None).is_err());
        assert!(owner_from_columns("robot", None, None, None).is_err());
    }

    #[test]
    fn pages_start_at_the_cursor_or_the_next_microsecond() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_123);
        let cursor = PageCursor {
            created_at: at,
            id: KeyId::from("abc"),
        };
        assert_eq!(page_start(None), (None, ""));
        assert_eq!(page_start(Some(&cursor)), (Some(at), "abc"));
        let between = PageCursor {
            created_at: at + Duration::from_nanos(400),
            id: KeyId::from("abc"),
        };
        assert_eq!(
            page_start(Some(&between)),
            (Some(at + Duration::from_micros(1)), "")
        );
    }

    #[test]
    fn credit_bounds_are_written_out_in_sql() {
        let sound = credits_are_sound!();
        assert!(sound.contains(&format!("BETWEEN 0 AND {MAX_CREDITS}")));
        assert!(sound.contains(&format!("BETWEEN 1 AND {MAX_CREDITS}")));
        let max_seconds = crate::limit::MAX_WINDOW.as_secs();
        assert!(sound.contains(&format!("BETWEEN 1 AND {max_seconds}")));
    }

    #[test]
    fn credits_read_back_from_sound_columns_only() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read = |remaining, amount, seconds, at| {
            credits_from_columns(remaining, amount, seconds, at).map(|c| c.map(|(c, _)| c))
        };
        let credits = Credits::new(5).unwrap();
        let refill = Refill::every(10, Duration::from_secs(60)).unwrap();
        assert_eq!(read(None, None, None, None).unwrap(), None);
        assert_eq!(read(Some(5), None, None, None).unwrap(), Some(credits));
        assert_eq!(read(Some(5), None, None, Some(at)).unwrap(), Some(credits));
        assert_eq!(
            read(Some(5), Some(10), Some(60), Some(at)).unwrap(),
            Some(credits.refill(refill))
        );
        let max = i64::try_from(MAX_CREDITS).unwrap();
        assert!(read(Some(max), Some(max), Some(31_622_400), Some(at)).is_ok());
        for (remaining, amount, seconds, at) in [
            (Some(-1), None, None, None),
            (Some(max + 1), None, None, None),
            (None, Some(10), Some(60), Some(at)),
            (None, None, None, Some(at)),
            (Some(5), Some(10), None, Some(at)),
            (Some(5), None, Some(60), Some(at)),
            (Some(5), Some(10), Some(60), None),
            (Some(5), Some(0), Some(60), Some(at)),
            (Some(5), Some(max + 1), Some(60), Some(at)),
            (Some(5), Some(10), Some(0), Some(at)),
            (Some(5), Some(10), Some(-60), Some(at)),
            (Some(5), Some(10), Some(31_622_401), Some(at)),
        ] {
            assert!(
                read(remaining, amount, seconds, at).is_err(),
                "{remaining:?} {amount:?} {seconds:?} {at:?}"
            );
        }
    }

    #[test]
    fn allowlists_round_trip_through_text() {
        let allowlist = IpAllowlist::parse(["192.0.2.0/24", "2001:db8::/32"]).unwrap();
        let text = allowlist_to_text(&allowlist);
        assert_eq!(allowlist_from_text(Some(&text)).unwrap(), Some(allowlist));
        let empty = IpAllowlist::parse(std::iter::empty::<&str>()).unwrap();
        assert_eq!(allowlist_from_text(Some("")).unwrap(), Some(empty));
        assert_eq!(allowlist_from_text(None).unwrap(), None);
        // The longest valid text is read back; one byte more is not.
        let entry = format!(
            "{:>width$}",
            "10.0.0.0/8",
            width = IpAllowlist::MAX_ENTRY_BYTES
        );
        let longest = vec![entry; IpAllowlist::MAX_NETWORKS].join(",");
        assert_eq!(longest.len(), MAX_ALLOWLIST_TEXT_LEN);
        assert!(allowlist_from_text(Some(&longest)).is_ok());
        assert!(allowlist_from_text(Some(&format!(" {longest}"))).is_err());
        for corrupt in [" ", ",", "10.0.0.1/8", "192.0.2.0/24,", "nonsense"] {
            assert!(allowlist_from_text(Some(corrupt)).is_err(), "{corrupt:?}");
        }
    }

    #[test]
    fn lineages_read_back_as_key_ids_only() {
        assert_eq!(lineage_from_text(None).unwrap(), None);
        let longest = "k".repeat(MAX_LINEAGE_LEN);
        let opaque = crate::KeyFormat::opaque_key_id(&KeyHash::of("legacy"));
        for id in [
            "Xb3kP9qLm2Ts",
            "a",
            "with-dash",
            longest.as_str(),
            opaque.as_str(),
        ] {
            assert_eq!(
                lineage_from_text(Some(id)).unwrap(),
                Some(KeyId::from(id)),
                "{id:?}"
            );
        }
        let overlong = "k".repeat(MAX_LINEAGE_LEN + 1);
        for corrupt in [
            "",
            " ",
            "Xb3kP9qLm2Ts ",
            "Xb3k.P9qLm2Ts",
            "key_1",
            "k\u{e9}y",
            "a\0b",
            overlong.as_str(),
        ] {
            let error = lineage_from_text(Some(corrupt)).unwrap_err();
            let source = std::error::Error::source(&error).map(ToString::to_string);
            assert!(
                source.is_some_and(|detail| detail.contains("not a key id")),
                "{corrupt:?}"
            );
        }
    }

    #[test]
    fn a_lineage_is_written_only_if_it_reads_back() {
        let with = |lineage: &str| {
            let mut record = KeyRecord::new("new", KeyHash::of("new"), Owner::org("acme"));
            record.limits = Some(Arc::new(UsageLimits::new().with_lineage(lineage.into())));
            record
        };
        assert!(lineage_to_store(&with("Xb3kP9qLm2Ts")).is_ok());
        assert!(lineage_to_store(&with("key 1")).is_err());
        assert!(lineage_to_store(&with(&"k".repeat(MAX_LINEAGE_LEN + 1))).is_err());
        let plain = KeyRecord::new("new", KeyHash::of("new"), Owner::org("acme"));
        assert!(lineage_to_store(&plain).is_ok());
    }

    #[test]
    fn a_lineage_alone_limits_nothing() {
        let first = KeyId::from("Xb3kP9qLm2Ts");
        assert_eq!(usage_limits(None, None, None, Some(first.clone())), None);
        let limits = usage_limits(Some(UsageLimits::new()), None, None, Some(first.clone()));
        assert_eq!(limits, Some(UsageLimits::new().with_lineage(first)));
    }

    #[test]
    fn times_keep_microseconds() {
        let now = SystemTime::now();
        let stored = to_micros_precision(now);
        assert!(now.duration_since(stored).unwrap() < Duration::from_micros(1));
        assert_eq!(from_micros(to_micros(stored)), stored);
        let before_epoch = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_micros(to_micros(before_epoch)), before_epoch);
    }

    /// More keys used in an interval than the queue holds: the writer
    /// drains it when it fills, not an hour later.
    #[tokio::test]
    #[cfg(feature = "sqlite")]
    async fn a_full_queue_is_written_before_the_tick() {
        use crate::store::usage::buffer::PENDING_USES;
        let path = std::env::temp_dir().join(format!(
            "keyauth-usage-writer-{}-{}.db",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        let options = StoreOptions::default().last_used_interval(Duration::from_secs(3600));
        let core = SqlCore::<sqlx::Sqlite>::open(pool, options).await.unwrap();
        let usage = core.usage.as_ref().unwrap();
        let at = SystemTime::now();
        let keys = PENDING_USES + 100;
        for i in 0..keys {
            let id = format!("k{i}");
            let record = KeyRecord::new(id.as_str(), KeyHash::of(&id), Owner::org("acme"));
            core.record_use(&record, at);
        }
        // Full, and the uses beyond it woke the writer. (That they are
        // noted again later is a test of `usage`.)
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while usage.queued() > 0 {
            assert!(std::time::Instant::now() < deadline, "never drained");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(core);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    #[cfg(feature = "sqlite")]
    fn scopes_round_trip_through_text() {
        let scopes = Scopes::parse(["objects.read", "keys.*"]).unwrap();
        assert_eq!(scopes_from_text(&scopes_to_text(&scopes)).unwrap(), scopes);
        assert!(scopes_from_text("").unwrap().is_empty());
        assert!(scopes_from_text("a\"b").is_err());
    }
}
