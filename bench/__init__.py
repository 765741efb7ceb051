"""Benchmarks that print the performance tables of docs/performance.md: ``python bench/run.py [--quick]``."""
