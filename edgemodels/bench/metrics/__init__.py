"""One module per suite: what each bench test measures and writes into its report row (the tests assert on it)."""
