"""The fleet of receivers seen from outside: `mlflow-hotswap status` (what every replica serves)
and `mlflow-hotswap rollout` (a canary driven step by step through the registry's tags, judged
on the replicas' live metrics). Standard library, mlflow and requests only, like the plugin."""
