DROP TABLE checkout_follow_ups;
