-- The retention cutoff decides which audit records may be deleted. It only moves forward and never
-- past the present, so no statement can make records written just now deletable; the one row can be
-- neither removed nor added to.
CREATE FUNCTION audit_retention_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.id = OLD.id
       AND NEW.cutoff IS NOT NULL
       AND NEW.cutoff <= clock_timestamp()
       AND (OLD.cutoff IS NULL OR NEW.cutoff >= OLD.cutoff) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'the audit retention cutoff only moves forward, and not past now';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_retention_guard BEFORE INSERT OR UPDATE OR DELETE ON audit_retention
    FOR EACH ROW EXECUTE FUNCTION audit_retention_guard();
CREATE TRIGGER audit_retention_no_truncate BEFORE TRUNCATE ON audit_retention
    FOR EACH STATEMENT EXECUTE FUNCTION audit_retention_guard();
