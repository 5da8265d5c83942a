"""Benchmarks, each run as `python -m benchmarks.<name>`; results in `benchmarks/results/`."""
