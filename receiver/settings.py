"""The one place that reads the receiver's environment variables (docs/contract.md, "Receiver
settings").

Each variable is declared once, beside its field: name, how it is read, bounds and meaning
(`mlflow_hotswap_plugin.env`). Its help is what `mlflow-hotswap-receiver --help` and the
README's settings table show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mlflow_hotswap_plugin import env
from receiver.references import Reference, Share, parse_references, parse_share

Batching = Literal["auto", "on", "off"]
BATCHING_MODES: tuple[Batching, ...] = ("auto", "on", "off")
# One error type for a bad setting, in both packages; the receiver's older name stays importable.
SettingsError = env.SettingError

_SHARE = "<stage or @alias>[:<percent>], e.g. @challenger:10"


def _shadow(text: str) -> Share:
    return parse_share(text, untagged=100.0)


def usable_cores() -> int:
    # The affinity mask, not os.cpu_count(): a container or taskset may allow fewer cores.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _workers(raw: str) -> int:
    if raw.strip().lower() == "auto":
        return usable_cores()
    return env.integer(low=1).parse(raw.strip())


def parse_workers(raw: str) -> int:
    """`--workers`: read and checked as HOTSWAP_WORKERS is (errors name that variable)."""
    setting = env.declared(Settings, "workers")
    value: int = setting.parse(raw)
    setting.validate(value)
    return value


@dataclass(frozen=True)
class Settings:
    tracking_uri: str = field(metadata=env.declare(
        "MLFLOW_TRACKING_URI", env.text("the MLflow tracking URI"), "where the registry is",
        redact=env.uri))
    model_names: tuple[str, ...] = field(metadata=env.declare(
        "MODEL_NAME", env.items("registered model names, comma-separated", at_least=1),
        "registered model(s) to serve, comma-separated; the first is the default"))
    registry_uri: str | None = field(default=None, metadata=env.declare(
        "MLFLOW_REGISTRY_URI", env.text("a registry URI"),
        "a registry elsewhere than the tracking server", default_text="the tracking URI",
        redact=env.uri))
    stage: str = field(default="Production", metadata=env.declare(
        "MODEL_STAGE", env.text("a stage"), "stage to follow"))
    alias: str | None = field(default=None, metadata=env.declare(
        "MODEL_ALIAS", env.text("an alias"),
        "alias to follow instead of a stage (e.g. `champion`)"))
    cache_size: int = field(default=5, metadata=env.declare(
        "MODEL_CACHE_SIZE", env.integer(low=1), "model versions kept in memory (LRU)"))
    update_interval: float = field(default=60.0, metadata=env.declare(
        "MODEL_UPDATE_INTERVAL", env.seconds(),
        "poll interval, seconds (each wait drawn within ±10 %, so replicas started together do "
        "not poll in step)"))
    webhook_secret: str | None = field(default=None, metadata=env.declare(
        "HOTSWAP_WEBHOOK_SECRET", env.text("comma-separated secrets"),
        "if set, unsigned or wrongly signed notifications get 401; several comma-separated "
        "secrets (rotation): any verifies", secret=True))
    admin_token: str | None = field(default=None, metadata=env.declare(
        "HOTSWAP_ADMIN_TOKEN", env.text("a token"),
        "if set, `POST /models/reload` needs `Authorization: Bearer <token>`", secret=True))
    max_body_bytes: int = field(default=10 * 1024 * 1024, metadata=env.declare(
        "HOTSWAP_MAX_BODY_BYTES", env.integer(low=1),
        "largest request body accepted, in bytes (413 above)"))
    # Not environment settings. How long a signed notification stays acceptable, and how long
    # delivery ids are remembered; the back-off after a failed update: 5, 10, 30, then every
    # 60 s.
    webhook_max_age: float = 300.0
    retry_delays: tuple[float, ...] = (5.0, 10.0, 30.0, 60.0)
    model_dir: str | None = field(default=None, metadata=env.declare(
        "HOTSWAP_MODEL_DIR", env.text("a directory"),
        "where downloaded model files are kept while cached",
        default_text="a temp dir, removed at shutdown"))
    # Scoring is mostly Python holding the GIL, so more threads only contend (bench/ measures
    # 1, 2 and unlimited side by side).
    predict_threads: int = field(default=1, metadata=env.declare(
        "HOTSWAP_PREDICT_THREADS", env.integer(low=1),
        "predict calls run at once, across model versions (others queue); a batched model "
        "version is scored by one merged call at a time, so more threads help only several "
        "versions at once or unbatched models that release the GIL"))
    load_timeout: float = field(default=600.0, metadata=env.declare(
        "HOTSWAP_LOAD_TIMEOUT", env.seconds(),
        "seconds a download + load + warm-up may take before it is abandoned and counted as "
        "failed"))
    # The scoring lane (lane.py); defaults chosen from the throughput runs in bench/.
    batching: Batching = field(default="auto", metadata=env.declare(
        "HOTSWAP_BATCHING", env.choice(*BATCHING_MODES),
        "`auto`: merge concurrent requests into one `predict` for models whose predict is "
        "row-independent (scikit-learn, XGBoost, LightGBM, CatBoost); `on`: for every model; "
        "`off`: never"))
    batch_max_rows: int = field(default=1024, metadata=env.declare(
        "HOTSWAP_BATCH_MAX_ROWS", env.integer(low=1),
        "most rows in one merged `predict` call (a larger request still goes, alone)"))
    max_queue: int = field(default=256, metadata=env.declare(
        "HOTSWAP_MAX_QUEUE", env.integer(low=1),
        "requests admitted to the scoring lane at once; beyond it 503 `OVERLOADED` with "
        "`Retry-After`, at once"))
    request_timeout: float = field(default=60.0, metadata=env.declare(
        "HOTSWAP_REQUEST_TIMEOUT", env.seconds(),
        "seconds a request may wait and be scored; beyond it 504 `REQUEST_TIMEOUT` and its "
        "work is dropped"))
    # Connections (connections.py): how long a client may take to send a request, and how
    # many connections it takes to fill the process.
    header_timeout: float = field(default=10.0, metadata=env.declare(
        "HOTSWAP_HEADER_TIMEOUT", env.seconds(),
        "seconds a request's headers may take, from the connection's start or the request's "
        "first byte; beyond it the connection is closed (408 where an answer can still be "
        "sent)"))
    body_timeout: float = field(default=30.0, metadata=env.declare(
        "HOTSWAP_BODY_TIMEOUT", env.seconds(),
        "seconds a request's body may stall (nothing received while the receiver reads); "
        "beyond it the connection is closed with 408"))
    max_connections: int | None = field(default=None, metadata=env.declare(
        "HOTSWAP_MAX_CONNECTIONS", env.integer(low=1),
        "open connections; beyond it new ones are closed at once, and the open ones keep "
        "being served", default_text="just below the soft open-file limit"))
    # Staged rollout: references loaded ahead, and who takes a share of the traffic.
    prewarm: tuple[Reference, ...] = field(default=(), metadata=env.declare(
        "MODEL_PREWARM", env.parsed(parse_references, "stages and @aliases, comma-separated"),
        "stages and `@aliases` whose versions are loaded and warmed up ahead, e.g. "
        "`Staging,@challenger`; cached (they count toward `MODEL_CACHE_SIZE`), never served at "
        "the default endpoint"))
    canary: Share | None = field(default=None, metadata=env.declare(
        "MODEL_CANARY", env.parsed(parse_share, _SHARE),
        "`<stage or @alias>[:<percent>]`, e.g. `@challenger:10`: that share of requests "
        "answered by that version; sticky per `X-Hotswap-Key`. Without `:<percent>` "
        "(`@challenger`) the share is the registered model's tag `hotswap.canary_percent` "
        "(0-100), read at every refresh; no tag, or a value that is not a percent (logged "
        "once), is 0"))
    shadow: Share | None = field(default=None, metadata=env.declare(
        "MODEL_SHADOW", env.parsed(_shadow, _SHARE),
        "`<stage or @alias>[:<percent>]`, e.g. `Staging:50`: that share also scored by that "
        "version after the answer is sent. Without `:<percent>` the share is the tag "
        "`hotswap.shadow_percent`; with no tag, 100; a value that is not a percent, 0"))
    # Worker processes sharing the port (workers.py); 1 serves from this process alone.
    workers: int = field(default=1, metadata=env.declare(
        "HOTSWAP_WORKERS", env.Kind(_workers, "an integer or auto", env.integer(low=1).validate),
        "worker processes sharing the port and swapping together (`--workers N` wins over "
        "it); `auto`: one per core this process may use"))

    def __post_init__(self) -> None:
        env.check(self)
        for name, share in (("canary", self.canary), ("shadow", self.shadow)):
            if share is not None and share.reference == self.followed:
                raise env.declared(self, name).error(
                    share, f"a reference other than the followed one ({self.reference})",
                    "it would never differ from the served version.")
        # Each served name holds its version and one per rollout reference in the cache; fewer
        # slots and every refresh would evict what the next one loads again.
        needed = len(self.model_names) * (1 + len(self.rollout_references))
        if self.rollout_references and self.cache_size < needed:
            raise env.declared(self, "cache_size").error(
                self.cache_size, f"at least {needed}",
                f"it holds the served version and the {len(self.rollout_references)} rollout "
                f"reference(s) ({', '.join(map(str, self.rollout_references))}) of "
                f"{len(self.model_names)} model(s).")

    def __repr__(self) -> str:
        # A repr ends up in logs and tracebacks: no secret, no password in a URI.
        return env.represent(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return env.read(cls, environ)

    @property
    def followed(self) -> Reference:
        return Reference("alias", self.alias) if self.alias else Reference("stage", self.stage)

    @property
    def rollout_references(self) -> tuple[Reference, ...]:
        """Every reference loaded besides the followed one: pre-warmed, canary, shadow."""
        found = list(self.prewarm)
        for share in (self.canary, self.shadow):
            if share is not None and share.reference not in found:
                found.append(share.reference)
        return tuple(ref for ref in found if ref != self.followed)

    @property
    def default_model(self) -> str:
        return self.model_names[0]

    @property
    def reference(self) -> str:
        """What is followed, as MLflow's URI syntax writes it: `@champion` or `/Production`."""
        return f"@{self.alias}" if self.alias else f"/{self.stage}"
