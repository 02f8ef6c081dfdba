"""A pyfunc model (MLflow "models from code") whose load calls sys.exit, as an argparse call
in a custom model's load_context does when it finds unexpected arguments."""

import sys

import mlflow
from mlflow.pyfunc import PythonModel


class ExitsOnLoad(PythonModel):
    def load_context(self, context):
        sys.exit(2)

    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


mlflow.models.set_model(ExitsOnLoad())
