-- Per-tenant queue quotas count a tenant's waiting and running jobs, and its jobs created in the
-- last minute, on every enqueue made on its behalf: both counts are index ranges.
CREATE INDEX jobs_tenant_active ON jobs (tenant_id, status) WHERE status IN ('queued', 'failed', 'running');
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at);
