-- The retention cutoff decides which audit records may be deleted. It only moves forward and never
-- past the present, so no statement can make records written just now deletable; the one row can be
-- neither removed nor added to.
CREATE TRIGGER audit_retention_cutoff_guard BEFORE UPDATE ON audit_retention
WHEN NEW.id IS NOT OLD.id
  OR NEW.cutoff IS NULL
  OR NEW.cutoff > strftime('%Y-%m-%dT%H:%M:%f', 'now')
  OR (OLD.cutoff IS NOT NULL AND NEW.cutoff < OLD.cutoff)
BEGIN
    SELECT RAISE(ABORT, 'the audit retention cutoff only moves forward, and not past now');
END;

CREATE TRIGGER audit_retention_no_delete BEFORE DELETE ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'the audit retention cutoff cannot be removed');
END;

CREATE TRIGGER audit_retention_no_insert BEFORE INSERT ON audit_retention
BEGIN
    SELECT RAISE(ABORT, 'the audit retention cutoff cannot be removed');
END;
