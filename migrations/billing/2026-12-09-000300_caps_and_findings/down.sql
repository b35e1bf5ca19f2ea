DROP TABLE backfills;
DROP TABLE reconciliation_findings;
DROP TABLE cap_alerts;
DROP TABLE monthly_costs;
DROP TABLE spending_caps;
