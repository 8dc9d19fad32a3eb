"""Benchmarks for aurora_swarm (run as ``python -m benchmarks.<name>``)."""
