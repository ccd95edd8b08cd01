//! `KeyStore` for a table you already have.
//!
//! ```sh
//! cargo run --example custom_store
//! ```
//!
//! Your service keeps API keys in its own table, with its own column names.
//! One method maps a row to a `KeyRecord`; the layer does the rest (hashing,
//! constant-time comparison, expiry, scopes, error responses). The store
//! never sees a secret: only the key's public id.

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::Request;
use sqlx::SqlitePool;
use tower::ServiceExt;
use tower_keyauth::hash::KeyHash;
use tower_keyauth::ids::{KeyId, KeyKind};
use tower_keyauth::store::{KeyRecord, Owner, StoreError};
use tower_keyauth::{KeyAuthLayer, KeyFormat, KeyStore, Principal, Scopes};

/// Your table, as it already is.
const SCHEMA: &str = "CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    token_sha256  TEXT NOT NULL,     -- hex
    account       TEXT NOT NULL,     -- your word for organization
    permissions   TEXT NOT NULL,     -- space-separated, '' for full access
    disabled      INTEGER NOT NULL DEFAULT 0
)";

struct AccountKeys {
    pool: SqlitePool,
}

#[async_trait]
impl KeyStore for AccountKeys {
    async fn find_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row: Option<(String, String, String, bool)> = sqlx::query_as(
            "SELECT token_sha256, account, permissions, disabled FROM api_keys WHERE key_id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        let Some((hash, account, permissions, disabled)) = row else {
            return Ok(None);
        };
        // A row we cannot read is a store error (503), never a pass.
        let hash = KeyHash::from_hex(&hash).ok_or_else(|| StoreError::backend("bad hash"))?;
        let scopes = match permissions.as_str() {
            "" => Scopes::all(),
            names => Scopes::parse_space_separated(names).map_err(StoreError::backend)?,
        };
        let mut record = KeyRecord::new(id.clone(), hash, Owner::org(account)).with_scopes(scopes);
        if disabled {
            // Revocation time unknown: "revoked since forever" is honest.
            record = record.with_revoked_at(std::time::UNIX_EPOCH);
        }
        Ok(Some(record))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An in-memory database stands in for yours (one connection keeps it).
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query(SCHEMA).execute(&pool).await?;

    // Issuing: mint, store the hash, show the token once.
    let minted = KeyFormat::default().mint(KeyKind::Organization, None)?;
    sqlx::query("INSERT INTO api_keys (key_id, token_sha256, account, permissions) VALUES (?1, ?2, 'acme', 'reports.read')")
        .bind(minted.id.as_str())
        .bind(minted.token.hash().to_hex())
        .execute(&pool)
        .await?;
    let token = minted.token.expose_secret().to_owned();

    let app = Router::new()
        .route(
            "/reports",
            get(|who: Principal| async move { format!("reports of {}\n", who.org()) }),
        )
        .layer(KeyAuthLayer::new(AccountKeys { pool: pool.clone() }));

    for (label, header) in [
        ("with the key", Some(format!("Bearer {token}"))),
        ("without a key", None),
        (
            "with a made-up key",
            Some("Bearer ak_Xb3kP9qLm2Ts.notarealsecretnotarealsecret".to_owned()),
        ),
    ] {
        let mut request = Request::get("/reports");
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = app.clone().oneshot(request.body(Body::empty())?).await?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 4096).await?;
        println!(
            "{label:<20} {status} {}",
            String::from_utf8_lossy(&body).trim()
        );
    }

    sqlx::query("UPDATE api_keys SET disabled = 1")
        .execute(&pool)
        .await?;
    let request = Request::get("/reports")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())?;
    let response = app.oneshot(request).await?;
    println!("{:<20} {}", "after disabling it", response.status());
    Ok(())
}
