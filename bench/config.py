"""How much each part does: the full run (the record) and the smoke run (the test suite)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    smoke: bool
    # The model: examples/train_model.py's forest (50 trees, 20 features) on this many rows.
    train_rows: int = 20_000
    n_estimators: int = 50
    versions: int = 8
    # 1. promotion to serving
    promotions: int = 20
    poll_promotions: int = 10
    poll_interval: float = 5.0
    # 2. swap under load
    clients: int = 32
    swaps: int = 10
    swap_spacing: float = 4.0  # seconds between promotions; the 2 s after each are measured
    baseline_restarts: int = 10
    # 3. throughput
    load_seconds: float = 10.0
    concurrencies: tuple[int, ...] = (1, 8, 32, 128)
    row_counts: tuple[int, ...] = (1, 100)
    floor_iterations: int = 300
    # 4. memory
    memory_swaps: int = 100
    memory_cache_size: int = 5
    # 5. cost to the registry
    registry_calls: int = 100
    # 6. notification storm
    storm_notifications: int = 1000
    storm_seconds: float = 1.0
    # 7. fan-out
    fanout_replicas: int = 1000
    fanout_rounds: int = 20
    # 9. progressive delivery
    rollout_step_seconds: float = 5.0
    rollout_rounds: int = 3
    rollout_aborts: int = 20
    # 12. throughput and p99 against clients
    curve_clients: tuple[int, ...] = (1, 8, 32, 128, 512, 1000)
    curve_seconds: float = 3.0

    @classmethod
    def full(cls) -> Config:
        return cls(smoke=False)

    @classmethod
    def quick(cls) -> Config:
        """A few seconds per part: proves every part runs and yields figures."""
        return cls(smoke=True, train_rows=2_000, n_estimators=10, versions=4, promotions=2,
                   poll_promotions=1, poll_interval=1.0, clients=4, swaps=1, swap_spacing=2.5,
                   baseline_restarts=0, load_seconds=1.0, concurrencies=(8,),
                   row_counts=(1, 100), floor_iterations=20, memory_swaps=6,
                   memory_cache_size=2, registry_calls=10, storm_notifications=100,
                   storm_seconds=0.5, fanout_replicas=100, fanout_rounds=2,
                   rollout_step_seconds=1.0, rollout_rounds=1, rollout_aborts=3,
                   curve_clients=(1, 8), curve_seconds=1.0)
