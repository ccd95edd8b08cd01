-- tower-keyauth: the version of each key's stored hash (SQLite).
--
-- hash_version: 0 when `hash` is the plain SHA-256 of the whole token (every
-- key stored before this migration), v >= 1 when it is the HMAC-SHA256 of the
-- token under the pepper of version v (`tower_keyauth::pepper`). The pepper
-- itself is never stored. A key whose version is not the layer's current one
-- is re-hashed after its next successful use (a conditional UPDATE of `hash`
-- and `hash_version` together). Values above 65535 make a corrupt record:
-- the key is never handed out and its requests fail closed.

ALTER TABLE keyauth_keys ADD COLUMN hash_version INTEGER NOT NULL DEFAULT 0;
