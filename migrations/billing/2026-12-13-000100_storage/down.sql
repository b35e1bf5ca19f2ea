ALTER TABLE ledger_entries
    DROP COLUMN storage_online_over_quanta,
    DROP COLUMN storage_offline_over_quanta,
    DROP COLUMN storage_online_cost,
    DROP COLUMN storage_offline_cost,
    DROP COLUMN storage_online_price_id,
    DROP COLUMN storage_offline_price_id,
    DROP COLUMN storage_online_byte_seconds,
    DROP COLUMN storage_offline_byte_seconds,
    DROP COLUMN source;
DELETE FROM meter_reports WHERE resource IN ('storage_offline', 'storage_online');
ALTER TABLE meter_reports DROP CONSTRAINT meter_reports_resource_check;
ALTER TABLE meter_reports ADD CONSTRAINT meter_reports_resource_check CHECK (resource IN ('cpu', 'memory', 'gpu'));
DELETE FROM subscription_items WHERE price_id IN (SELECT id FROM prices WHERE resource IN ('storage_offline', 'storage_online'));
DELETE FROM stripe_prices WHERE price_id IN (SELECT id FROM prices WHERE resource IN ('storage_offline', 'storage_online'));
DELETE FROM prices WHERE resource IN ('storage_offline', 'storage_online');
ALTER TABLE prices DROP CONSTRAINT prices_resource_check;
ALTER TABLE prices ADD CONSTRAINT prices_resource_check CHECK (resource IN ('cpu', 'memory', 'gpu'));
