DROP INDEX storage_samples_window;
