DROP TABLE report_requests;
