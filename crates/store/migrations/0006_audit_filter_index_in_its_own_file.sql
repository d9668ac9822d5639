-- The audit log's filter index moves out of this database into a file of its own beside it
-- (`<database>-audit-index`, see `src/sqlite/filter_index.rs`), which the store creates, checks
-- against the log and fills from it at open and in the background.
--
-- Why: SQLite has one write lock per database file. With the index in this file, every
-- background catch-up held the lock that the next audit append was waiting for, and with it the
-- requests waiting for that append. In a file of its own it takes only that file's lock.
--
-- The table is derived data (the leaf in `audit_entries` stays the record), so dropping it loses
-- nothing: the new index is built from the log. DROP TABLE does not fire the append-only
-- triggers, which go with the table.

DROP TABLE audit_filter;
