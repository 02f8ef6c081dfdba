"""A custom pyfunc model (MLflow "models from code") whose predict waits while a gate file
exists, so a test decides when the predict slot frees up. Predicts f0 * factor per row, with
`factor` from the model config: each version answers in its own recognisable way. Where
HOTSWAP_TEST_SECONDS_PER_ROW is set, each call also takes that long per row: a slow model of a
known throughput, whatever the machine's load."""

import os
import time

import mlflow
from mlflow.pyfunc import PythonModel

# The test removes the gate; this only bounds a test that forgot to.
GATE_LIMIT_SECONDS = 60


class Gated(PythonModel):
    def load_context(self, context):
        self.factor = float((context.model_config or {}).get("factor", 1))

    def predict(self, context, model_input, params=None):
        gate = os.environ.get("HOTSWAP_TEST_GATE")
        deadline = time.monotonic() + GATE_LIMIT_SECONDS
        while gate and os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(float(os.environ.get("HOTSWAP_TEST_SECONDS_PER_ROW", 0)) * len(model_input))
        return (model_input["f0"] * self.factor).to_numpy()


mlflow.models.set_model(Gated())
