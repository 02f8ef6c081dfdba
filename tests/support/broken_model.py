"""A pyfunc model (MLflow "models from code") whose load always fails: a broken version."""

import mlflow
from mlflow.pyfunc import PythonModel


class BrokenOnLoad(PythonModel):
    def load_context(self, context):
        raise RuntimeError("this model version is deliberately broken")

    def predict(self, context, model_input, params=None):
        return [0] * len(model_input)


mlflow.models.set_model(BrokenOnLoad())
