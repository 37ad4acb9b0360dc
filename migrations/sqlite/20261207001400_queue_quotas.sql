-- Per-tenant queue quotas count a tenant's waiting and running jobs on every enqueue made on its
-- behalf; this keeps that count an index range however many finished jobs the tenant has. (The
-- per-minute rate uses the time-ordered ids of the existing (tenant_id, id) index.)
CREATE INDEX jobs_tenant_active ON jobs (tenant_id, status) WHERE status IN ('queued', 'failed', 'running');
