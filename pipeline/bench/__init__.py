"""Benchmarks: nightly cost per user and online freshness."""
