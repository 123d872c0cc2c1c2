"""Evaluation of a classifier: metrics, quality gates and plots."""
