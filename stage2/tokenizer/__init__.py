"""The tokenizer's cores: sample, train, evaluate, export (tokenizer.json), encoding."""
