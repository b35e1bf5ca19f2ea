DROP TABLE integrity_runs;
DROP TABLE integrity_findings;
