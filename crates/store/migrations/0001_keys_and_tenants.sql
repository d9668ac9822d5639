-- Tenants and API keys.
--
-- Written to run unchanged on SQLite and PostgreSQL: TEXT and BIGINT columns only, no
-- AUTOINCREMENT, no backend-specific functions. Times are unix seconds (UTC) in BIGINT columns.
-- A key row holds only the lookup prefix and the SHA-256 of the whole key, never the key itself.

CREATE TABLE tenants (
    name       TEXT   NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT   NOT NULL PRIMARY KEY,
    prefix     TEXT   NOT NULL,
    key_hash   TEXT   NOT NULL CHECK (length(key_hash) = 64),
    tenant     TEXT   NOT NULL REFERENCES tenants (name),
    -- JSON array of model names; '[]' means every model.
    models     TEXT   NOT NULL,
    label      TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

-- Every request looks its key up by prefix; the index is unique so a prefix names one key.
CREATE UNIQUE INDEX api_keys_prefix ON api_keys (prefix);

-- Listing a tenant's keys, newest first.
CREATE INDEX api_keys_tenant_created ON api_keys (tenant, created_at);
