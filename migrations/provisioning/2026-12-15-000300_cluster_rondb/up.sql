-- A cluster's RonDB MySQL endpoint and read-only account, for online storage (decision 0071):
-- the password sealed like the API key (decision 0015), all four set or none.
ALTER TABLE clusters
    ADD COLUMN rondb_endpoint text,
    ADD COLUMN rondb_user text,
    ADD COLUMN rondb_password_ciphertext bytea,
    ADD COLUMN rondb_password_key_id text,
    ADD CONSTRAINT clusters_rondb_all_or_none CHECK (
        (rondb_endpoint IS NULL) = (rondb_user IS NULL)
        AND (rondb_endpoint IS NULL) = (rondb_password_ciphertext IS NULL)
        AND (rondb_endpoint IS NULL) = (rondb_password_key_id IS NULL)
    );
