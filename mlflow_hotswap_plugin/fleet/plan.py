"""What a rollout will do, fixed before it starts: the versions, the steps, the limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow_hotswap_plugin.fleet.analysis import Limits
from mlflow_hotswap_plugin.fleet.state import percent_text


@dataclass(frozen=True)
class Plan:
    name: str
    canary: str  # the reference, e.g. @challenger
    version: str  # the version it points to
    champion: str | None  # the version the promotion target points to now
    steps: tuple[float, ...] = (5, 25, 50, 100)
    step_seconds: float = 60.0
    max_wait: float = 300.0
    limits: Limits = field(default_factory=Limits)
    promote_alias: str | None = None
    promote_stage: str | None = None
    poll_seconds: float = 0.25

    @property
    def target(self) -> str:
        return f"@{self.promote_alias}" if self.promote_alias else str(self.promote_stage)

    def label(self, index: int) -> str:
        return f"step {index + 1}/{len(self.steps)} {percent_text(self.steps[index])} %"

    def describe(self) -> list[str]:
        limits = self.limits
        champion = f"version {self.champion}" if self.champion else "nothing yet"
        return [
            f"rollout of {self.name} version {self.version} ({self.canary}); "
            f"{self.target} is {champion}",
            *(f"  {self.label(i)}: hold {self.step_seconds:g} s and until "
              f"{limits.min_requests} canary requests (at most {self.max_wait:g} s)"
              for i in range(len(self.steps))),
            f"  each step: error rate <= {limits.max_error_rate:g}, p99 latency ratio <= "
            f"{limits.max_latency_ratio:g}, agreement >= {limits.min_agreement:g} "
            "(where a shadow of this version runs)",
            f"  then: {self.target} -> version {self.version}, canary share back to 0",
            "  on a failed check: canary share 0 at once, the version tag says why",
        ]
