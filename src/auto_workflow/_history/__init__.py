"""The run history: records, the SQLite store, checkpoints, reports (private)."""
