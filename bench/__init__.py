"""Benchmarks that print the performance tables of README.md: ``python bench/run.py [--quick]``."""
