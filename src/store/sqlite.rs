//! [`SqliteStore`]: keys in a SQLite database (feature `sqlite`).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow,
};
use sqlx::{Row, Sqlite, SqliteConnection};

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
    corrupt, counts_usable_keys, credits_are_sound, dialect_migrations, from_micros,
    hand_over_credits, inserted, key_from_row, limits_from_text, lineage_from_text,
    lineage_to_store, metadata_from_text, migrate, owner_ids, page_rows, page_start,
    per_owner_kind, pool_options, scopes_from_text, scopes_to_text, summaries, to_micros,
    to_micros_precision,
};
use crate::store::{CreditSpend, KeyMatch, KeyStore, StoreError, StoreOptions};

/// A stored list of scopes, read as bytes (`substr` on text would count
/// characters through the whole value) and only up to one byte past the
/// longest valid list (`MAX_SCOPE_TEXT_READ`), so a corrupt row costs no more
/// to refuse than a valid one costs to read.
macro_rules! scopes_read {
    () => {
        "substr(CAST(scopes AS BLOB), 1, 33025)"
    };
}

/// Stored metadata, read as bytes like scopes and only up to one byte past
/// the largest valid value (`MAX_METADATA_READ`), so an overlong value is
/// refused without being read whole. (`substr` makes NULL of an empty
/// value, which is not an object either: it reads back as empty.)
macro_rules! metadata_read {
    () => {
        "coalesce(substr(CAST(metadata AS BLOB), 1, 4097),
                  CASE WHEN metadata IS NOT NULL THEN X'' END)"
    };
}

/// Stored rate limits, read as bytes like metadata and only up to one byte
/// past the longest valid text (`MAX_LIMITS_READ`); an empty value reads
/// back as empty, as with metadata.
macro_rules! limits_read {
    () => {
        "coalesce(substr(CAST(rate_limits AS BLOB), 1, 513),
                  CASE WHEN rate_limits IS NOT NULL THEN X'' END)"
    };
}

/// A stored allowlist, read as bytes like metadata and only up to one byte
/// past the longest valid text (`MAX_ALLOWLIST_READ`); an empty value (an
/// empty allowlist) reads back as empty, as with metadata.
macro_rules! allowlist_read {
    () => {
        "coalesce(substr(CAST(allowed_ips AS BLOB), 1, 4160),
                  CASE WHEN allowed_ips IS NOT NULL THEN X'' END)"
    };
}

/// A stored lineage, read as bytes like metadata and only up to one byte
/// past the longest key id (`MAX_LINEAGE_READ`); an empty value (not a key
/// id) reads back as empty, as with metadata.
macro_rules! lineage_read {
    () => {
        "coalesce(substr(CAST(limits_lineage AS BLOB), 1, 65),
                  CASE WHEN limits_lineage IS NOT NULL THEN X'' END)"
    };
}

/// The credit columns of a key.
macro_rules! credit_columns {
    () => {
        "credits_remaining, credits_refill_amount, credits_refill_interval_seconds,
         credits_refilled_at"
    };
}

/// The columns of a key, its scopes last.
macro_rules! key_columns {
    ($scopes:expr) => {
        concat!(
            "id, hash, hash_version, prefix, owner_kind, org_id, workspace_id, user_id, name, created_at,
             expires_at, grace_ends_at, revoked_at, last_used_at, ",
            metadata_read!(),
            " AS metadata, ",
            limits_read!(),
            " AS rate_limits, ",
            allowlist_read!(),
            " AS allowed_ips, ",
            lineage_read!(),
            " AS limits_lineage, ",
            credit_columns!(),
            ", ",
            $scopes,
            " AS scopes"
        )
    };
}

/// Whether a refill of the key row's credits is due at `?2` (microseconds;
/// the row's credits are sound, see `credits_are_sound!`).
macro_rules! refill_due {
    () => {
        "credits_refill_amount IS NOT NULL
         AND ?2 - credits_refilled_at >= credits_refill_interval_seconds * 1000000"
    };
}

/// The key row's credits at `?2`, a due refill applied.
macro_rules! credits_at_now {
    () => {
        concat!(
            "(CASE WHEN ",
            refill_due!(),
            " THEN credits_refill_amount ELSE credits_remaining END)"
        )
    };
}

/// Spends `?3` credits of the key of id `?1` at `?2` (see
/// [`Dialect::SPEND_CREDITS`]). A due refill moves the refill clock to the
/// start of the interval `?2` falls in, counted from the last refill.
/// (SQLite's columns take any value: only integers are sound here.)
const SPEND_CREDITS: &str = concat!(
    "UPDATE keyauth_keys
     SET credits_remaining = ",
    credits_at_now!(),
    " - ?3,
         credits_refilled_at = CASE WHEN ",
    refill_due!(),
    " THEN ?2 - (?2 - credits_refilled_at) % (credits_refill_interval_seconds * 1000000)
           ELSE credits_refilled_at END
     WHERE id = ?1
       AND typeof(credits_remaining) = 'integer'
       AND typeof(credits_refill_amount) IN ('integer', 'null')
       AND typeof(credits_refill_interval_seconds) IN ('integer', 'null')
       AND typeof(credits_refilled_at) IN ('integer', 'null')
       AND ",
    credits_are_sound!(),
    " AND ",
    credits_at_now!(),
    " >= ?3
     RETURNING credits_remaining"
);

/// The credit columns of the key of id `?1`.
const SELECT_CREDITS: &str = concat!(
    "SELECT ",
    credit_columns!(),
    " FROM keyauth_keys WHERE id = ?1"
);

/// A rotated key's (`?2`) credits handed over to its successor (`?1`):
/// the successor takes the refill clock, the old key keeps no credits.
const HAND_OVER_CREDITS: [&str; 2] = [
    "UPDATE keyauth_keys
     SET credits_refilled_at = (SELECT credits_refilled_at FROM keyauth_keys WHERE id = ?2)
     WHERE id = ?1 AND credits_remaining IS NOT NULL",
    "UPDATE keyauth_keys
     SET credits_remaining = 0, credits_refill_amount = NULL,
         credits_refill_interval_seconds = NULL, credits_refilled_at = NULL
     WHERE id = ?2 AND id <> ?1 AND credits_remaining IS NOT NULL",
];

#[cfg(test)]
const KEY_COLUMNS: &str = key_columns!(scopes_read!());

/// One key by its id (`?1`).
const SELECT_KEY_BY_ID: &str = concat!(
    "SELECT ",
    key_columns!(scopes_read!()),
    " FROM keyauth_keys WHERE id = ?1"
);

/// One key, for a presented hash (`?2`): its scopes are read only when the
/// stored hash equals it, so a forged token never pays for reading a long
/// list. The decision stays the constant-time comparison in Rust; the
/// `=` only spares the read (it compares SHA-256 outputs, which a database
/// copy reveals anyway, never a secret).
const SELECT_KEY_MATCHING: &str = concat!(
    "SELECT ",
    key_columns!(concat!(
        "CASE WHEN hash = ?2 OR hash_version <> ?3 THEN ",
        scopes_read!(),
        " END"
    )),
    " FROM keyauth_keys WHERE id = ?1"
);

/// Whether the key of id `?1` exists.
const KEY_EXISTS: &str = "SELECT 1 FROM keyauth_keys WHERE id = ?1";

/// Revokes the key of id `?1` at `?2`, unless it is revoked already.
const REVOKE_BY_ID: &str =
    "UPDATE keyauth_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL";

/// What becomes of a rotated key (id `?1`): revoked at `?2`, or usable
/// until `?2`.
const RETIRE_REVOKE: &str = "UPDATE keyauth_keys SET revoked_at = ?2 WHERE id = ?1";
const RETIRE_GRACE: &str = "UPDATE keyauth_keys SET grace_ends_at = ?2 WHERE id = ?1";

/// The owner's (`?2`, `?3`) usable keys at `?1`: what a limit counts.
const COUNT_USABLE: PerOwnerKind = per_owner_kind!(
    "SELECT COUNT(*) FROM keyauth_keys WHERE ",
    "?2",
    "?3",
    " AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > ?1)
      AND (grace_ends_at IS NULL OR grace_ends_at > ?1)"
);

/// Revokes at `?1` the owner's (`?2`, `?3`) keys not revoked yet.
const REVOKE_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    "UPDATE keyauth_keys SET revoked_at = ?1 WHERE ",
    "?2",
    "?3",
    " AND revoked_at IS NULL"
);

/// The owner's (`?1`, `?2`) keys, oldest first.
const LIST_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    concat!(
        "SELECT ",
        key_columns!(scopes_read!()),
        " FROM keyauth_keys WHERE "
    ),
    "?1",
    "?2",
    " ORDER BY created_at, id"
);

/// The keys of the organization `?1` and of its workspaces, oldest first.
const LIST_ORG_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(scopes_read!()),
    " FROM keyauth_keys
     WHERE org_id = ?1 AND owner_kind IN ('organization', 'workspace')
     ORDER BY created_at, id"
);

/// A page of the owner's (`?4`, `?5`) keys, newest first: at most `?3`
/// after the time `?1` and the id `?2` (all when `?1` is NULL).
const PAGE_OWNER_KEYS: PerOwnerKind = per_owner_kind!(
    concat!(
        "SELECT ",
        key_columns!(scopes_read!()),
        " FROM keyauth_keys WHERE "
    ),
    "?4",
    "?5",
    " AND (?1 IS NULL OR created_at < ?1 OR (created_at = ?1 AND id < ?2))
     ORDER BY created_at DESC, id DESC LIMIT ?3"
);

/// A page of the keys of the organization `?4` and of its workspaces, as
/// [`PAGE_OWNER_KEYS`].
const PAGE_ORG_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(scopes_read!()),
    " FROM keyauth_keys
     WHERE org_id = ?4 AND owner_kind IN ('organization', 'workspace')
       AND (?1 IS NULL OR created_at < ?1 OR (created_at = ?1 AND id < ?2))
     ORDER BY created_at DESC, id DESC LIMIT ?3"
);

/// How much of a stored list of scopes is read: one byte more than the
/// longest valid list, written out in `scopes_read!`.
#[cfg(test)]
const MAX_SCOPE_TEXT_READ: usize = 33025;

/// How much of stored metadata is read: one byte more than the largest
/// valid value, written out in `metadata_read!`.
#[cfg(test)]
const MAX_METADATA_READ: usize = 4097;

/// How much of stored rate limits is read: one byte more than the longest
/// valid text, written out in `limits_read!`.
#[cfg(test)]
const MAX_LIMITS_READ: usize = 513;

/// How much of a stored allowlist is read: one byte more than the longest
/// valid text, written out in `allowlist_read!`.
#[cfg(test)]
const MAX_ALLOWLIST_READ: usize = 4160;

/// How much of a stored lineage is read: one byte more than the longest
/// key id, written out in `lineage_read!`.
#[cfg(test)]
const MAX_LINEAGE_READ: usize = 65;

/// Keys and memberships in SQLite, through a sqlx connection pool.
///
/// The constructors create the tables (`keyauth_keys`,
/// `keyauth_memberships`) through embedded migrations, recorded in
/// `keyauth_migrations`, so they never clash with your own migrations.
/// Several processes may share one database file (WAL mode); each sees the
/// others' revocations on its next lookup.
///
/// Alone, it answers every authenticated request with a query. Put it
/// behind a [`CachedStore`](crate::store::CachedStore) (feature `cache`), as
/// below and as the quickstart does, so that a request reads its key from
/// memory. A key revoked through that cache is refused on its next request;
/// SQLite cannot announce changes, so another process sharing the file
/// refuses it once the cache's positive TTL has passed
/// ([`CacheOptions::positive_ttl`](crate::store::CacheOptions::positive_ttl),
/// 30 s by default, counted from the end of the lookup that cached the key).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_keyauth::{KeyAuthLayer, KeyLifecycle, NewKey};
/// use tower_keyauth::store::{CachedStore, SqliteStore};
///
/// # let dir = std::env::temp_dir().join(format!("keyauth-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let path = dir.join("keys.db");
/// let url = format!("sqlite://{}", path.display());
/// let store = CachedStore::new(SqliteStore::connect(&url).await?);
/// let issued = store.issue(NewKey::org("acme")).await?; // issue and revoke through the cache
/// let layer = KeyAuthLayer::new(store.clone());
/// # let _ = (issued, layer);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<SqlCore<Sqlite>>,
}

impl Dialect for Sqlite {
    const MIGRATIONS: &'static [Migration] = dialect_migrations!("sqlite");
    const MIGRATIONS_RECORDED: &'static str = "SELECT EXISTS (
        SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keyauth_migrations'
    )";
    const CREATE_MIGRATIONS_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS keyauth_migrations (
        version INTEGER PRIMARY KEY NOT NULL,
        description TEXT NOT NULL,
        applied_at INTEGER NOT NULL
    )";
    const APPLIED_VERSION: &'static str =
        "SELECT COALESCE(MAX(version), 0) FROM keyauth_migrations";
    /// Takes the write lock at once: reading and then writing in the
    /// transaction cannot interleave with another writer (and cannot fail to
    /// upgrade a read lock).
    const SELECT_KEY_MATCHING: &'static str = SELECT_KEY_MATCHING;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const SPEND_CREDITS: &'static str = SPEND_CREDITS;
    const SELECT_CREDITS: &'static str = SELECT_CREDITS;
    const HAND_OVER_CREDITS: [&'static str; 2] = HAND_OVER_CREDITS;

    fn record_migration(migration: &Migration) -> Query<'static, Sqlite, SqliteArguments> {
        sqlx::query(
            "INSERT INTO keyauth_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(to_micros(SystemTime::now()))
    }

    fn time_of_row(row: &SqliteRow, column: &str) -> Result<Option<SystemTime>, StoreError> {
        let micros: Option<i64> = row.try_get(column).map_err(column_error)?;
        Ok(micros.map(from_micros))
    }

    fn bind_time<'q>(
        query: Query<'q, Sqlite, SqliteArguments>,
        at: Option<SystemTime>,
    ) -> Query<'q, Sqlite, SqliteArguments> {
        query.bind(at.map(to_micros))
    }

    /// Text, read as bytes (see `scopes_read!`).
    fn scopes_of_row(row: &SqliteRow) -> Result<Scopes, StoreError> {
        scopes_from_bytes(row.try_get("scopes").map_err(column_error)?)
    }

    /// Text, read as bytes (see `metadata_read!`).
    fn metadata_of_row(row: &SqliteRow) -> Result<Option<KeyMetadata>, StoreError> {
        let bytes: Option<&[u8]> = row.try_get("metadata").map_err(column_error)?;
        let text = bytes
            .map(std::str::from_utf8)
            .transpose()
            .map_err(|_| corrupt("key metadata is not UTF-8".to_owned()))?;
        metadata_from_text(text)
    }

    /// Text, read as bytes (see `limits_read!`).
    fn limits_of_row(row: &SqliteRow) -> Result<Option<UsageLimits>, StoreError> {
        let bytes: Option<&[u8]> = row.try_get("rate_limits").map_err(column_error)?;
        let text = bytes
            .map(std::str::from_utf8)
            .transpose()
            .map_err(|_| corrupt("key rate limits are not UTF-8".to_owned()))?;
        limits_from_text(text)
    }

    /// Text, read as bytes (see `allowlist_read!`).
    fn allowed_ips_of_row(row: &SqliteRow) -> Result<Option<IpAllowlist>, StoreError> {
        let bytes: Option<&[u8]> = row.try_get("allowed_ips").map_err(column_error)?;
        let text = bytes
            .map(std::str::from_utf8)
            .transpose()
            .map_err(|_| corrupt("a key's IP allowlist is not UTF-8".to_owned()))?;
        allowlist_from_text(text)
    }

    /// Text, read as bytes (see `lineage_read!`).
    fn lineage_of_row(row: &SqliteRow) -> Result<Option<KeyId>, StoreError> {
        let bytes: Option<&[u8]> = row.try_get("limits_lineage").map_err(column_error)?;
        let text = bytes
            .map(std::str::from_utf8)
            .transpose()
            .map_err(|_| corrupt("a key's limits lineage is not UTF-8".to_owned()))?;
        lineage_from_text(text)
    }

    fn bind_scopes<'q>(
        query: Query<'q, Sqlite, SqliteArguments>,
        scopes: &Scopes,
    ) -> Query<'q, Sqlite, SqliteArguments> {
        query.bind(scopes_to_text(scopes))
    }

    async fn write_uses(pool: &SqlitePool, uses: &[(KeyId, SystemTime)]) -> Result<(), StoreError> {
        let mut tx = pool.begin().await.map_err(StoreError::backend)?;
        for (id, at) in uses {
            sqlx::query(
                "UPDATE keyauth_keys SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )
            .bind(id.as_str())
            .bind(to_micros(*at))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        }
        tx.commit().await.map_err(StoreError::backend)
    }
}

/// Scopes read back from their bytes (text, as stored).
fn scopes_from_bytes(bytes: &[u8]) -> Result<Scopes, StoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| corrupt("a list of scopes is not UTF-8".to_owned()))?;
    scopes_from_text(text)
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, such as
    /// `sqlite://keys.db` or `sqlite:///var/lib/app/keys.db`, and migrates
    /// it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Like [`connect`](Self::connect), with options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = pool_options(8)
            .connect_with(connect)
            .await
            .map_err(StoreError::backend)?;
        Self::from_pool(pool, options).await
    }

    /// Uses an existing pool (migrating its database).
    pub async fn from_pool(pool: SqlitePool, options: StoreOptions) -> Result<Self, StoreError> {
        let inner = SqlCore::open(pool, options).await?;
        Ok(Self { inner })
    }

    /// Applies the embedded migrations that `pool`'s database lacks. The
    /// constructors call it; call it yourself to migrate ahead of time.
    ///
    /// An up-to-date database is only read.
    pub async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
        migrate(pool).await
    }

    /// The pool, for your own queries.
    pub fn pool(&self) -> &SqlitePool {
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

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as("SqliteStore", f)
    }
}

async fn fetch_key_row(
    connection: &mut SqliteConnection,
    id: &KeyId,
) -> Result<Option<SqliteRow>, StoreError> {
    sqlx::query(SELECT_KEY_BY_ID)
        .bind(id.as_str())
        .fetch_optional(connection)
        .await
        .map_err(StoreError::backend)
}

async fn fetch_key(
    connection: &mut SqliteConnection,
    id: &KeyId,
) -> Result<Option<KeyRecord>, StoreError> {
    let row = fetch_key_row(connection, id).await?;
    row.as_ref().map(key_from_row::<Sqlite>).transpose()
}

impl InsertMinted for SqliteConnection {
    async fn insert_minted(&mut self, record: &KeyRecord) -> Result<Insert, StoreError> {
        lineage_to_store(record)?;
        let insert = sqlx::query(
            "INSERT INTO keyauth_keys (id, hash, prefix, owner_kind, org_id, workspace_id, user_id,
                                       scopes, name, created_at, expires_at, grace_ends_at,
                                       revoked_at, last_used_at, metadata, rate_limits,
                                       allowed_ips, credits_remaining, credits_refill_amount,
                                       credits_refill_interval_seconds, credits_refilled_at,
                                       limits_lineage, hash_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
        );
        let result = bind_key(insert, record).execute(self).await;
        inserted(result)
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        fetch_key(&mut *self.inner.acquire().await?, id).await
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
        let scopes: Option<Vec<u8>> = sqlx::query_scalar(concat!(
            "SELECT ",
            scopes_read!(),
            " FROM keyauth_memberships WHERE user_id = ?1 AND org_id = ?2"
        ))
        .bind(user.as_str())
        .bind(org.as_str())
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(StoreError::backend)?;
        scopes
            .map(|bytes| scopes_from_bytes(&bytes).map(Membership::new))
            .transpose()
    }

    /// One conditional `UPDATE` (SQLite runs one writer at a time), then,
    /// only when it changed nothing, one read.
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

/// Re-hashes the key of id `?1` (hash `?4`, version `?5`), only while
/// its hash is still `?2` of version `?3`.
const REHASH: &str = "UPDATE keyauth_keys SET hash = ?4, hash_version = ?5
                      WHERE id = ?1 AND hash = ?2 AND hash_version = ?3";

#[async_trait]
impl KeyLifecycle for SqliteStore {
    async fn issue(&self, new_key: NewKey) -> Result<IssuedKey, LifecycleError> {
        storable(&new_key.scopes)?;
        let options = &self.inner.options;
        let mut tx = self.inner.begin().await?;
        // The time is read once the lock is held, so it is never earlier
        // than a change another writer made before us.
        let now = to_micros_precision(options.now());
        let policy = new_key.policy.unwrap_or(options.policy);
        let owner = &new_key.owner;
        let usable = if counts_usable_keys(policy) {
            let query = sqlx::query_scalar(COUNT_USABLE.of(owner)).bind(to_micros(now));
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
            let query = sqlx::query(REVOKE_OWNER_KEYS.of(owner)).bind(to_micros(now));
            owner_ids(owner)
                .fold(query, |query, id| query.bind(id))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
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
        summaries(&rows, key_from_row::<Sqlite>)
    }

    async fn list_in_org(&self, org: &OrgId) -> Result<Vec<KeySummary>, LifecycleError> {
        let rows = sqlx::query(LIST_ORG_KEYS)
            .bind(org.as_str())
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        summaries(&rows, key_from_row::<Sqlite>)
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
            .bind(after.map(to_micros))
            .bind(after_id)
            .bind(page_rows(page));
        let rows = ids
            .into_iter()
            .fold(query, |query, id| query.bind(id))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(page.page_of_newest_first(summaries(&rows, key_from_row::<Sqlite>)?))
    }

    async fn revoke(&self, id: &KeyId) -> Result<(), LifecycleError> {
        let now = to_micros(self.inner.options.now());
        let mut tx = self.inner.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar(KEY_EXISTS)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        if exists.is_none() {
            return Err(LifecycleError::NotFound(id.clone()));
        }
        sqlx::query(REVOKE_BY_ID)
            .bind(id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
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
        let now = to_micros_precision(options.now());
        let old = fetch_key(&mut tx, id)
            .await?
            .ok_or_else(|| LifecycleError::NotFound(id.clone()))?;
        let plan = plan_rotation(&old, &options.format, rotation, now)?;
        let issued = self
            .inner
            .mint_and_insert(&mut *tx, plan.successor, now)
            .await?;
        if old
            .limits
            .as_deref()
            .and_then(UsageLimits::credits)
            .is_some()
        {
            hand_over_credits::<Sqlite>(&mut tx, id, &issued.record.id).await?;
        }
        let (retire, at) = match plan.old_key {
            OldKey::Revoke => (RETIRE_REVOKE, now),
            OldKey::GraceEndsAt(at) => (RETIRE_GRACE, at),
        };
        sqlx::query(retire)
            .bind(id.as_str())
            .bind(to_micros(at))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
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
        let query = match &membership {
            Some(membership) => sqlx::query(
                "INSERT INTO keyauth_memberships (user_id, org_id, scopes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, org_id) DO UPDATE SET scopes = excluded.scopes",
            )
            .bind(user.as_str())
            .bind(org.as_str())
            .bind(scopes_to_text(&membership.scopes)),
            None => {
                sqlx::query("DELETE FROM keyauth_memberships WHERE user_id = ?1 AND org_id = ?2")
                    .bind(user.as_str())
                    .bind(org.as_str())
            }
        };
        query
            .execute(&self.inner.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// A value bound to a statement under test.
    enum Arg {
        Micros(i64),
        Text(&'static str),
    }

    /// A statement the stores run on one owner or one key, with arguments
    /// as the store binds them, and how SQLite must find its rows: through
    /// `index`, searching on `search` (as `EXPLAIN QUERY PLAN` prints it).
    struct Hot {
        what: String,
        sql: &'static str,
        args: Vec<Arg>,
        index: &'static str,
        search: &'static str,
    }

    /// Every statement of issue, rotate, revoke, list and list_in_org that
    /// selects or updates keys, and the lookups by id.
    fn hot_statements() -> Vec<Hot> {
        const BY_ORG: &str = "keyauth_keys_by_org_owner";
        const BY_USER: &str = "keyauth_keys_by_user_owner";
        const BY_ID: &str = "sqlite_autoindex_keyauth_keys_1";
        let now = Arg::Micros(to_micros(SystemTime::now()));
        let mut hot = Vec::new();
        let owners = [
            (
                Owner::org("org-7"),
                vec!["org-7"],
                BY_ORG,
                "(org_id=? AND workspace_id=? AND revoked_at=?)",
                "(org_id=? AND workspace_id=?)",
            ),
            (
                Owner::workspace("org-7", "ws-7"),
                vec!["org-7", "ws-7"],
                BY_ORG,
                "(org_id=? AND workspace_id=? AND revoked_at=?)",
                "(org_id=? AND workspace_id=?)",
            ),
            (
                Owner::user("user-7"),
                vec!["user-7"],
                BY_USER,
                "(user_id=? AND revoked_at=?)",
                "(user_id=?)",
            ),
        ];
        for (owner, ids, index, usable, all) in owners {
            let with_now = |ids: &[&'static str]| {
                let mut args = vec![Arg::Micros(to_micros(SystemTime::now()))];
                args.extend(ids.iter().map(|id| Arg::Text(id)));
                args
            };
            let owner_args = || ids.iter().map(|id| Arg::Text(id)).collect::<Vec<_>>();
            hot.push(Hot {
                what: format!("issue: count the usable keys of {owner}"),
                sql: COUNT_USABLE.of(&owner),
                args: with_now(&ids),
                index,
                search: usable,
            });
            hot.push(Hot {
                what: format!("issue: revoke the other keys of {owner}"),
                sql: REVOKE_OWNER_KEYS.of(&owner),
                args: with_now(&ids),
                index,
                search: usable,
            });
            hot.push(Hot {
                what: format!("list the keys of {owner}"),
                sql: LIST_OWNER_KEYS.of(&owner),
                args: owner_args(),
                index,
                search: all,
            });
            let mut page_args = vec![
                Arg::Micros(to_micros(SystemTime::now())),
                Arg::Text("key00042"),
                Arg::Micros(21),
            ];
            page_args.extend(owner_args());
            hot.push(Hot {
                what: format!("a page of the keys of {owner}"),
                sql: PAGE_OWNER_KEYS.of(&owner),
                args: page_args,
                index,
                search: all,
            });
        }
        hot.push(Hot {
            what: "list_in_org".to_owned(),
            sql: LIST_ORG_KEYS,
            args: vec![Arg::Text("org-7")],
            index: BY_ORG,
            search: "(org_id=?)",
        });
        hot.push(Hot {
            what: "a page of list_in_org".to_owned(),
            sql: PAGE_ORG_KEYS,
            args: vec![
                Arg::Micros(to_micros(SystemTime::now())),
                Arg::Text("key00042"),
                Arg::Micros(21),
                Arg::Text("org-7"),
            ],
            index: BY_ORG,
            search: "(org_id=?)",
        });
        let by_id = [
            ("find_key", SELECT_KEY_BY_ID, vec![Arg::Text("key00042")]),
            (
                "find_key_matching",
                SELECT_KEY_MATCHING,
                vec![Arg::Text("key00042"), Arg::Text("hash"), Arg::Micros(2)],
            ),
            (
                "revoke: does the key exist",
                KEY_EXISTS,
                vec![Arg::Text("key00042")],
            ),
            ("revoke", REVOKE_BY_ID, vec![Arg::Text("key00042"), now]),
            (
                "rotate: revoke the old key",
                RETIRE_REVOKE,
                vec![Arg::Text("key00042"), Arg::Micros(0)],
            ),
            (
                "rotate: end the old key's grace",
                RETIRE_GRACE,
                vec![Arg::Text("key00042"), Arg::Micros(0)],
            ),
        ];
        for (what, sql, args) in by_id {
            hot.push(Hot {
                what: what.to_owned(),
                sql,
                args,
                index: BY_ID,
                search: "(id=?)",
            });
        }
        hot
    }

    /// The lines of `EXPLAIN QUERY PLAN` for `hot`.
    async fn plan_of(connection: &mut SqliteConnection, hot: &Hot) -> Vec<String> {
        let explain = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            hot.sql
        )));
        let rows = hot
            .args
            .iter()
            .fold(explain, |query, arg| match arg {
                Arg::Micros(micros) => query.bind(*micros),
                Arg::Text(text) => query.bind(*text),
            })
            .fetch_all(connection)
            .await
            .unwrap();
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    /// Asserts that every statement of [`hot_statements`] searches its own
    /// index, on all the columns it names, and scans nothing.
    async fn assert_plans(connection: &mut SqliteConnection, when: &str) {
        for hot in hot_statements() {
            let plan = plan_of(connection, &hot).await;
            let shown = plan.join("\n");
            assert!(
                !plan.iter().any(|line| line.starts_with("SCAN")),
                "{when}, {}: a full scan\n{shown}",
                hot.what
            );
            let searches: Vec<&String> = plan
                .iter()
                .filter(|line| line.starts_with("SEARCH keyauth_keys"))
                .collect();
            let expected = [
                format!(
                    "SEARCH keyauth_keys USING INDEX {} {}",
                    hot.index, hot.search
                ),
                format!(
                    "SEARCH keyauth_keys USING COVERING INDEX {} {}",
                    hot.index, hot.search
                ),
            ];
            assert!(
                !searches.is_empty() && searches.iter().all(|line| expected.contains(line)),
                "{when}, {}: expected {:?}, got\n{shown}",
                hot.what,
                expected[0]
            );
        }
    }

    /// 6 000 keys, 10 for each of 200 organizations, 200 workspaces and
    /// 200 users, a fifth of them revoked: the statements find an owner's
    /// keys through its index, before `ANALYZE` (which applications rarely
    /// run on SQLite) and after.
    #[tokio::test]
    async fn statements_on_one_owner_or_key_search_its_index() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        let mut connection = store.pool().acquire().await.unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 5999)
             INSERT INTO keyauth_keys (id, hash, owner_kind, org_id, workspace_id, user_id,
                                       scopes, created_at, revoked_at)
             SELECT printf('key%05d', i), randomblob(32),
                    CASE i % 3 WHEN 0 THEN 'organization' WHEN 1 THEN 'workspace' ELSE 'user' END,
                    CASE i % 3 WHEN 2 THEN NULL ELSE printf('org-%d', i / 30) END,
                    CASE i % 3 WHEN 1 THEN printf('ws-%d', i / 30) END,
                    CASE i % 3 WHEN 2 THEN printf('user-%d', i / 30) END,
                    '*', i, CASE WHEN i % 5 = 0 THEN i END
             FROM n",
        )
        .execute(&mut *connection)
        .await
        .unwrap();
        assert_plans(&mut connection, "before ANALYZE").await;
        sqlx::query("ANALYZE")
            .execute(&mut *connection)
            .await
            .unwrap();
        assert_plans(&mut connection, "after ANALYZE").await;
    }

    #[test]
    fn scope_lists_are_read_just_past_their_bound() {
        assert_eq!(MAX_SCOPE_TEXT_READ, crate::scope::MAX_TEXT_LEN + 1);
        let read = format!("substr(CAST(scopes AS BLOB), 1, {MAX_SCOPE_TEXT_READ})");
        assert!(KEY_COLUMNS.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&format!(
            "CASE WHEN hash = ?2 OR hash_version <> ?3 THEN {read} END"
        )));
    }

    #[test]
    fn metadata_is_read_just_past_its_bound() {
        assert_eq!(MAX_METADATA_READ, KeyMetadata::MAX_BYTES + 1);
        let read = format!("substr(CAST(metadata AS BLOB), 1, {MAX_METADATA_READ})");
        assert!(KEY_COLUMNS.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
        assert!(KEY_COLUMNS.contains(" END) AS metadata"));
    }

    #[test]
    fn rate_limits_are_read_just_past_their_bound() {
        assert_eq!(MAX_LIMITS_READ, crate::limit::RateLimits::MAX_TEXT_LEN + 1);
        let read = format!("substr(CAST(rate_limits AS BLOB), 1, {MAX_LIMITS_READ})");
        assert!(KEY_COLUMNS.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
        assert!(KEY_COLUMNS.contains(" END) AS rate_limits"));
    }

    #[test]
    fn allowlists_are_read_just_past_their_bound() {
        assert_eq!(
            MAX_ALLOWLIST_READ,
            crate::store::sql::MAX_ALLOWLIST_TEXT_LEN + 1
        );
        let read = format!("substr(CAST(allowed_ips AS BLOB), 1, {MAX_ALLOWLIST_READ})");
        assert!(KEY_COLUMNS.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
        assert!(KEY_COLUMNS.contains(" END) AS allowed_ips"));
    }

    #[test]
    fn lineages_are_read_just_past_their_bound() {
        assert_eq!(MAX_LINEAGE_READ, crate::store::sql::MAX_LINEAGE_LEN + 1);
        let read = format!("substr(CAST(limits_lineage AS BLOB), 1, {MAX_LINEAGE_READ})");
        assert!(KEY_COLUMNS.contains(&read));
        assert!(SELECT_KEY_MATCHING.contains(&read));
        assert!(KEY_COLUMNS.contains(" END) AS limits_lineage"));
    }

    /// A stored lineage that is not a key id is a corrupt record: reading
    /// the key, listing it or rotating it fails, so its limits are never
    /// counted under another id; the error names no secret. A lineage
    /// that is not a key id is never written.
    #[tokio::test]
    async fn corrupt_lineages_fail_closed() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
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
        let id = issued.record.id.as_str();
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
        let corruptions = [
            "''".to_owned(),
            "' '".to_owned(),
            "'key 1'".to_owned(),
            "'key_1'".to_owned(),
            format!("'{} '", first.record.id),
            format!("'{overlong}'"),
            format!("'{huge}'"),
            "CAST(X'6B65FF31' AS TEXT)".to_owned(),
        ];
        for corruption in &corruptions {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE keyauth_keys SET limits_lineage = {corruption} WHERE id = ?1"
            )))
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
            let what: String = corruption.chars().take(20).collect();
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
        // A key id again: read back, and what a further successor keeps.
        sqlx::query("UPDATE keyauth_keys SET limits_lineage = 'Other-key-1' WHERE id = ?1")
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(lineage(&found), Some(KeyId::from("Other-key-1")));
        // A key id on a key without limits means nothing; any other value
        // is corrupt there too.
        let plain = store.issue(NewKey::org("globex")).await.unwrap();
        for (stored, readable) in [("Xb3kP9qLm2Ts", true), ("not an id", false)] {
            sqlx::query("UPDATE keyauth_keys SET limits_lineage = ?1 WHERE id = ?2")
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
    }

    /// Stored credits or allowlists out of their bounds, or inconsistent,
    /// are a corrupt record: reading the key, listing it or rotating it
    /// fails, and a spend changes nothing and fails.
    #[tokio::test]
    async fn corrupt_credits_and_allowlists_fail_closed() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
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
                            credits_refill_interval_seconds = 60, credits_refilled_at = 0
                     WHERE id = ?1";
        let overlong = format!("{}192.0.2.0/24", " ".repeat(4200));
        let not_utf8 = "CAST(X'3139322EFF' AS TEXT)";
        let corruptions = [
            "allowed_ips = '192.0.2.1/24'".to_owned(),
            "allowed_ips = '192.0.2.0/24,'".to_owned(),
            "allowed_ips = ' '".to_owned(),
            format!("allowed_ips = '{overlong}'"),
            format!("allowed_ips = {not_utf8}"),
            "credits_remaining = -1".to_owned(),
            "credits_remaining = 1000000000000001".to_owned(),
            "credits_remaining = 'five'".to_owned(),
            "credits_remaining = 2.5".to_owned(),
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
                "UPDATE keyauth_keys SET {corruption} WHERE id = ?1"
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
                let before: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT CAST(credits_remaining AS BLOB) FROM keyauth_keys WHERE id = ?1",
                )
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert!(
                    store.spend_credits(&issued.record.id, 1).await.is_err(),
                    "{what}"
                );
                let after: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT CAST(credits_remaining AS BLOB) FROM keyauth_keys WHERE id = ?1",
                )
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert_eq!(before, after, "{what}: a corrupt row is not spent");
            }
        }
        // Sound again: read back and spent.
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
    }

    #[tokio::test]
    async fn an_insert_under_a_taken_id_changes_nothing() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        let mut connection = store.pool().acquire().await.unwrap();
        let twin = KeyRecord::new(
            issued.record.id.clone(),
            KeyHash::of("twin"),
            Owner::org("globex"),
        );
        assert_eq!(
            connection.insert_minted(&twin).await.unwrap(),
            Insert::IdTaken
        );
        let other = KeyRecord::new("other", KeyHash::of("other"), Owner::org("globex"));
        assert_eq!(
            connection.insert_minted(&other).await.unwrap(),
            Insert::Done
        );
        drop(connection);
        assert_eq!(
            store.find_key(&issued.record.id).await.unwrap(),
            Some(issued.record)
        );
    }

    /// Stored metadata that is not a JSON object of at most 4096 bytes is
    /// a corrupt record: reading the key, or listing it, fails.
    #[tokio::test]
    async fn corrupt_metadata_fails_closed() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        let overlong = format!(r#"{{"notes": "{}"}}"#, "x".repeat(5000));
        for stored in ["[1, 2]", "{\"a\":", "", overlong.as_str()] {
            sqlx::query("UPDATE keyauth_keys SET metadata = ?1 WHERE id = ?2")
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
        }
        sqlx::query("UPDATE keyauth_keys SET metadata = X'7B22FF223A317D' WHERE id = ?1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        assert!(store.find_key(&issued.record.id).await.is_err());
        sqlx::query("UPDATE keyauth_keys SET metadata = '{\"a\": 1}' WHERE id = ?1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(found.metadata.unwrap().as_json(), r#"{"a": 1}"#);
    }

    /// Stored rate limits that are not the text form of valid limits are
    /// a corrupt record: reading the key, or listing it, fails; it is never
    /// handed out without its limits.
    #[tokio::test]
    async fn corrupt_rate_limits_fail_closed() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqliteStore::from_pool(pool, StoreOptions::default())
            .await
            .unwrap();
        let issued = store.issue(NewKey::org("acme")).await.unwrap();
        let overlong = format!(
            "{}q=1;w=1",
            " ".repeat(crate::limit::RateLimits::MAX_TEXT_LEN)
        );
        for stored in [
            "q=100",
            "q=0;w=60",
            "q=1;w=1, q=2;w=1",
            "1burst;q=1;w=1",
            "q=1;w=1,",
            overlong.as_str(),
        ] {
            sqlx::query("UPDATE keyauth_keys SET rate_limits = ?1 WHERE id = ?2")
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
        // Not UTF-8.
        sqlx::query("UPDATE keyauth_keys SET rate_limits = X'713DFF3B773D31' WHERE id = ?1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        assert!(store.find_key(&issued.record.id).await.is_err());
        // The empty text is no limits, kept as such.
        sqlx::query("UPDATE keyauth_keys SET rate_limits = '' WHERE id = ?1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert!(found.limits.unwrap().is_empty());
        sqlx::query("UPDATE keyauth_keys SET rate_limits = 'q=5;w=60' WHERE id = ?1")
            .bind(issued.record.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        let found = store.find_key(&issued.record.id).await.unwrap().unwrap();
        assert_eq!(
            found.limits.unwrap().rate_limit_set().to_string(),
            "q=5;w=60"
        );
    }
}
