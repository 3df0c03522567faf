"""Benchmarks, run on demand from the repository root (`python -m benchmarks.<name>`); each prints ratios measured
side by side in one run. Not part of the installed package."""
