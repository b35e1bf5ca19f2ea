DROP TABLE usage_monthly;
DROP TABLE accounts;
DROP TABLE memberships;
DROP TABLE invitations;
DROP TABLE people;
