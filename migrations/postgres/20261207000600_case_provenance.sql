-- Who answers for a submission (the user, or the creator of the API key that submitted it), so that
-- the own-case and dual-control rules also hold for a person who submits through their own key.
ALTER TABLE cases ADD COLUMN submitter_user_id TEXT;
UPDATE cases SET submitter_user_id = substr(submitted_by, 6) WHERE submitted_by LIKE 'user:%';
UPDATE cases SET submitter_user_id = (
    SELECT k.created_by FROM api_keys k WHERE 'api_key:' || k.id = cases.submitted_by
) WHERE submitted_by LIKE 'api_key:%';

-- Where the AI assessment came from: 'pipeline' (the case type's assessment job) may decide a case;
-- 'submitted' (sent with the case by its submitter) is advisory and never does.
ALTER TABLE cases ADD COLUMN ai_assessment_source TEXT;
UPDATE cases SET ai_assessment_source = CASE
    WHEN assessment_job_id IS NOT NULL THEN 'pipeline' ELSE 'submitted' END
WHERE ai_assessment IS NOT NULL;
