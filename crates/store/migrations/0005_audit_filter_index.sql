-- The audit log's filter indexes move off the append path.
--
-- With six indexes on `audit_entries`, every audit commit rewrote seven B-tree pages (the table
-- and one leaf per index) and fsync'd all of them before the requests waiting for it could go
-- on: ~32 KiB of WAL per commit where the row itself needs one page. The indexes now live on
-- `audit_filter`, a copy of the filter columns that the store fills in bulk a little behind the
-- log (tens of milliseconds; see `audit_indexer` in `sqlite.rs`), where one sorted insert of
-- hundreds of rows touches each index page once. Queries read the indexed part through
-- `audit_filter` and scan the few entries after it in `audit_entries`, so a query never misses
-- an entry, whether or not it has been indexed yet.
--
-- `audit_filter` is derived data: the leaf in `audit_entries` stays the record, query results
-- are decoded from it and re-checked against the filter, and verification never reads this
-- table. It is append-only like the log, so an entry cannot be hidden from a review by deleting
-- its filter row.

CREATE TABLE audit_filter (
    seq        INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 0),
    ts_ms      INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    actor_id   TEXT    NOT NULL,
    tenant     TEXT,
    outcome    TEXT,
    request_id TEXT
);

INSERT INTO audit_filter (seq, ts_ms, event_type, actor_id, tenant, outcome, request_id)
SELECT seq, ts_ms, event_type, actor_id, tenant, outcome, request_id FROM audit_entries;

CREATE INDEX audit_filter_ts ON audit_filter (ts_ms);
CREATE INDEX audit_filter_actor ON audit_filter (actor_id, ts_ms);
CREATE INDEX audit_filter_tenant ON audit_filter (tenant, ts_ms);
CREATE INDEX audit_filter_outcome ON audit_filter (outcome, ts_ms);
CREATE INDEX audit_filter_type ON audit_filter (event_type, ts_ms);
CREATE INDEX audit_filter_request ON audit_filter (request_id);

DROP INDEX audit_entries_ts;
DROP INDEX audit_entries_actor;
DROP INDEX audit_entries_tenant;
DROP INDEX audit_entries_outcome;
DROP INDEX audit_entries_type;
DROP INDEX audit_entries_request;

CREATE TRIGGER audit_filter_no_update BEFORE UPDATE ON audit_filter
BEGIN
    SELECT RAISE(ABORT, 'audit_filter is append-only');
END;

CREATE TRIGGER audit_filter_no_delete BEFORE DELETE ON audit_filter
BEGIN
    SELECT RAISE(ABORT, 'audit_filter is append-only');
END;
