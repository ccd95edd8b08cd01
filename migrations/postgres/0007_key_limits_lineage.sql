-- tower-keyauth: the rotation chain a key's limits belong to (PostgreSQL).
--
-- limits_lineage: the id of the first key of the key's rotation chain, under
-- which the layer counts the key's own rate limits, so that rotating a key
-- neither resets their counts nor, during a grace period, doubles them
-- (`UsageLimits::lineage`). A rotated key's successor is written with its
-- predecessor's lineage, or the predecessor's own id when it has none.
-- NULL is the key's own id: a key never rotated, or one without limits.
-- It is kept only with a key's limits (rate_limits is never NULL for a key
-- with limits); on a key without any, it is read and checked but means
-- nothing. Its value is a key id as tokens carry it: 1 to 64 ASCII letters,
-- digits and `-` (the stores refuse to write any other). Any other value
-- (empty, longer, other bytes) makes a corrupt record: the key is never
-- handed out, so its requests fail closed instead of being counted under
-- the key's own id.

ALTER TABLE keyauth_keys ADD COLUMN limits_lineage TEXT;
