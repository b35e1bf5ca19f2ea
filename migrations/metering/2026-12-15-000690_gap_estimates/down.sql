DROP TABLE gap_estimate_lines;
DROP TABLE gap_estimates;
