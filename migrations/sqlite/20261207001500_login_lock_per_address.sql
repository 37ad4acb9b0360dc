-- Failed sign-ins now lock one address out of one account, counted with the other per-address
-- limits (in Redis when configured), so that nobody can lock the owner out from elsewhere. The
-- per-account lock kept on the user row is no longer read or written.
ALTER TABLE users DROP COLUMN failed_logins;
ALTER TABLE users DROP COLUMN locked_until;
