"""The one place for what differs between the MLflow versions the receiver runs on (2.16 to 3.x).

The rest of the receiver calls these names instead of testing MLflow's version. Checked on 2.16
and 2.22: MlflowClient.get_model_version_by_alias, Model.load_input_example(_params),
scoring_server.infer_and_parse_data and parse_csv_input, proto_json_utils._get_jsonable_obj and
NumpyEncoder, the MLFLOW_HTTP_REQUEST_* variables and PyFuncModel.get_raw_model are the same
as on 3.x; only the download below differs. MlflowClient.get_registered_model answers with
`aliases` and `tags` (dicts) and `latest_versions` (the newest version of each stage in use,
filled by the SQL and file stores) on 2.16 as on 3.x: checked in their sources.
"""

from __future__ import annotations

import inspect
from typing import IO, Any, cast

import mlflow
from mlflow.artifacts import download_artifacts
from mlflow.pyfunc import scoring_server
from mlflow.types import Schema
from mlflow.utils import proto_json_utils
from mlflow.utils.proto_json_utils import NumpyEncoder
from mlflow.version import VERSION as MLFLOW_VERSION

__all__ = ["MLFLOW_VERSION", "NumpyEncoder", "download_model", "get_jsonable_obj",
           "infer_and_parse_data", "parse_csv_input"]


# The scoring server's parsers and a private JSON helper: the same from 2.16 to 3.x, wrapped
# here (typed; MLflow's accept None for "no schema") so that a move in a later MLflow is mended
# in one place.
def infer_and_parse_data(data: dict[str, Any], schema: Schema | None) -> Any:
    return scoring_server.infer_and_parse_data(data, cast(Schema, schema))


def parse_csv_input(csv_input: IO[str], schema: Schema | None) -> Any:
    return scoring_server.parse_csv_input(csv_input, cast(Schema, schema))


def get_jsonable_obj(data: Any, pandas_orient: str = "records") -> Any:
    return proto_json_utils._get_jsonable_obj(data, pandas_orient=pandas_orient)

# MLflow 3 added `registry_uri`; 2.x resolves `models:/` against the process-wide URIs.
_DOWNLOAD_TAKES_REGISTRY_URI = "registry_uri" in inspect.signature(download_artifacts).parameters


def download_model(name: str, version: str, dst_path: str, tracking_uri: str,
                   registry_uri: str, path: str = "") -> str:
    """Download `models:/<name>/<version>` (or the one file `path` in it) into `dst_path`;
    return the local model directory (or file)."""
    uri = f"models:/{name}/{version}" + (f"/{path}" if path else "")
    if _DOWNLOAD_TAKES_REGISTRY_URI:
        return download_artifacts(artifact_uri=uri, dst_path=dst_path, tracking_uri=tracking_uri,
                                  registry_uri=registry_uri)
    # The receiver talks to one MLflow, so pointing the whole process at it changes nothing else.
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    return download_artifacts(artifact_uri=uri, dst_path=dst_path)
