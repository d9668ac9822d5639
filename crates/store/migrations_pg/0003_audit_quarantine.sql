-- Queued rows that no release can read, set aside by the sequencer (crates/audit/src/
-- quarantine.rs) instead of stopping the log: the row's bytes move here, in the same fenced
-- sequencing transaction that deletes them from `audit_queue` and appends, at their place in
-- the order, an `audit_quarantined` entry holding the queue id, the length and the SHA-256.
-- Additive: instances of the previous release never read or write it.

CREATE TABLE audit_quarantine (
    -- The row's id in `audit_queue`.
    queue_id       BIGINT NOT NULL PRIMARY KEY,
    -- The `audit_entries` entry that took its place.
    seq            BIGINT NOT NULL UNIQUE CHECK (seq >= 0),
    -- The row's bytes, exactly as queued, and their SHA-256 (checked here too).
    event          BYTEA  NOT NULL,
    sha256         BYTEA  NOT NULL CHECK (sha256 = sha256(event)),
    -- When it was queued (the queue row's own time) and when it was set aside.
    queued_ms      BIGINT NOT NULL,
    quarantined_ms BIGINT NOT NULL
);

-- Append-only, like the log.
CREATE TRIGGER audit_quarantine_append_only BEFORE UPDATE OR DELETE ON audit_quarantine
    FOR EACH ROW EXECUTE FUNCTION wardgate_append_only();
CREATE TRIGGER audit_quarantine_no_truncate BEFORE TRUNCATE ON audit_quarantine
    FOR EACH STATEMENT EXECUTE FUNCTION wardgate_append_only();
