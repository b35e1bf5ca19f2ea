DROP TABLE project_members;
DROP TABLE team_members;
ALTER TABLE assignments DROP CONSTRAINT assignments_status_check;
ALTER TABLE assignments ADD CONSTRAINT assignments_status_check CHECK (status IN ('waiting_for_user',
    'waiting_for_capacity', 'provisioning', 'complete', 'unassigning', 'unassigned'));
