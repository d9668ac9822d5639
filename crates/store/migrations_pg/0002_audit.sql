-- The tamper-evident audit log on PostgreSQL (see the wardgate-audit crate): the same leaves,
-- hashes and checkpoints as the SQLite schema, plus the queue and the sequencer lease that let
-- many gateway instances write one log (crates/audit/src/shared.rs).
--
-- `leaf` is the entry's canonical encoding (JSON), the Merkle leaf; it is the record. What
-- queries filter on is generated from it by the database, so it cannot disagree with it: a
-- reviewer's filtered query cannot be made to miss an entry by editing a copy (the SQLite
-- schema's lesson, its migration 0007). Query results are decoded from `leaf` and checked
-- against the filter again.

CREATE FUNCTION wardgate_leaf_json(leaf BYTEA) RETURNS JSONB
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT convert_from(leaf, 'UTF8')::jsonb $$;

CREATE TABLE audit_entries (
    seq        BIGINT NOT NULL PRIMARY KEY CHECK (seq >= 0),
    leaf       BYTEA  NOT NULL,
    leaf_hash  BYTEA  NOT NULL CHECK (length(leaf_hash) = 32),
    -- The leaf's event, parsed once by the database (one parse per row, however many indexes
    -- read it). The filter expressions below read their fields from it.
    event      JSONB GENERATED ALWAYS AS (wardgate_leaf_json(leaf) -> 'event') STORED
);

-- One index per reviewer question (HIPAA activity review: by actor, tenant, time, outcome,
-- event type; and a request's start and end by its id), each in log order for paging. `ts` is
-- the canonical UTC time text (2025-01-31T12:00:00.123Z), whose order is time order.
CREATE INDEX audit_entries_ts ON audit_entries ((event ->> 'ts'), seq);
CREATE INDEX audit_entries_actor ON audit_entries ((event ->> 'actor_id'), seq);
CREATE INDEX audit_entries_tenant ON audit_entries ((event ->> 'tenant'), seq);
CREATE INDEX audit_entries_outcome ON audit_entries ((event ->> 'outcome'), seq);
CREATE INDEX audit_entries_type ON audit_entries ((event ->> 'event_type'), seq);
CREATE INDEX audit_entries_request ON audit_entries ((event ->> 'request_id'));

CREATE TABLE audit_checkpoints (
    tree_size  BIGINT NOT NULL PRIMARY KEY CHECK (tree_size >= 0),
    root_hash  BYTEA  NOT NULL CHECK (length(root_hash) = 32),
    -- The signed note (C2SP checkpoint).
    note       TEXT   NOT NULL,
    -- The writer's resume state: the perfect-subtree roots at this size, 32 bytes each.
    subtrees   BYTEA  NOT NULL CHECK (length(subtrees) % 32 = 0),
    created_ms BIGINT NOT NULL
);

-- Append-only at the database level: no UPDATE, DELETE or TRUNCATE, whatever the application
-- asks. (The owner of the database can still drop these triggers; what they would then change,
-- the Merkle tree, the signed checkpoints and the witness copies expose.)
CREATE FUNCTION wardgate_append_only() RETURNS TRIGGER
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION wardgate_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION wardgate_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION wardgate_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION wardgate_append_only();

-- Events committed by any instance and not yet in the log. `event` is the event's canonical
-- leaf encoding at position 0 (decoded, and so checked, when it is sequenced). Rows leave only
-- by being sequenced, in the same transaction that puts them in `audit_entries`.
CREATE TABLE audit_queue (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event     BYTEA  NOT NULL,
    queued_ms BIGINT NOT NULL
);

-- The sequencer lease: one row. `epoch` grows every time the lease changes hands; expiry is in
-- the database's clock, so the instances' clocks do not matter. A row, not an advisory lock:
-- through a transaction-pooling PgBouncer a session lock would belong to whichever client
-- shares the server connection next.
CREATE TABLE audit_sequencer (
    id         SMALLINT    NOT NULL PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    epoch      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ
);
INSERT INTO audit_sequencer (id, holder, epoch, expires_at) VALUES (1, NULL, 0, NULL);
