"""The pytest layer: the plugin (options and hooks), the session that picks one artifact source and one device
side at configure time, the outcome rule, and one metric module per suite. `bench/test_*.py` are thin over it."""
