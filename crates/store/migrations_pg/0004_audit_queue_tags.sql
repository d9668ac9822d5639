-- Each queued row's tag (crates/audit/src/queue_tag.rs): an HMAC-SHA256 of the row's bytes
-- under a key derived from the log's signing key, made by the instance that queued it. The
-- sequencer sequences only rows whose tag verifies (others are set aside as unauthenticated,
-- into `audit_quarantine`) and keeps the tag beside the entry, so that a new sequencer can
-- check the entries after the last checkpoint before it signs over them: whoever can write
-- this database cannot add an event, or rewrite one, that nobody has signed yet.
--
-- Additive (nullable columns), but instances of the previous release neither write nor check
-- tags: while both run, a new sequencer sets their queued rows aside as unauthenticated (kept
-- in `audit_quarantine`, recorded in the log, with an alert), and refuses to sign over entries
-- an old sequencer left after the last checkpoint. The README's upgrade notes say to stop the
-- previous release's instances (cleanly: each signs a final checkpoint) before this one starts.

ALTER TABLE audit_queue ADD COLUMN tag BYTEA CHECK (tag IS NULL OR length(tag) = 32);
ALTER TABLE audit_entries ADD COLUMN tag BYTEA CHECK (tag IS NULL OR length(tag) = 32);
