"""What persists between runs: the content-addressed artifact cache (and the results history)."""
