"""Benchmarks for mlflow-hotswap (issue 5): `python -m bench` runs every part, writes REPORT.md."""
