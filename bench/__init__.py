"""Benchmarks: each compares the relay with a baseline measured in the same run.

These machines are noisy: read the ratios, not the absolute times.
"""
