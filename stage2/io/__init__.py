"""Reading inputs and writing documents: sources (readers, the start-up scan), plan (partitions from
metadata), parts (the filter's parquet parts), files (atomic writes, fingerprints, JSON)."""
