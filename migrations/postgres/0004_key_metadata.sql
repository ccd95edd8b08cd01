-- tower-keyauth: what an application keeps with a key (PostgreSQL).
-- A JSON object of at most 4096 bytes, as text (not jsonb, which would
-- reorder its keys and so not read back as written); NULL for none. The
-- store checks it when it is written and again when it is read: a value
-- that is not such an object is a corrupt record.

ALTER TABLE keyauth_keys ADD COLUMN metadata TEXT;
