-- The tamper-evident audit log (see the wardgate-audit crate).
--
-- SQLite only: `seq INTEGER PRIMARY KEY` makes the sequence number SQLite's rowid (no second
-- index, and MAX(seq) is a lookup, not a scan), and the append-only rule is enforced by SQLite
-- triggers. The PostgreSQL implementation keeps the same columns (BIGINT, BYTEA) with its own
-- triggers. Times are unix milliseconds (UTC).
--
-- `leaf` is the entry's canonical encoding, the Merkle leaf; it is the record. The other columns
-- copy fields out of it only so queries can use indexes; query results are decoded from `leaf`
-- and re-checked against the filter, so a copy that disagreed with its leaf could not change
-- what a reviewer sees.

CREATE TABLE audit_entries (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 0),
    ts_ms      INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    actor_id   TEXT    NOT NULL,
    tenant     TEXT,
    outcome    TEXT,
    request_id TEXT,
    leaf       BLOB    NOT NULL,
    leaf_hash  BLOB    NOT NULL CHECK (length(leaf_hash) = 32)
);

-- One index per reviewer question (HIPAA activity review: by actor, tenant, time, outcome,
-- event type; and a request's start and end by its id).
CREATE INDEX audit_entries_ts ON audit_entries (ts_ms);
CREATE INDEX audit_entries_actor ON audit_entries (actor_id, ts_ms);
CREATE INDEX audit_entries_tenant ON audit_entries (tenant, ts_ms);
CREATE INDEX audit_entries_outcome ON audit_entries (outcome, ts_ms);
CREATE INDEX audit_entries_type ON audit_entries (event_type, ts_ms);
CREATE INDEX audit_entries_request ON audit_entries (request_id);

CREATE TABLE audit_checkpoints (
    tree_size  INTEGER NOT NULL PRIMARY KEY CHECK (tree_size >= 0),
    root_hash  BLOB    NOT NULL CHECK (length(root_hash) = 32),
    -- The signed note (C2SP checkpoint).
    note       TEXT    NOT NULL,
    -- The writer's resume state: the perfect-subtree roots at this size, 32 bytes each.
    subtrees   BLOB    NOT NULL CHECK (length(subtrees) % 32 = 0),
    created_ms INTEGER NOT NULL
);

-- Append-only at the database level: no UPDATE or DELETE, whatever the application asks.
-- (The owner of the file can still drop these triggers; what they would then change, the Merkle
-- tree, the signed checkpoints and the witness file expose.)
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit_entries is append-only');
END;

CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit_entries is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
