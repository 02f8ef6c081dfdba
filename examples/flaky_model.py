"""The demo's bad challenger (examples/demo.py): another version's fraud forest (the artifact
`forest`) behind a step with a bug, which raises on every transaction whose `fails_on` column
(model config; default `is_online`, about a third of them) is set. Logged as MLflow "models
from code": this file is the model, so the receiver needs nothing of this project to load it."""

import mlflow.sklearn
from mlflow.pyfunc import PythonModel


class FlakyForest(PythonModel):
    def load_context(self, context):
        self.forest = mlflow.sklearn.load_model(context.artifacts["forest"])
        # One thread per request, as the receiver sets for the scikit-learn models it loads.
        self.forest.set_params(n_jobs=1)
        self.fails_on = (context.model_config or {}).get("fails_on", "is_online")

    def predict(self, context, model_input, params=None):
        if (model_input[self.fails_on] != 0).any():
            raise ValueError(f"cannot score a transaction with {self.fails_on} set")
        return self.forest.predict(model_input)


mlflow.models.set_model(FlakyForest())
