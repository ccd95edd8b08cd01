-- tower-keyauth: indexes that find one owner's keys (PostgreSQL).
-- The stores look an owner's keys up by exactly these columns, so that
-- issuing, rotating, revoking and listing cost O(that owner's keys), not
-- O(all keys): an organization by org_id with workspace_id IS NULL, a
-- workspace by org_id and workspace_id, a user by user_id; counting and
-- revoking its usable keys add revoked_at IS NULL, the last column. (The
-- statements used IS NOT DISTINCT FROM before, which no index serves.)
-- Each new index holds only the rows of its kinds of owner.
--
-- The migration runs in a transaction, so the indexes are built without
-- CONCURRENTLY: writes to keyauth_keys wait while they are built (1.2 s
-- for a million keys on a 2-core test machine). To avoid that on a large
-- table, create them beforehand with CREATE INDEX CONCURRENTLY IF NOT
-- EXISTS, these names and these definitions.

DROP INDEX IF EXISTS keyauth_keys_by_org;
DROP INDEX IF EXISTS keyauth_keys_by_user;

CREATE INDEX IF NOT EXISTS keyauth_keys_by_org_owner
    ON keyauth_keys (org_id, workspace_id, revoked_at)
    WHERE org_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS keyauth_keys_by_user_owner
    ON keyauth_keys (user_id, revoked_at)
    WHERE user_id IS NOT NULL;
