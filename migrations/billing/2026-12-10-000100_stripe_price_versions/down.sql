DROP TABLE subscription_items;
DROP TABLE stripe_prices;
