-- The id of the key that replaced this one by rotation (NULL: never rotated). A rotation sets
-- it in the same transaction as it inserts the replacement, and only while it is NULL and the
-- key is neither revoked nor expired, so of concurrent rotations (and a rotation racing a
-- revocation) exactly one takes effect.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
