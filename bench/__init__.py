"""Benchmarks of the exporter at scale: ``python -m bench --help`` (see docs/benchmarks.md)."""
