"""A stage's rules compiled for speed: one closure per condition for a single document, numpy
over a batch, with identical results.

Rules run in order. ``upweight``, ``downweight``, ``prioritize`` and ``tag`` modify the
document and go on; the first ``delay``, ``drop`` or failed ``sample`` decides and stops. A
document no terminal rule stopped is emitted with the accumulated weight (clamped to the
policy's ``[min_weight, max_weight]``) and priority; its decision names every rule that shaped
it (``stages[0].rules[0] (upweight) + stages[0].rules[2] (prioritize)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from policies.decisions import DEFER, DROP, EMIT, DecisionBatch, Defer, Drop, Emit
from policies.expressions import (
    Expression,
    batch_truth,
    compile_batch,
    compile_scalar,
    truth,
)
from policies.sampling import uniform, uniform_array
from policies.schema import (
    Delay,
    Downweight,
    DropRule,
    Prioritize,
    Rule,
    Sample,
    StageSpec,
    Tag,
    Upweight,
)
from policies.scores import ScoreLayout
from policies.state import CurriculumState


def _scalar_leaf(layout: ScoreLayout) -> Callable[[str], Callable[[list[float]], float]]:
    def leaf(name: str) -> Callable[[list[float]], float]:
        slot = layout.slots[name]
        return lambda env: env[slot]
    return leaf


def _batch_leaf(layout: ScoreLayout) -> Callable[[str], Callable[[np.ndarray], np.ndarray]]:
    def leaf(name: str) -> Callable[[np.ndarray], np.ndarray]:
        slot = layout.slots[name]
        return lambda matrix: matrix[:, slot]
    return leaf


class CompiledStage:
    """The rules of one stage, ready to decide documents."""

    def __init__(self, stage: StageSpec, layout: ScoreLayout, seed: int,
                 min_weight: float, max_weight: float) -> None:
        self.stage = stage
        self.seed = seed
        self.min_weight, self.max_weight = min_weight, max_weight
        self.default_label = f"stages[{stage.index}] (default)"
        scalar_leaf, batch_leaf = _scalar_leaf(layout), _batch_leaf(layout)

        def scalar(expression: Expression | None):
            return None if expression is None else compile_scalar(expression.tree, scalar_leaf)

        def batch(expression: Expression | None):
            return None if expression is None else compile_batch(expression.tree, batch_leaf)

        self.rules: tuple[Rule, ...] = stage.rules
        self.scalar_when = [scalar(rule.when) for rule in stage.rules]
        self.batch_when = [batch(rule.when) for rule in stage.rules]
        self.scalar_priority = [scalar(r.priority) if isinstance(r, Prioritize) else None
                                for r in stage.rules]
        self.batch_priority = [batch(r.priority) if isinstance(r, Prioritize) else None
                               for r in stage.rules]
        self._labels: dict[int, str] = {}
        self._tags: dict[int, tuple[str, ...]] = {0: ()}
        self.drop_reasons = [
            rule.reason if isinstance(rule, DropRule)
            else f"sample: keep {rule.keep:g}" if isinstance(rule, Sample) else ""
            for rule in stage.rules
        ]

    # -- labels ------------------------------------------------------------------------------

    def emit_label(self, mask: int) -> str:
        """The rule label of an emitted document whose modifying rules form ``mask``."""
        label = self._labels.get(mask)
        if label is None:
            parts = [rule.label for i, rule in enumerate(self.rules) if mask >> i & 1]
            label = " + ".join(parts) if parts else self.default_label
            self._labels[mask] = label
        return label

    def tags_for(self, mask: int) -> tuple[str, ...]:
        """The tags of the ``tag`` rules in ``mask``, in rule order, without repeats."""
        tags = self._tags.get(mask)
        if tags is None:
            found = [rule.tag for i, rule in enumerate(self.rules)
                     if mask >> i & 1 and isinstance(rule, Tag)]
            tags = tuple(dict.fromkeys(found))
            self._tags[mask] = tags
        return tags

    # -- one document ------------------------------------------------------------------------

    def decide(self, env: list[float], row: int, state: CurriculumState) -> Emit | Defer | Drop:
        """Decide one document from its slot vector ``env``."""
        weight, priority, mask, tag_mask = 1.0, 0.0, 0, 0
        for i, rule in enumerate(self.rules):
            when = self.scalar_when[i]
            if when is not None and not truth(when(env)):
                continue
            if isinstance(rule, Upweight):
                weight = min(weight * rule.factor, rule.max_weight)
            elif isinstance(rule, Downweight):
                weight = weight * rule.factor
            elif isinstance(rule, Prioritize):
                value = float(self.scalar_priority[i](env))
                priority += value if value == value else 0.0
            elif isinstance(rule, Tag):
                tag_mask |= 1 << i
            elif isinstance(rule, Delay):
                if rule.until_stage is not None:
                    return Defer(until_stage=rule.until_stage, rule=rule.label)
                target = rule.until_step if rule.for_steps is None else \
                    state.step + rule.for_steps
                if target > state.step:
                    return Defer(until_step=target, rule=rule.label)
                continue  # a fixed target step that has passed no longer holds anything back
            elif isinstance(rule, DropRule):
                return Drop(rule.reason, rule.label)
            elif isinstance(rule, Sample) and \
                    uniform(self.seed, row, self.stage.index, rule.rule_index) >= rule.keep:
                return Drop(self.drop_reasons[i], rule.label)
            mask |= 1 << i
        weight = min(max(weight, self.min_weight), self.max_weight)
        if priority != priority:
            priority = 0.0
        tags = self.tags_for(tag_mask) if tag_mask else ()
        return Emit(weight, priority, self.emit_label(mask), tags)

    # -- many documents ----------------------------------------------------------------------

    def decide_batch(self, matrix: np.ndarray, rows: np.ndarray,
                     state: CurriculumState) -> DecisionBatch:
        """Decide a batch from its (n, slots) matrix."""
        n = len(rows)
        weight = np.ones(n)
        priority = np.zeros(n)
        kind = np.full(n, EMIT, np.uint8)
        until_stage = np.full(n, -1, np.int64)
        until_step = np.full(n, -1, np.int64)
        undecided = np.ones(n, bool)
        deciding_rule = np.full(n, -1, np.int64)
        mask = np.zeros(n, np.int64)
        tag_mask = np.zeros(n, np.int64)
        with np.errstate(all="ignore"):
            for i, rule in enumerate(self.rules):
                when = self.batch_when[i]
                active = undecided if when is None else undecided & batch_truth(when(matrix))
                if not active.any():
                    continue
                bit = np.int64(1 << i)
                if isinstance(rule, Upweight):
                    weight = np.where(active, np.minimum(weight * rule.factor, rule.max_weight),
                                      weight)
                elif isinstance(rule, Downweight):
                    weight = np.where(active, weight * rule.factor, weight)
                elif isinstance(rule, Prioritize):
                    value = np.broadcast_to(
                        np.asarray(self.batch_priority[i](matrix), np.float64), (n,))
                    value = np.where(np.isnan(value), 0.0, value)
                    priority = np.where(active, priority + value, priority)
                elif isinstance(rule, Tag):
                    tag_mask[active] |= bit
                elif isinstance(rule, Delay):
                    if rule.until_stage is not None:
                        until_stage[active] = rule.until_stage
                    else:
                        target = rule.until_step if rule.for_steps is None else \
                            state.step + rule.for_steps
                        if target <= state.step:
                            continue
                        until_step[active] = target
                    kind[active] = DEFER
                    deciding_rule[active] = i
                    undecided = undecided & ~active
                    continue
                elif isinstance(rule, DropRule):
                    kind[active] = DROP
                    deciding_rule[active] = i
                    undecided = undecided & ~active
                    continue
                elif isinstance(rule, Sample):
                    draws = uniform_array(self.seed, rows, self.stage.index, rule.rule_index)
                    rejected = active & (draws >= rule.keep)
                    kind[rejected] = DROP
                    deciding_rule[rejected] = i
                    undecided = undecided & ~rejected
                    active = active & ~rejected
                mask[active] |= bit
            weight = np.minimum(np.maximum(weight, self.min_weight), self.max_weight)
            priority = np.where(np.isnan(priority), 0.0, priority)
        return self._pack(rows, kind, weight, priority, until_stage, until_step, undecided,
                          deciding_rule, mask, tag_mask)

    def _pack(self, rows, kind, weight, priority, until_stage, until_step, undecided,
              deciding_rule, mask, tag_mask) -> DecisionBatch:
        emitted = undecided
        weight = np.where(emitted, weight, 0.0)
        priority = np.where(emitted, priority, 0.0)
        labels: list[str] = [self.emit_label(m) for m in mask.tolist()]
        reasons: list[str] = [""] * len(rows)
        tags: list[tuple[str, ...]] = [()] * len(rows)
        for index in np.flatnonzero(~emitted).tolist():
            rule_index = int(deciding_rule[index])
            labels[index] = self.rules[rule_index].label
            reasons[index] = self.drop_reasons[rule_index] if kind[index] == DROP else ""
        for index in np.flatnonzero(emitted & (tag_mask != 0)).tolist():
            tags[index] = self.tags_for(int(tag_mask[index]))
        return DecisionBatch(np.asarray(rows, np.int64), kind, weight, priority, until_stage,
                             until_step, labels, reasons, tags)


def compile_stages(stages: Sequence[StageSpec], layout: ScoreLayout, seed: int,
                   min_weight: float, max_weight: float) -> list[CompiledStage]:
    """Compile every stage of a policy."""
    return [CompiledStage(s, layout, seed, min_weight, max_weight) for s in stages]

