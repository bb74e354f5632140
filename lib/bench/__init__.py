"""Benchmarks: scripts that measure and write results files (speed goals live here, not in tests)."""
