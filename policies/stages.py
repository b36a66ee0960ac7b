"""Stage transitions: when a curriculum moves from one stage to the next.

The trainer calls :meth:`StageTracker.update` on step boundaries with the step, the tokens and
the latest logged metrics; it returns the current stage. The answer depends only on the sequence
of observations (never on wall time or randomness), so rank 0 can decide and broadcast, or every
rank can decide from the same all-reduced metrics and agree.

A stage ends at the first update where, counting from the update that entered it, at least
``min_steps`` steps have passed and one of: ``steps`` steps passed, ``tokens`` tokens passed,
the ``when`` condition holds on the metrics, or ``max_steps`` steps passed. At most one
transition happens per update. Missing metrics read as NaN, so a condition on a metric that was
not logged yet is false.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from policies.expressions import compile_scalar, truth
from policies.schema import StageSpec


@dataclass(frozen=True)
class StageTransition:
    """Entering a stage."""

    stage: int
    """Index of the stage entered."""

    step: int
    """Global step at which it was entered."""

    tokens: int
    """Training tokens consumed when it was entered."""

    reason: str
    """Why (``start``, ``steps >= 2000``, ``when: probe_loss.values < 2.1``, ``max_steps 5000``)."""


def metric_value(metrics: Mapping[str, float], name: str) -> float:
    """A metric by its expression name: ``probe_loss.values`` reads the logged key
    ``probe_loss/values`` (Lightning style) or ``probe_loss.values``; missing is NaN."""
    value = metrics.get(name.replace(".", "/"))
    if value is None:
        value = metrics.get(name)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class StageTracker:
    """Decides the current stage from step boundaries (see the module docstring)."""

    def __init__(self, stages: Sequence[StageSpec]) -> None:
        if not stages:
            raise ValueError("a stage tracker needs at least one stage")
        self.stages = tuple(stages)
        self._conditions: list[Callable[[dict[str, float]], float] | None] = []
        for stage in self.stages:
            when = stage.exit.when if stage.exit is not None else None
            self._conditions.append(
                None if when is None else compile_scalar(when.tree, _leaf))
        self._history: list[StageTransition] = [StageTransition(0, 0, 0, "start")]
        self._last_step = 0

    @property
    def stage(self) -> int:
        """Index of the current stage."""
        return self._history[-1].stage

    @property
    def history(self) -> tuple[StageTransition, ...]:
        """Every stage entered so far, in order (the first is stage 0 at step 0)."""
        return tuple(self._history)

    def update(self, step: int, tokens: int,
               metrics: Mapping[str, float] | None = None) -> int:
        """Observe a step boundary; returns the (possibly new) current stage."""
        if step < self._last_step:
            raise ValueError(f"steps must not go backwards: got {step} after {self._last_step}")
        self._last_step = step
        index = self.stage
        spec = self.stages[index].exit
        if spec is None:
            return index
        entered = self._history[-1]
        stage_steps, stage_tokens = step - entered.step, tokens - entered.tokens
        if stage_steps < spec.min_steps:
            return index
        reason = None
        if spec.steps is not None and stage_steps >= spec.steps:
            reason = f"steps >= {spec.steps}"
        elif spec.tokens is not None and stage_tokens >= spec.tokens:
            reason = f"tokens >= {spec.tokens}"
        elif spec.when is not None:
            env = {"step": float(step), "tokens": float(tokens),
                   "stage_steps": float(stage_steps), "stage_tokens": float(stage_tokens),
                   "__metrics__": metrics or {}}
            if truth(self._conditions[index](env)):
                reason = f"when: {spec.when.source}"
        if reason is None and spec.max_steps is not None and stage_steps >= spec.max_steps:
            reason = f"max_steps {spec.max_steps}"
        if reason is not None:
            self._history.append(StageTransition(index + 1, step, tokens, reason))
        return self.stage

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled conditions are closures; rebuild them from the stages when unpickled.
        return (_restore_tracker, (self.stages, self.state_dict()))

    def state_dict(self) -> dict[str, Any]:
        """The transitions so far, for checkpoints."""
        return {"history": [asdict(t) for t in self._history], "last_step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        history = [StageTransition(**t) for t in state["history"]]
        if not history or history[-1].stage >= len(self.stages):
            raise ValueError("stage tracker state does not match this policy's stages")
        self._history = history
        self._last_step = int(state["last_step"])


def _restore_tracker(stages: tuple[StageSpec, ...], state: Mapping[str, Any]) -> StageTracker:
    tracker = StageTracker(stages)
    tracker.load_state_dict(state)
    return tracker


def _leaf(name: str) -> Callable[[dict[str, Any]], float]:
    if name in ("step", "tokens", "stage_steps", "stage_tokens"):
        return lambda env: env[name]
    return lambda env: metric_value(env["__metrics__"], name)
