"""Shared helpers for tests, the demo and the benchmarks: real processes, real HTTP."""
