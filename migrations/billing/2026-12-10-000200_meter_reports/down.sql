DROP TABLE meter_reports;
