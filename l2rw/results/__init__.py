"""What runs leave behind and how it is read: the row (row), the results CSV it is appended to
(table), a run dir's files (run_files), and the readers: grouped tables (read), l2rw-report,
l2rw-select, the end-of-sweep summary and L2RW's weight shares."""
