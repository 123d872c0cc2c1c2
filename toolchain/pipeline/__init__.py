"""``toolchain pipeline``: every stage from lake to latency report, with stage caching and resume."""
