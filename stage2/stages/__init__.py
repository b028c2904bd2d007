"""The stages, each a thin orchestration of the cores: filter (+ the tasks its workers run), tokenizer,
shard, verify, report, and pipeline (which runs them in order and records the run)."""
