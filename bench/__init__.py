"""Benchmarks for mlflow-hotswap (issue 5): `python -m bench` runs every part and writes REPORT.md."""
