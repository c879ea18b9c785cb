"""Security tests: hostile inputs, isolation, limits, the access matrix (issue 7)."""
