"""What the trainer calls on every step boundary: stage tracking plus a policy's online updates,
combined into the :class:`CurriculumState` that the workers read.

    driver = CurriculumDriver(policy)
    state = driver.advance(step=trainer.global_step, tokens=tokens_seen, metrics=logged)
    shared_state.publish(state)          # the loader issue's shared-memory writer

Run it on rank 0 (or on every rank with the same all-reduced metrics: it is deterministic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.policy import Policy
from policies.stages import StageTracker, StageTransition
from policies.state import CurriculumState


class CurriculumDriver:
    """Advances a policy's stages and online state from step boundaries."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.tracker = StageTracker(policy.stages)
        self._published: dict[str, float] = {}

    @property
    def history(self) -> tuple[StageTransition, ...]:
        """Stages entered so far."""
        return self.tracker.history

    def advance(self, step: int, tokens: int,
                metrics: Mapping[str, float] | None = None) -> CurriculumState:
        """Observe a step boundary; returns the state the workers should decide under."""
        metrics = dict(metrics or {})
        stage = self.tracker.update(step, tokens, metrics)
        self._published = dict(self.policy.observe(step, tokens, metrics))
        return CurriculumState(step, tokens, stage, {**metrics, **self._published})

    def state_dict(self) -> dict[str, Any]:
        """Tracker and policy state, for checkpoints."""
        return {"tracker": self.tracker.state_dict(), "policy": self.policy.state_dict(),
                "published": dict(self._published)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.tracker.load_state_dict(state["tracker"])
        self.policy.load_state_dict(state["policy"])
        self._published = dict(state.get("published", {}))
