-- An email is unique within its tenant, not across tenants: a global constraint told a tenant's
-- admin which addresses have accounts in other tenants. Sign-in names the tenant when an address
-- is in several.
ALTER TABLE users DROP CONSTRAINT users_email_key;
ALTER TABLE users ADD CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email);
CREATE INDEX users_email ON users (email);
