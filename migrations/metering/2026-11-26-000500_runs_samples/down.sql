DROP TABLE usage_daily;
DROP TABLE samples;
DROP TABLE runs;
DROP TABLE projects;
DROP TABLE memberships;
DROP TABLE accounts;
DROP TABLE clusters;
