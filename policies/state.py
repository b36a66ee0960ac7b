"""The curriculum state a policy decides under: where training is, as every worker sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CurriculumState:
    """A snapshot of training progress, written by the trainer and read by the policy stage.

    The trainer (rank 0) is its only writer; DataLoader workers read a copy that may be a step
    stale, which is why policies never need more than this snapshot to decide. Plain data only
    (ints and a dict of floats), so it pickles and fits in shared memory. Treat ``metrics`` as
    read-only.
    """

    step: int = 0
    """Optimizer steps completed so far (global step)."""

    tokens: int = 0
    """Training tokens consumed so far, summed over ranks."""

    stage: int = 0
    """Index of the current curriculum stage (0-based), as decided by the stage tracker."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    """Latest logged metrics (``probe_loss/values`` ...) plus values a policy publishes for its
    workers (``bandit/weight/values`` ...)."""

    def __post_init__(self) -> None:
        if self.step < 0 or self.tokens < 0 or self.stage < 0:
            raise ValueError(
                f"curriculum state must be non-negative, got step={self.step}, "
                f"tokens={self.tokens}, stage={self.stage}"
            )
