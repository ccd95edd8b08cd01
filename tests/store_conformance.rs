//! The conformance suite, run against every bundled store: MemoryStore,
//! SqliteStore, and PostgresStore (on the server named by
//! `KEYAUTH_TEST_POSTGRES_URL`, which CI starts).
//!
//! A custom harness (libtest-mimic), so that without that server the
//! PostgreSQL cases show as ignored, with the reason, and are counted as
//! such in the summary instead of passing.

mod common;
// Here alone, so that an unlisted case is dead code (see the module).
#[path = "common/conformance.rs"]
mod conformance;

use async_trait::async_trait;
use common::{TempDir, fresh_postgres_schema, needs_postgres, require_postgres_url};
use conformance::{Harness, trials};
use tower_keyauth::MemoryStore;
use tower_keyauth::store::{PostgresStore, SqliteStore, StoreOptions};

/// Memory: "another instance" is a clone sharing the same map.
struct MemoryHarness {
    store: tokio::sync::OnceCell<MemoryStore>,
}

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryStore;

    async fn fresh() -> Self {
        Self {
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn open(&self, options: StoreOptions) -> MemoryStore {
        self.store
            .get_or_init(|| async { MemoryStore::with_options(options) })
            .await
            .clone()
    }

    async fn flush_last_used(_store: &MemoryStore) {}
}

/// SQLite: a database file in a fresh temp directory.
struct SqliteHarness {
    dir: TempDir,
}

#[async_trait]
impl Harness for SqliteHarness {
    type Store = SqliteStore;

    async fn fresh() -> Self {
        Self {
            dir: TempDir::new("sqlite"),
        }
    }

    async fn open(&self, options: StoreOptions) -> SqliteStore {
        let url = format!("sqlite://{}", self.dir.join("keys.db").display());
        SqliteStore::connect_with(&url, options).await.unwrap()
    }

    async fn flush_last_used(store: &SqliteStore) {
        store.flush_last_used().await.unwrap();
    }
}

/// PostgreSQL: a fresh schema on the test server.
struct PostgresHarness {
    connect: sqlx::postgres::PgConnectOptions,
}

#[async_trait]
impl Harness for PostgresHarness {
    type Store = PostgresStore;

    async fn fresh() -> Self {
        Self {
            connect: fresh_postgres_schema(&require_postgres_url()).await,
        }
    }

    async fn open(&self, options: StoreOptions) -> PostgresStore {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect_with(self.connect.clone())
            .await
            .unwrap();
        PostgresStore::from_pool(pool, options).await.unwrap()
    }

    async fn flush_last_used(store: &PostgresStore) {
        store.flush_last_used().await.unwrap();
    }
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut all = trials::<MemoryHarness>("memory");
    all.extend(trials::<SqliteHarness>("sqlite"));
    all.extend(
        trials::<PostgresHarness>("postgres")
            .into_iter()
            .map(needs_postgres),
    );
    libtest_mimic::run(&args, all).exit();
}
