"""A custom pyfunc challenger (MLflow "models from code"): predicts as the test models do
(f0 + 0.5 f1 > 0), and, from its model config, fails on a share of rows (`fail_every`: a row
fails when its f0's sixth decimal digits are a multiple of it, so about 1 in `fail_every`) or
takes `delay` seconds per call."""

import time

import mlflow
from mlflow.pyfunc import PythonModel


class Challenger(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        self.fail_every = int(config.get("fail_every", 0))
        self.delay = float(config.get("delay", 0.0))

    def predict(self, context, model_input, params=None):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_every:
            marks = (model_input["f0"].abs() * 1e6).astype("int64") % self.fail_every
            if (marks == 0).any():
                raise RuntimeError("this challenger fails on this row")
        return (model_input["f0"] + 0.5 * model_input["f1"] > 0).astype("int64").to_numpy()


mlflow.models.set_model(Challenger())
