"""Benchmarks: ``ltbench bench`` (throughput), the meta-step cost and the image pipeline."""
