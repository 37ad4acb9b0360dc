-- The second sign-in step: after a correct password, a short-lived single-use token stands in for
-- it, so the form asking for the TOTP code never holds the password.
CREATE TABLE mfa_challenges (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    user_id     TEXT NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (expires_at);
