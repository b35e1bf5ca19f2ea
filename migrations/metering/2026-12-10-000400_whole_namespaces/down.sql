ALTER TABLE clusters DROP COLUMN drained_at;
DROP INDEX samples_unbilled;
ALTER TABLE samples DROP CONSTRAINT samples_check;
ALTER TABLE samples DROP CONSTRAINT samples_attribution_check;
DELETE FROM samples WHERE attribution IN ('unlabelled', 'not_member');
ALTER TABLE samples ADD CONSTRAINT samples_attribution_check
    CHECK (attribution IN ('attributed', 'unknown_user', 'unknown_project'));
ALTER TABLE samples ADD CONSTRAINT samples_check
    CHECK ((attribution = 'attributed') = (user_id IS NOT NULL AND owner_user_id IS NOT NULL));
