"""Benchmarks for mlflow-hotswap: `python -m bench` runs every part, writes REPORT.md."""
