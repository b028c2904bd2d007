"""How work runs and is kept: task markers (tasks.py). Executors, the run folder, provenance, the lock and
progress are to move here too (issue #23)."""
