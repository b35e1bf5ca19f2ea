DROP TABLE processed_stripe_events;
DROP TABLE invoices;
DROP TABLE payment_methods;
DROP TABLE accounts;
