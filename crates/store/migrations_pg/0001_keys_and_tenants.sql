-- Tenants and API keys, as SQLite's migrations 0001, 0003 and 0004 leave them: the same
-- columns, so both stores run the same statements (`src/records.rs`). Times are unix seconds
-- (UTC) in BIGINT columns. A key row holds only the lookup prefix and the SHA-256 of the whole
-- key, never the key itself.
--
-- Every PostgreSQL migration runs inside the one transaction of `wardgate migrate` and must be
-- additive (new tables, new nullable or defaulted columns, new indexes), so that instances of
-- the previous release keep running against the migrated schema during a rolling deploy.

CREATE TABLE tenants (
    name       TEXT   NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT   NOT NULL PRIMARY KEY,
    prefix       TEXT   NOT NULL,
    key_hash     TEXT   NOT NULL CHECK (length(key_hash) = 64),
    tenant       TEXT   NOT NULL REFERENCES tenants (name),
    -- JSON array of model names; '[]' means every model.
    models       TEXT   NOT NULL,
    label        TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    -- JSON array of roles (user, admin, auditor, break_glass) in canonical order.
    roles        TEXT   NOT NULL DEFAULT '["user"]',
    -- When the key was last used (updated at most about once a minute per key), for the idle
    -- timeout of long-lived keys.
    last_used_at BIGINT
);

-- Every request looks its key up by prefix; the index is unique so a prefix names one key.
CREATE UNIQUE INDEX api_keys_prefix ON api_keys (prefix);

-- Listing a tenant's keys, newest first.
CREATE INDEX api_keys_tenant_created ON api_keys (tenant, created_at);
