ALTER TABLE users DROP CONSTRAINT users_auth_identity_unique;
ALTER TABLE users ADD CONSTRAINT users_auth_subject_key UNIQUE (auth_subject);
ALTER TABLE users DROP COLUMN auth_issuer;
