//! The conformance suite, run against every bundled store: MemoryStore,
//! SqliteStore, and PostgresStore (on the server named by
//! `KEYAUTH_TEST_POSTGRES_URL`, which CI starts).

mod common;

use async_trait::async_trait;
use common::conformance::{Harness, conformance_suite};
use common::{TempDir, fresh_postgres_schema, postgres_url};
use tower_keyauth::{MemoryStore, PostgresStore, SqliteStore, StoreOptions};

/// Memory: "another instance" is a clone sharing the same map.
struct MemoryHarness {
    store: tokio::sync::OnceCell<MemoryStore>,
}

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryStore;

    async fn fresh() -> Option<Self> {
        Some(Self {
            store: tokio::sync::OnceCell::new(),
        })
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

    async fn fresh() -> Option<Self> {
        Some(Self {
            dir: TempDir::new("sqlite"),
        })
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

    async fn fresh() -> Option<Self> {
        let url = postgres_url("a PostgresStore conformance case")?;
        Some(Self {
            connect: fresh_postgres_schema(&url).await,
        })
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

mod memory {
    use super::*;
    conformance_suite!(MemoryHarness);
}

mod sqlite {
    use super::*;
    conformance_suite!(SqliteHarness);
}

mod postgres {
    use super::*;
    conformance_suite!(PostgresHarness);
}
