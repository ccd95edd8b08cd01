-- tower-keyauth: a key's IP allowlist and usage credits (SQLite).
--
-- allowed_ips: the allowlist's text, its networks joined by ", "
-- (`192.0.2.0/24, 2001:db8::/32`, at most 64 networks); '' is an empty
-- allowlist (no address may use the key), NULL none (any address may).
--
-- Credits: NULL credits_remaining is a key without credits, and then the
-- other three are NULL too. credits_remaining is what is left (0 to 10^15),
-- spent by one conditional UPDATE so that it never goes below zero.
-- credits_refill_amount and credits_refill_interval_seconds are both set
-- (1 to 10^15 credits, 1 to 31622400 s) or both NULL. credits_refilled_at
-- (microseconds since the Unix epoch, like created_at) is when the credits
-- were last set back to the refill's amount: the key's issue at first, then
-- the start of each interval in which a refill was applied, so refills stay
-- on the intervals counted from the issue. A rotated key's successor takes
-- its remaining credits and this time, and the old key keeps none (0 left,
-- no refill), so that rotating never resets credits and two keys never
-- spend one key's. Values out of these bounds, or
-- inconsistent ones, make a corrupt record: the key is never handed out
-- without its limits.

ALTER TABLE keyauth_keys ADD COLUMN allowed_ips TEXT;
ALTER TABLE keyauth_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE keyauth_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE keyauth_keys ADD COLUMN credits_refill_interval_seconds BIGINT;
ALTER TABLE keyauth_keys ADD COLUMN credits_refilled_at INTEGER;
