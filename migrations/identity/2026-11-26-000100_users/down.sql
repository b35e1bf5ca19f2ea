DROP TABLE team_members;
DROP TABLE users;
