"""The results store: one parquet record per run and its artifacts, their verification and
repair, and the file plumbing every writer uses (atomic writes, writability probes)."""
