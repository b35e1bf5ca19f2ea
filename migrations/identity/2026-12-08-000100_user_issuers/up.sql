-- An Auth0 subject is unique only within the tenant that issued it: a person is the pair
-- (issuer, subject). Accounts made before the issuer was kept get '' and are bound to the
-- issuer of the first token or webhook that names their subject (identity's users.rs).
ALTER TABLE users ADD COLUMN auth_issuer text NOT NULL DEFAULT '';
ALTER TABLE users ALTER COLUMN auth_issuer DROP DEFAULT;
ALTER TABLE users DROP CONSTRAINT users_auth_subject_key;
ALTER TABLE users ADD CONSTRAINT users_auth_identity_unique UNIQUE (auth_issuer, auth_subject);
