"""Benchmarks of built artifacts on frame streams: stats, reports, plots and registry records."""
