DROP TABLE assignments;
DROP TABLE users;
DROP TABLE clusters;
