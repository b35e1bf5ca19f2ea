DROP TABLE closed_owners;
ALTER TABLE spending_caps DROP COLUMN cap_action;
DROP TABLE lifecycle_signals;
DROP TABLE project_counts;
DROP TABLE owner_suspensions;
DROP TABLE restrictions;
DROP TABLE terms_acceptances;
DROP TABLE plan_changes;
ALTER TABLE accounts DROP COLUMN plan;
