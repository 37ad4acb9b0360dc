-- no-transaction
-- An email is unique within its tenant, not across tenants: a global constraint told a tenant's
-- admin which addresses have accounts in other tenants. Sign-in names the tenant when an address
-- is in several.
--
-- SQLite cannot drop a column's UNIQUE, so the table is rebuilt the way SQLite documents
-- (https://sqlite.org/lang_altertable.html#otheralter): foreign keys off, which must happen outside
-- a transaction, then the copy in one transaction.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE users_rebuilt (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id),
    -- Stored lower-cased.
    email               TEXT NOT NULL,
    name                TEXT NOT NULL,
    role                TEXT NOT NULL,
    platform_admin      INTEGER NOT NULL DEFAULT 0,
    password_hash       TEXT NOT NULL,
    status              TEXT NOT NULL,
    totp_secret         TEXT,
    totp_enabled        INTEGER NOT NULL DEFAULT 0,
    -- Last accepted TOTP time step: a code is accepted once (RFC 6238 §5.2).
    totp_last_step      INTEGER,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (tenant_id, email)
);
INSERT INTO users_rebuilt (id, tenant_id, email, name, role, platform_admin, password_hash, status,
                           totp_secret, totp_enabled, totp_last_step, created_at, updated_at)
SELECT id, tenant_id, email, name, role, platform_admin, password_hash, status, totp_secret,
       totp_enabled, totp_last_step, created_at, updated_at
FROM users;
DROP TABLE users;
ALTER TABLE users_rebuilt RENAME TO users;
CREATE INDEX users_tenant ON users (tenant_id, id);
CREATE INDEX users_email ON users (email);
COMMIT;
PRAGMA foreign_keys = ON;
