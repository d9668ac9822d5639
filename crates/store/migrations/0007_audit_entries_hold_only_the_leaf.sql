-- The log's table keeps only what verification checks: the sequence number, the leaf (the
-- entry's canonical encoding, the record) and its hash.
--
-- Why: `ts_ms`, `event_type`, `actor_id`, `tenant`, `outcome` and `request_id` were copies of
-- fields of the leaf, kept for indexes that moved to the filter index (0005, 0006). Nothing
-- checked a copy against its leaf, so a changed copy passed `wardgate audit verify`, and the
-- filter index, filled from the copies, could then hide an entry from a filtered review. The
-- filter index is now filled from the leaves themselves (`src/sqlite/filter_index.rs`), and a
-- query reads the entries the index has not reached from their leaves too.
--
-- How: a new table with the three columns, the rows copied over in one pass, the old table
-- dropped and the new one renamed, and the append-only triggers made again (they went with the
-- old table; DROP TABLE does not fire them). One copy of the log rather than one per dropped
-- column, which `ALTER TABLE ... DROP COLUMN` would make.

CREATE TABLE audit_entries_leaf_only (
    seq       INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 0),
    leaf      BLOB    NOT NULL,
    leaf_hash BLOB    NOT NULL CHECK (length(leaf_hash) = 32)
);

INSERT INTO audit_entries_leaf_only (seq, leaf, leaf_hash)
SELECT seq, leaf, leaf_hash FROM audit_entries ORDER BY seq;

DROP TABLE audit_entries;

ALTER TABLE audit_entries_leaf_only RENAME TO audit_entries;

CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit_entries is append-only');
END;

CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
BEGIN
    SELECT RAISE(ABORT, 'audit_entries is append-only');
END;
