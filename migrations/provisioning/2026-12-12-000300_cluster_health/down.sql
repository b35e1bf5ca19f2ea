DROP TABLE cluster_health;
