"""A pyfunc model (MLflow "models from code") whose warm-up prediction never returns.

It hangs only where HOTSWAP_TEST_HANG_ARMED is set (the receiver under test), so that logging
it, which predicts on the input example to infer a signature, still works.
"""

import os
import threading

import mlflow
from mlflow.pyfunc import PythonModel


class HangsOnPredict(PythonModel):
    def predict(self, context, model_input, params=None):
        if os.environ.get("HOTSWAP_TEST_HANG_ARMED"):
            threading.Event().wait()  # forever: a deadlocked model
        return [0] * len(model_input)


mlflow.models.set_model(HangsOnPredict())
