"""Runnable examples; importable (`from examples.train_model import ...`) by the demo and bench."""
