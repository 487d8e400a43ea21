"""Benchmarks: print figures and ratios against a baseline of the same run; never part of the test suite."""
