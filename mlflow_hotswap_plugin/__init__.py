"""MLflow model-registry store plugin that pushes signed notifications to hot-swap receivers."""
