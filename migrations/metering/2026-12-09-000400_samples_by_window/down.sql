DROP INDEX samples_window_start_id;
