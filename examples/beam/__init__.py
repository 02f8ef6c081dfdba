"""Score streams and train on Apache Beam with the model the MLflow registry points to (the
`beam` extra): `MlflowModelHandler` for RunInference, `WatchMlflowRegistry` for its model
refresh, and two runnable pipelines, `score_stream` and `train`."""
