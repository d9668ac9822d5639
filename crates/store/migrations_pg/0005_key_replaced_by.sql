-- The id of the key that replaced this one by rotation (NULL: never rotated), as SQLite's
-- migration 0008 adds it. A rotation sets it in the same transaction as it inserts the
-- replacement, and only while it is NULL and the key is neither revoked nor expired, so of
-- concurrent rotations (and a rotation racing a revocation) exactly one takes effect.
--
-- Additive: instances of the previous release keep running (they neither read nor set it; a
-- rotation they make is not fenced against another, so finish the rollout before relying on
-- it).
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
