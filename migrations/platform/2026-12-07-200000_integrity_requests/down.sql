DROP TABLE integrity_requests;
