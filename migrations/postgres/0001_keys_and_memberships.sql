-- tower-keyauth: API keys and memberships (PostgreSQL).

CREATE TABLE keyauth_keys (
    id           TEXT        PRIMARY KEY,
    hash         BYTEA       NOT NULL CHECK (octet_length(hash) = 32),
    prefix       TEXT,
    owner_kind   TEXT        NOT NULL CHECK (owner_kind IN ('organization', 'workspace', 'user')),
    org_id       TEXT,
    workspace_id TEXT,
    user_id      TEXT,
    scopes       TEXT[]      NOT NULL,
    name         TEXT        NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    CHECK (
        (owner_kind = 'organization' AND org_id IS NOT NULL AND workspace_id IS NULL AND user_id IS NULL)
        OR (owner_kind = 'workspace' AND org_id IS NOT NULL AND workspace_id IS NOT NULL AND user_id IS NULL)
        OR (owner_kind = 'user' AND org_id IS NULL AND workspace_id IS NULL AND user_id IS NOT NULL)
    )
);

CREATE INDEX keyauth_keys_by_org ON keyauth_keys (org_id, workspace_id);
CREATE INDEX keyauth_keys_by_user ON keyauth_keys (user_id);

CREATE TABLE keyauth_memberships (
    user_id TEXT   NOT NULL,
    org_id  TEXT   NOT NULL,
    scopes  TEXT[] NOT NULL,
    PRIMARY KEY (user_id, org_id)
);
