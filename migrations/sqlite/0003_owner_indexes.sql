-- tower-keyauth: indexes that find one owner's keys (SQLite).
-- The stores look an owner's keys up by exactly these columns, so that
-- issuing, rotating, revoking and listing cost O(that owner's keys), not
-- O(all keys): an organization by org_id with workspace_id IS NULL, a
-- workspace by org_id and workspace_id, a user by user_id; counting and
-- revoking its usable keys add revoked_at IS NULL, the last column. The
-- old indexes lacked revoked_at, and the one on user_id alone also matched
-- every organization and workspace key (user_id IS NULL) and was picked
-- for them. Each new index holds only the rows of its kinds of owner.

DROP INDEX IF EXISTS keyauth_keys_by_org;
DROP INDEX IF EXISTS keyauth_keys_by_user;

CREATE INDEX keyauth_keys_by_org_owner
    ON keyauth_keys (org_id, workspace_id, revoked_at)
    WHERE org_id IS NOT NULL;
CREATE INDEX keyauth_keys_by_user_owner
    ON keyauth_keys (user_id, revoked_at)
    WHERE user_id IS NOT NULL;
