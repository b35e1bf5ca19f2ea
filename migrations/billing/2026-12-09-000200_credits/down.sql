DROP TABLE low_balance_alerts;
DROP TABLE credit_states;
DROP TABLE credit_deductions;
DROP TABLE credit_grants;
DROP TABLE credit_purchases;
