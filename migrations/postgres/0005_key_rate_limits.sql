-- tower-keyauth: a key's rate limits (PostgreSQL).
-- Their text form, as `UsageLimits` writes it (`q=100;w=60, burst;q=10;w=1`,
-- at most 512 bytes); NULL for none. The store reads it back through the
-- same checks as any other value: text that is not such limits is a corrupt
-- record, never a key without its limits.

ALTER TABLE keyauth_keys ADD COLUMN rate_limits TEXT;
