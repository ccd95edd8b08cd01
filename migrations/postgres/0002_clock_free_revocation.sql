-- tower-keyauth: revocation no longer depends on clocks (PostgreSQL).
-- A revoked key has a revoked_at, whatever time it holds; the end of a
-- rotation's grace period, which is compared with the clock like an expiry,
-- gets a column of its own.

ALTER TABLE keyauth_keys ADD COLUMN grace_ends_at TIMESTAMPTZ;

-- Until now a grace period was stored as a revocation time in the future.
UPDATE keyauth_keys
   SET grace_ends_at = revoked_at, revoked_at = NULL
 WHERE revoked_at > now();
