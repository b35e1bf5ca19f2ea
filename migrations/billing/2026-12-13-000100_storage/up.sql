-- Storage billed per GB-month (decision 0057): offline (HDFS) and online (RonDB) storage are two
-- more resources of the price book, the ledger and the meter reports. A StorageRecorded sample
-- is one more kind of ledger entry: its byte-seconds in the storage columns, the compute ones
-- zero (and a UsageRecorded sample's storage columns zero).
ALTER TABLE prices DROP CONSTRAINT prices_resource_check;
ALTER TABLE prices ADD CONSTRAINT prices_resource_check
    CHECK (resource IN ('cpu', 'memory', 'gpu', 'storage_offline', 'storage_online'));
ALTER TABLE meter_reports DROP CONSTRAINT meter_reports_resource_check;
ALTER TABLE meter_reports ADD CONSTRAINT meter_reports_resource_check
    CHECK (resource IN ('cpu', 'memory', 'gpu', 'storage_offline', 'storage_online'));

ALTER TABLE ledger_entries
    -- Which event the entry came from: `usage` (UsageRecorded) or `storage` (StorageRecorded).
    ADD COLUMN source text NOT NULL DEFAULT 'usage' CHECK (source IN ('usage', 'storage')),
    ADD COLUMN storage_offline_byte_seconds bigint NOT NULL DEFAULT 0 CHECK (storage_offline_byte_seconds >= 0),
    ADD COLUMN storage_online_byte_seconds bigint NOT NULL DEFAULT 0 CHECK (storage_online_byte_seconds >= 0),
    -- In force at the window's start; NULL only on entries recorded before storage was priced
    -- (their storage is zero).
    ADD COLUMN storage_offline_price_id uuid NULL REFERENCES prices (id),
    ADD COLUMN storage_online_price_id uuid NULL REFERENCES prices (id),
    ADD COLUMN storage_offline_cost numeric NOT NULL DEFAULT 0,
    ADD COLUMN storage_online_cost numeric NOT NULL DEFAULT 0,
    ADD COLUMN storage_offline_over_quanta bigint NOT NULL DEFAULT 0,
    ADD COLUMN storage_online_over_quanta bigint NOT NULL DEFAULT 0;
