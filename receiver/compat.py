"""The one place for what differs between the MLflow versions the receiver runs on (2.16 to 3.x).

The rest of the receiver calls these names instead of testing MLflow's version. Checked on 2.16
and 2.22: MlflowClient.get_model_version_by_alias, Model.load_input_example(_params),
scoring_server.infer_and_parse_data and parse_csv_input, proto_json_utils._get_jsonable_obj and
NumpyEncoder, the MLFLOW_HTTP_REQUEST_* variables and PyFuncModel.get_raw_model are the same
as on 3.x; only the download below differs.
"""

from __future__ import annotations

import inspect

import mlflow
from mlflow.artifacts import download_artifacts
from mlflow.pyfunc.scoring_server import infer_and_parse_data, parse_csv_input
from mlflow.utils.proto_json_utils import NumpyEncoder, _get_jsonable_obj
from mlflow.version import VERSION as MLFLOW_VERSION

# The scoring server's parsers and a private JSON helper: the same from 2.16 to 3.x, imported
# here so that a move in a later MLflow is mended in one place.
__all__ = ["MLFLOW_VERSION", "NumpyEncoder", "download_model", "get_jsonable_obj",
           "infer_and_parse_data", "parse_csv_input"]

get_jsonable_obj = _get_jsonable_obj

# MLflow 3 added `registry_uri`; 2.x resolves `models:/` against the process-wide URIs.
_DOWNLOAD_TAKES_REGISTRY_URI = "registry_uri" in inspect.signature(download_artifacts).parameters


def download_model(name: str, version: str, dst_path: str, tracking_uri: str,
                   registry_uri: str) -> str:
    """Download `models:/<name>/<version>` into `dst_path`; return the local model directory."""
    uri = f"models:/{name}/{version}"
    if _DOWNLOAD_TAKES_REGISTRY_URI:
        return download_artifacts(artifact_uri=uri, dst_path=dst_path, tracking_uri=tracking_uri,
                                  registry_uri=registry_uri)
    # The receiver talks to one MLflow, so pointing the whole process at it changes nothing else.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    return download_artifacts(artifact_uri=uri, dst_path=dst_path)
