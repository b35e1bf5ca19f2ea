ALTER TABLE clusters
    DROP CONSTRAINT clusters_rondb_all_or_none,
    DROP COLUMN rondb_endpoint,
    DROP COLUMN rondb_user,
    DROP COLUMN rondb_password_ciphertext,
    DROP COLUMN rondb_password_key_id;
