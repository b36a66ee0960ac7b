"""An adaptive policy: exponential weights over behaviors, rewarded by probe-loss improvement.

Each behavior is an arm. A document belongs to the arm of its highest affinity. At every step
boundary the trainer calls :meth:`BanditPolicy.observe` with the logged metrics; the reward of
arm ``b`` is the relative improvement of its probe loss since the previous observation,
``r_b = clip((loss_prev - loss_now) / loss_prev, -1, 1)``, and its log-weight moves by
``learning_rate * r_b``. Because every arm's probe loss is observed each time (full
information), this is EXP3's exponential-weights update without importance weighting (Hedge);
with exploration ``gamma`` the arm probabilities are ``p = (1 - gamma) softmax(log_w) + gamma / K``.
An arm's documents are emitted with loss weight ``clip(K p_b, min_weight, max_weight)`` and
priority ``weight - 1`` (0 when all arms are equal): behaviors whose probe loss is improving get
more of the batch gradient, in the spirit of online data mixing.

The weights are a pure function of the sequence of observed metrics: :meth:`observe` publishes
them as ``bandit/weight/<behavior>`` into the curriculum state, and :meth:`decide` reads them
from there, so DataLoader workers follow the trainer without sharing objects. Without metrics
(a preview) every arm keeps weight 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.decisions import EMIT, DecisionBatch, Emit
from policies.policy import BasePolicy
from policies.registry import PolicyContext, register_policy
from policies.schema import PolicySpec
from policies.scores import DocumentScores, ScoreBatch
from policies.stages import metric_value
from policies.state import CurriculumState

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PUBLISHED_PREFIX = "bandit/weight/"


@register_policy("bandit")
class BanditPolicy(BasePolicy):
    """Exponential-weights bandit over behaviors (see the module docstring)."""

    def __init__(self, spec: PolicySpec, arms: tuple[str, ...], metric: str = "probe_loss",
                 learning_rate: float = 2.0, exploration: float = 0.1,
                 min_weight: float = 0.25, max_weight: float = 4.0) -> None:
        super().__init__(spec)
        self.arms = arms
        self.metric = metric
        self.learning_rate = learning_rate
        self.exploration = exploration
        self.min_weight, self.max_weight = min_weight, max_weight
        self.log_weights = np.zeros(len(arms))
        self.previous_loss = np.full(len(arms), np.nan)
        # Column of each store behavior's arm, or -1 for behaviors that are not arms.
        self._arm_of_behavior = np.array(
            [arms.index(b) if b in arms else -1 for b in spec.behaviors], np.int64)
        self._keys = tuple(f"{PUBLISHED_PREFIX}{arm}" for arm in arms)
        self._labels = tuple(f"bandit (arm {arm})" for arm in arms)

    @classmethod
    def from_context(cls, context: PolicyContext) -> BanditPolicy:
        """Build from ``params``: arms, metric, learning_rate, exploration, min/max_weight."""
        keys = context.params_keys(("arms", "metric", "learning_rate", "exploration",
                                    "min_weight", "max_weight"))
        behaviors = context.spec.behaviors
        arms = behaviors
        if "arms" in keys:
            arms_list = []
            for item in keys["arms"].sequence():
                arm = item.string(_IDENTIFIER, "a behavior name")
                if arm not in behaviors:
                    raise item.error(f"unknown behavior '{arm}'; the store's behaviors are: "
                                     f"{', '.join(behaviors)}")
                if arm in arms_list:
                    raise item.error(f"duplicate arm '{arm}'")
                arms_list.append(arm)
            if not arms_list:
                raise keys["arms"].error("a bandit needs at least one arm")
            arms = tuple(arms_list)
        metric = keys["metric"].string(_IDENTIFIER, "a metric family like 'probe_loss'") \
            if "metric" in keys else "probe_loss"
        learning_rate = keys["learning_rate"].number(0.0, 100.0, exclusive_minimum=True) \
            if "learning_rate" in keys else 2.0
        exploration = keys["exploration"].number(0.0, 1.0) if "exploration" in keys else 0.1
        min_weight = keys["min_weight"].number(0.0, 1000.0) if "min_weight" in keys else 0.25
        max_weight = keys["max_weight"].number(0.0, 1000.0, exclusive_minimum=True) \
            if "max_weight" in keys else 4.0
        if max_weight < min_weight:
            raise keys["max_weight"].error(
                f"max_weight ({max_weight:g}) is below min_weight ({min_weight:g})")
        return cls(context.spec, arms, metric, learning_rate, exploration, min_weight,
                   max_weight)

    # -- online learning (trainer side) ------------------------------------------------------

    def probabilities(self) -> np.ndarray:
        """Current arm probabilities."""
        shifted = np.exp(self.log_weights - self.log_weights.max())
        return (1.0 - self.exploration) * shifted / shifted.sum() + \
            self.exploration / len(self.arms)

    def arm_weights(self) -> np.ndarray:
        """Current loss weight of each arm's documents."""
        return np.clip(len(self.arms) * self.probabilities(), self.min_weight, self.max_weight)

    def observe(self, step: int, tokens: int, metrics: Mapping[str, float]) -> dict[str, float]:
        losses = np.array([metric_value(metrics, f"{self.metric}.{arm}") for arm in self.arms])
        ok = np.isfinite(losses) & np.isfinite(self.previous_loss) & (self.previous_loss > 0)
        if ok.any():
            reward = np.zeros(len(self.arms))
            reward[ok] = np.clip((self.previous_loss[ok] - losses[ok]) / self.previous_loss[ok],
                                 -1.0, 1.0)
            self.log_weights = self.log_weights + self.learning_rate * reward
            self.log_weights -= self.log_weights.max()  # keep them bounded; same probabilities
        self.previous_loss = np.where(np.isfinite(losses), losses, self.previous_loss)
        return dict(zip(self._keys, self.arm_weights().tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.tolist(),
                "previous_loss": self.previous_loss.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log_weights = np.asarray(state["log_weights"], np.float64)
        self.previous_loss = np.asarray(state["previous_loss"], np.float64)

    # -- deciding (worker side) --------------------------------------------------------------

    def _published_weights(self, state: CurriculumState) -> list[float]:
        default = min(max(1.0, self.min_weight), self.max_weight)
        weights = []
        for key in self._keys:
            value = state.metrics.get(key, default)
            weights.append(float(value) if math.isfinite(value) else default)
        return weights

    def decide(self, scores: DocumentScores, state: CurriculumState) -> Emit:
        affinity = np.asarray(scores.affinity, np.float64)
        behavior = int(np.argmax(np.where(np.isnan(affinity), -np.inf, affinity)))
        arm = int(self._arm_of_behavior[behavior])
        if arm < 0:
            return Emit(1.0, 0.0, "bandit (not an arm)")
        weight = self._published_weights(state)[arm]
        return Emit(weight, weight - 1.0, self._labels[arm])

    def decide_batch(self, scores: ScoreBatch, state: CurriculumState) -> DecisionBatch:
        n = len(scores)
        affinity = np.asarray(scores.affinity, np.float64)
        behavior = np.argmax(np.where(np.isnan(affinity), -np.inf, affinity), axis=1)
        arm = self._arm_of_behavior[behavior]
        table = np.array([*self._published_weights(state), 1.0])  # index -1: not an arm
        weight = table[arm]
        priority = np.where(arm >= 0, weight - 1.0, 0.0)
        labels = (*self._labels, "bandit (not an arm)")
        return DecisionBatch(
            np.asarray(scores.rows, np.int64), np.full(n, EMIT, np.uint8), weight, priority,
            np.full(n, -1, np.int64), np.full(n, -1, np.int64),
            [labels[a] for a in arm.tolist()], [""] * n, [()] * n)
