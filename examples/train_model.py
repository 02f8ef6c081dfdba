"""Train a fraud-detection model on synthetic transactions and register it in MLflow.

Run it on its own against any tracking server:

    python examples/train_model.py --tracking-uri http://127.0.0.1:5000 --promote
    python examples/train_model.py --seed 2 --alias champion
    python examples/train_model.py --stage Staging --promote-if 'roc_auc>=0.95'

The last one is the training gate: the new version goes to Staging, and moves on to Production
only if every condition holds on its holdout AND it is not worse there than the current
Production version; otherwise it stays in Staging, the script says why and exits with 1.
Every registered version carries its training metadata as tags (seed, rows, parameters,
holdout metrics, a fingerprint of the data).

Or import the pieces (`make_transactions`, `train`, `register`, `promote`, `set_alias`,
`sample_request`, `parse_condition`, `gate`, `pip_requirements`) as the demo and the benchmark
do.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import logging
import operator
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

DEFAULT_MODEL_NAME = "fraud_detection_model"
DEFAULT_EXPERIMENT = "fraud-detection"
DEFAULT_ROWS = 20_000
DEFAULT_N_ESTIMATORS = 50
MAX_DEPTH = 12  # enough for the signal; deeper trees only memorise noise and load slower
FRAUD_RATE = 0.02
# MLflow saves scikit-learn models with skops, which refuses types it has not been told to
# trust; a forest's trees are one.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]

FEATURES: tuple[str, ...] = (
    "amount", "hour", "day_of_week", "merchant_risk", "merchant_category",
    "distance_from_home_km", "distance_from_last_txn_km", "minutes_since_last_txn",
    "txn_count_1h", "txn_count_24h", "avg_amount_30d", "amount_to_avg_ratio",
    "card_age_days", "account_age_days", "is_online", "is_international",
    "new_device", "failed_logins_24h", "chargebacks_90d", "ip_risk_score",
)


def make_transactions(n: int = DEFAULT_ROWS, seed: int = 0,
                      fraud_rate: float = FRAUD_RATE) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` synthetic card transactions (20 float columns, FEATURES) and their 0/1 fraud labels.

    Labels are drawn first, so the fraud share is `fraud_rate` in expectation; fraud then shifts
    the distributions of most columns, with enough overlap that no column gives it away.
    """
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < fraud_rate
    # How strongly each fraud shows (0 for legitimate rows): some frauds look entirely normal,
    # so the model has something to get wrong.
    s = np.where(fraud, rng.beta(3.0, 1.5, n), 0.0)

    def shifted(legit: float, fraud_value: float) -> np.ndarray:
        return legit + s * (fraud_value - legit)

    def flag(p_legit: float, p_fraud: float) -> np.ndarray:
        return (rng.random(n) < shifted(p_legit, p_fraud)).astype(float)

    avg_amount = rng.lognormal(3.8, 0.6, n)
    amount = avg_amount * rng.lognormal(0.0, 0.5, n) * shifted(1.0, 3.0)
    # Fraud leans towards the small hours; legitimate spending follows the day.
    night = rng.random(n) < shifted(0.08, 0.5)
    hour = np.where(night, rng.integers(0, 6, n), rng.integers(6, 24, n))
    columns = {
        "amount": amount,
        "hour": hour,
        "day_of_week": rng.integers(0, 7, n),
        "merchant_risk": np.clip(rng.beta(2, 8, n) + shifted(0.0, 0.2), 0, 1),
        "merchant_category": rng.integers(0, 15, n),
        "distance_from_home_km": rng.exponential(shifted(15.0, 80.0)),
        "distance_from_last_txn_km": rng.exponential(shifted(10.0, 40.0)),
        "minutes_since_last_txn": rng.exponential(shifted(600.0, 60.0)),
        "txn_count_1h": rng.poisson(shifted(0.6, 2.0)),
        "txn_count_24h": rng.poisson(shifted(4.0, 7.0)),
        "avg_amount_30d": avg_amount,
        "amount_to_avg_ratio": amount / avg_amount,
        "card_age_days": rng.exponential(shifted(900.0, 300.0)),
        "account_age_days": rng.exponential(shifted(1500.0, 700.0)),
        "is_online": flag(0.35, 0.6),
        "is_international": flag(0.05, 0.2),
        "new_device": flag(0.05, 0.3),
        "failed_logins_24h": rng.poisson(shifted(0.1, 0.8)),
        "chargebacks_90d": rng.poisson(shifted(0.02, 0.2)),
        "ip_risk_score": np.clip(rng.normal(shifted(0.3, 0.5), 0.15), 0, 1),
    }
    # All float64: a client's JSON `3` and `3.0` both satisfy a double column in the signature.
    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float64) for name in FEATURES})
    return frame, fraud.astype(np.int64)


@dataclass
class TrainedModel:
    model: RandomForestClassifier
    metrics: dict[str, float]
    seconds: float
    input_example: pd.DataFrame
    params: dict[str, int | float] = field(default_factory=dict)
    # The rows the metrics were measured on, never trained on: the gate's common ground.
    holdout: tuple[pd.DataFrame, np.ndarray] | None = None
    data_fingerprint: str = ""


# Measured on the holdout, so the gate can measure the Production version there too.
HOLDOUT_METRICS = ("precision", "recall", "roc_auc")


def evaluate(model: Any, rows: pd.DataFrame, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and ROC AUC of a fitted classifier on labelled rows."""
    predicted = model.predict(rows)
    scores = model.predict_proba(rows)[:, 1]
    return {"precision": float(precision_score(labels, predicted, zero_division=0)),
            "recall": float(recall_score(labels, predicted, zero_division=0)),
            "roc_auc": float(roc_auc_score(labels, scores))}


def fingerprint(frame: pd.DataFrame, labels: np.ndarray) -> str:
    """A short hash of the training data (columns, values, labels): same data, same print."""
    digest = hashlib.sha256(",".join(frame.columns).encode())
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype=np.float64)).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def make_forest(n_estimators: int = DEFAULT_N_ESTIMATORS, seed: int = 0) -> RandomForestClassifier:
    """The fraud model, unfitted."""
    # Balanced class weights, or the forest learns to answer "not fraud" to everything.
    return RandomForestClassifier(n_estimators=n_estimators, max_depth=MAX_DEPTH,
                                  min_samples_leaf=2, class_weight="balanced_subsample",
                                  n_jobs=-1, random_state=seed)


def train(frame: pd.DataFrame, labels: np.ndarray, n_estimators: int = DEFAULT_N_ESTIMATORS,
          seed: int = 0) -> TrainedModel:
    """Fit a RandomForest on 75% of the rows; score precision, recall and ROC AUC on the rest."""
    x_train, x_test, y_train, y_test = train_test_split(
        frame, labels, test_size=0.25, stratify=labels, random_state=seed)
    started = time.perf_counter()
    model = make_forest(n_estimators, seed)
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    metrics = {**evaluate(model, x_test, y_test), "fraud_rate": float(labels.mean()),
               "train_seconds": seconds}
    params: dict[str, int | float] = {"n_estimators": n_estimators, "seed": seed,
                                      "rows": len(frame), "max_depth": MAX_DEPTH}
    return TrainedModel(model, metrics, seconds, x_test.head(5), params, (x_test, y_test),
                        fingerprint(frame, labels))


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    seconds: float


def register(trained: TrainedModel, model_name: str = DEFAULT_MODEL_NAME,
             tracking_uri: str | None = None,
             experiment: str = DEFAULT_EXPERIMENT) -> Registered:
    """Log the model (signature, input example, params, metrics) and register a new version."""
    import mlflow  # imported here: a second or two that `make_transactions` users don't need
    from mlflow.models import infer_signature

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    started = time.perf_counter()
    mlflow.set_experiment(experiment)
    example = trained.input_example
    signature = infer_signature(example, trained.model.predict(example))
    with warnings.catch_warnings():
        # MLflow's warnings here (schema details, deprecations) are nothing a user can act on.
        warnings.simplefilter("ignore")
        with mlflow.start_run() as run:
            mlflow.log_params(trained.params)
            mlflow.log_metrics(trained.metrics)
            info = mlflow.sklearn.log_model(trained.model, name="model", signature=signature,
                                            input_example=example,
                                            registered_model_name=model_name,
                                            skops_trusted_types=SKOPS_TRUSTED_TYPES,
                                            pip_requirements=pip_requirements())
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in training_tags(trained).items():
        client.set_model_version_tag(model_name, version, key, value)
    return Registered(model_name, version, run.info.run_id, time.perf_counter() - started)


def training_tags(trained: TrainedModel) -> dict[str, str]:
    """The version's training metadata, readable in the registry without opening the run."""
    tags = {f"training.{key}": str(value) for key, value in trained.params.items()}
    tags.update({f"holdout.{key}": f"{trained.metrics[key]:.6g}" for key in HOLDOUT_METRICS})
    tags["training.data_fingerprint"] = trained.data_fingerprint
    tags["training.fraud_rate"] = f"{trained.metrics['fraud_rate']:.6g}"
    if trained.holdout is not None:
        tags["holdout.rows"] = str(len(trained.holdout[1]))
    return tags


MODEL_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


def pip_requirements(packages: Sequence[str] = MODEL_PACKAGES) -> list[str]:
    """`packages` pinned to the versions installed here; one not installed is left out (skops
    is there only where MLflow saves scikit-learn models with it).

    Stated, not inferred: MLflow infers them by loading the model in a subprocess, which costs
    seconds per registration."""
    pinned = []
    for name in packages:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


def promote(model_name: str, version: str, stage: str = "Production",
            tracking_uri: str | None = None, archive_existing: bool = True) -> None:
    """Move `version` to `stage`; by default archive the versions that held it.

    Archiving matters for rollback: a receiver serves the newest version in the stage, so an
    older version promoted back only wins once the newer one has left the stage.
    """
    from mlflow import MlflowClient

    with warnings.catch_warnings():
        # Stages are deprecated in MLflow yet part of this project's contract (docs/contract.md).
        warnings.simplefilter("ignore", FutureWarning)
        MlflowClient(tracking_uri).transition_model_version_stage(
            model_name, version, stage, archive_existing_versions=archive_existing)


def set_alias(model_name: str, alias: str, version: str, tracking_uri: str | None = None) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_registered_model_alias(model_name, alias, version)


# -- the training gate ------------------------------------------------------------------------

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_CONDITION = re.compile(
    r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.threshold)

    @property
    def higher_is_better(self) -> bool | None:
        """The direction the condition asks for; None for `==`, which has none."""
        return None if self.op == "==" else self.op.startswith(">")

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_condition(text: str) -> Condition:
    """`roc_auc>=0.95`: a logged metric, one of >= > <= < ==, a number."""
    match = _CONDITION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a condition like 'roc_auc>=0.95' "
                         f"(a metric, one of {' '.join(_OPERATORS)}, a number)")
    return Condition(match[1], match[2], float(match[3]))


@dataclass
class GateDecision:
    passed: bool
    lines: list[str]  # what was checked, one line each, failures first marked
    production_version: str | None = None


def production_version(model_name: str, tracking_uri: str | None,
                       exclude: str | None = None) -> str | None:
    from mlflow import MlflowClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        latest = MlflowClient(tracking_uri).get_latest_versions(model_name, ["Production"])
    versions = [int(v.version) for v in latest if v.version != exclude]
    return str(max(versions)) if versions else None


def gate(trained: TrainedModel, registered: Registered, conditions: Sequence[Condition],
         tracking_uri: str | None = None) -> GateDecision:
    """Whether `registered` may go to Production: every condition holds on its metrics, and
    on its holdout it is not worse than the current Production version (measured there
    again; a metric that is not a holdout metric is read from Production's run). For `==`
    conditions, which have no direction, the comparison uses ROC AUC."""
    import mlflow

    metrics, lines, passed = trained.metrics, [], True
    for condition in conditions:
        value = metrics.get(condition.metric)
        if value is None:
            passed = False
            lines.append(f"FAIL {condition}: {condition.metric} is not a logged metric "
                         f"({', '.join(sorted(metrics))})")
        elif condition.holds(value):
            lines.append(f"ok   {condition}: {condition.metric} is {value:.4f}")
        else:
            passed = False
            lines.append(f"FAIL {condition}: {condition.metric} is {value:.4f}")
    current = production_version(registered.name, tracking_uri, exclude=registered.version)
    if current is None:
        lines.append("ok   no version in Production to compare with")
        return GateDecision(passed, lines)
    assert trained.holdout is not None, "train() keeps the holdout"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tracking_uri:
            mlflow.set_tracking_uri(tracking_uri)
        theirs = evaluate(mlflow.sklearn.load_model(f"models:/{registered.name}/{current}"),
                          *trained.holdout)
        run_id = mlflow.MlflowClient().get_model_version(registered.name, current).run_id
        logged = mlflow.MlflowClient().get_run(run_id).data.metrics if run_id else {}
    compared = {(c.metric, c.higher_is_better) for c in conditions
                if c.higher_is_better is not None and c.metric in metrics}
    if not compared or any(c.higher_is_better is None for c in conditions):
        compared.add(("roc_auc", True))
    for metric, higher in sorted(compared, key=str):
        ours = metrics[metric]
        other = theirs.get(metric, logged.get(metric))
        where = "on this holdout" if metric in theirs else "as logged"
        if other is None:
            lines.append(f"ok   Production version {current} has no {metric} to compare")
            continue
        worse = ours < other if higher else ours > other
        passed = passed and not worse
        lines.append(f"{'FAIL' if worse else 'ok  '} {metric} {ours:.4f} vs Production version "
                     f"{current}'s {other:.4f} {where}: {'worse' if worse else 'not worse'}")
    return GateDecision(passed, lines, current)


def sample_request(n: int = 1, seed: int = 12345) -> dict[str, Any]:
    """A `dataframe_split` scoring body with `n` fresh transactions."""
    frame, _ = make_transactions(max(n, 1), seed)
    frame = frame.head(n)
    return {"dataframe_split": {"columns": list(frame.columns),
                                "data": frame.to_numpy().tolist()}}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = make_parser()
    return check_args(parser, parser.parse_args(argv))


def make_parser(description: str = "Train the fraud-detection model and register a new "
                "version in MLflow.") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="MLflow tracking server (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--n-estimators", type=int, default=DEFAULT_N_ESTIMATORS)
    parser.add_argument("--seed", type=int, default=1,
                        help="data and forest seed; a new seed gives a different model")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--promote", action="store_true",
                        help="move the new version to --stage (default Production)")
    parser.add_argument("--stage", default=None,
                        help="stage for --promote (Staging, Production, ...); implies --promote")
    parser.add_argument("--archive-existing", action=argparse.BooleanOptionalAction,
                        default=True, help="archive versions that held the stage (default: yes)")
    parser.add_argument("--alias", action="append", default=[], metavar="NAME",
                        help="point this alias at the new version (repeatable)")
    parser.add_argument("--promote-if", action="append", default=[], metavar="CONDITION",
                        help="the training gate, e.g. 'roc_auc>=0.95' (any logged metric; "
                             ">=, >, <=, <, ==; repeatable, all must hold): after --stage "
                             "(default Staging), move to Production only if the conditions "
                             "hold and the version is not worse than the current Production "
                             "version on the same holdout; else exit 1")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.n_estimators < 1 or args.rows < 100:
        parser.error("--n-estimators must be >= 1 and --rows >= 100")
    try:
        args.conditions = [parse_condition(text) for text in args.promote_if]
    except ValueError as exc:
        parser.error(f"--promote-if: {exc}")
    if args.conditions and (args.stage or "Staging").lower() == "production":
        parser.error("--promote-if moves the version to Production itself: use --stage Staging")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    frame, labels = make_transactions(args.rows, args.seed)
    print(f"Training on {len(frame):,} transactions ({labels.mean():.1%} fraud), "
          f"{args.n_estimators} trees, seed {args.seed}", flush=True)
    trained = train(frame, labels, args.n_estimators, args.seed)
    m = trained.metrics
    print(f"Trained in {trained.seconds:.1f}s: precision {m['precision']:.2f}, "
          f"recall {m['recall']:.2f}, ROC AUC {m['roc_auc']:.3f}", flush=True)

    return publish(trained, args)


def publish(trained: TrainedModel, args: argparse.Namespace) -> int:
    """Register `trained`, then move it as the arguments say (stage, aliases, the gate); the
    exit status: 1 when the gate refuses it."""
    import mlflow

    # MLflow's INFO lines ("Waiting up to 300 seconds ...") would repeat what this script prints;
    # set after the import, which configures MLflow's logger.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    registered = register(trained, args.model_name, args.tracking_uri, args.experiment)
    print(f"Registered {registered.name} version {registered.version} "
          f"in {registered.seconds:.1f}s (run {registered.run_id[:8]}, "
          f"tracking {mlflow.get_tracking_uri()})", flush=True)

    stage = args.stage or ("Staging" if args.conditions else "Production")
    if args.promote or args.stage or args.conditions:
        started = time.perf_counter()
        promote(registered.name, registered.version, stage, args.tracking_uri,
                args.archive_existing)
        archived = ", older versions archived" if args.archive_existing else ""
        print(f"Moved version {registered.version} to {stage}{archived} "
              f"in {time.perf_counter() - started:.2f}s", flush=True)
    for alias in args.alias:
        set_alias(registered.name, alias, registered.version, args.tracking_uri)
        print(f"Alias {alias} -> version {registered.version}", flush=True)
    if args.conditions:
        return run_gate(trained, registered, args.conditions, args.tracking_uri, stage)
    return 0


def run_gate(trained: TrainedModel, registered: Registered, conditions: Sequence[Condition],
             tracking_uri: str | None, stage: str) -> int:
    decision = gate(trained, registered, conditions, tracking_uri)
    print(f"Training gate for version {registered.version}:", flush=True)
    for line in decision.lines:
        print(f"  {line}", flush=True)
    if not decision.passed:
        print(f"Refused: version {registered.version} stays in {stage}"
              + (f"; Production keeps version {decision.production_version}"
                 if decision.production_version else ""), flush=True)
        return 1
    promote(registered.name, registered.version, "Production", tracking_uri)
    print(f"Gate passed: moved version {registered.version} to Production"
          + (f", version {decision.production_version} archived"
             if decision.production_version else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
