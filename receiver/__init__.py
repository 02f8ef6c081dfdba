"""The serving process: serves the model an MLflow stage or alias points to, and hot-swaps it."""
