//! What the SQL stores share: how an owner maps to columns, how times and
//! scopes are stored, the migration list, and the background writer of
//! `last_used_at`.

use std::future::Future;
use std::sync::Weak;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::format::KeyFormat;
use crate::hash::KeyHash;
use crate::ids::{OrgId, UserId, WorkspaceId};
use crate::record::{KeyRecord, Owner};
use crate::scope::Scopes;
use crate::store::lifecycle::{
    self, Insert, InsertMinted, IssuedKey, KeySummary, LifecycleError, NewKey,
};
use crate::store::{KeyMatch, StoreError};

/// A schema change, applied once, in order, inside a transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) sql: &'static str,
}

/// The newest version among `migrations`.
pub(crate) fn latest_version(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
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

/// The stored hash of a key row, read before anything else of it.
pub(crate) fn hash_of_row<R>(row: &R) -> Result<KeyHash, StoreError>
where
    R: sqlx::Row,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let hash: &[u8] = row.try_get("hash").map_err(column_error)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("a key hash is not 32 bytes".to_owned()))?;
    Ok(KeyHash::from_bytes(hash))
}

/// Compares the hash of a fetched key row with `presented`, and decodes the
/// rest of the row (its scopes above all) only when they match.
pub(crate) fn match_key_row<Row>(
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

/// Mints `new_key` and inserts it into `connection` (the loop every store
/// shares), its expiry at the database's precision so that the record
/// handed out reads back equal.
pub(crate) async fn mint_and_insert<C: InsertMinted>(
    connection: &mut C,
    format: &KeyFormat,
    mut new_key: NewKey,
    now: SystemTime,
) -> Result<IssuedKey, LifecycleError> {
    new_key.expires_at = new_key.expires_at.map(to_micros_precision);
    lifecycle::mint_and_insert(connection, format, new_key, now).await
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

/// Runs `flush` every `interval` while `owner` lives: the writer of buffered
/// `last_used_at` times. Its failures are logged, never returned to a
/// request.
pub(crate) fn spawn_usage_writer<T, F, Fut>(owner: Weak<T>, interval: Duration, flush: F)
where
    T: Send + Sync + 'static,
    F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, StoreError>> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(owner) = owner.upgrade() else {
                break;
            };
            if let Err(error) = flush(owner).await {
                tracing::warn!(error = %error, "could not write last-used times; they are kept for the next attempt");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn times_keep_microseconds() {
        let now = SystemTime::now();
        let stored = to_micros_precision(now);
        assert!(now.duration_since(stored).unwrap() < Duration::from_micros(1));
        assert_eq!(from_micros(to_micros(stored)), stored);
        let before_epoch = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(from_micros(to_micros(before_epoch)), before_epoch);
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
