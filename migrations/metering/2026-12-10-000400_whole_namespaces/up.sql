-- Every pod of a project's namespace is billed (decision 0039): pods without the owner label
-- (`unlabelled`) and pods of a user not on the project (`not_member`) are billed to the
-- project's creator and their owner, so those samples carry a user and an owner too.
ALTER TABLE samples DROP CONSTRAINT samples_attribution_check;
ALTER TABLE samples DROP CONSTRAINT samples_check;
ALTER TABLE samples ADD CONSTRAINT samples_attribution_check
    CHECK (attribution IN ('attributed', 'unknown_user', 'unknown_project', 'unlabelled', 'not_member'));
ALTER TABLE samples ADD CONSTRAINT samples_check
    CHECK ((attribution IN ('attributed', 'unlabelled', 'not_member')) = (user_id IS NOT NULL AND owner_user_id IS NOT NULL));
-- Usage billed to nobody, read by window for administrators.
CREATE INDEX samples_unbilled ON samples (window_start) WHERE owner_user_id IS NULL;

-- An inactive cluster is measured until a window finds no pods in its projects' namespaces:
-- that window's end. Cleared whenever the cluster's status changes.
ALTER TABLE clusters ADD COLUMN drained_at timestamptz;
