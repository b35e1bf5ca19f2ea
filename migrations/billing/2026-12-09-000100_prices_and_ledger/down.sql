DROP TABLE ledger_entries;
DROP TABLE billing_modes;
DROP TABLE prices;
