"""The step loop of a policy preview (see :mod:`policies.preview`): rows stream in order,
``docs_per_step`` emitted documents make a step, deferred rows wait in a spool and come back
first when due, and the stages advance from steps and tokens as the trainer would advance them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from policies.decisions import DEFER, DROP, EMIT, DecisionBatch
from policies.driver import CurriculumDriver
from policies.policy import Policy, PolicyRunner


class PreviewSpool:
    """Deferred rows waiting to come back (arrays; scanned only when something can be due)."""

    def __init__(self, num_rows: int) -> None:
        self.rows = np.zeros(0, np.int64)
        self.until_stage = np.zeros(0, np.int64)
        self.until_step = np.zeros(0, np.int64)
        self.since = np.zeros(0, np.int64)
        self.waiting = np.zeros(num_rows, bool)

    def add(self, decisions: DecisionBatch, chosen: np.ndarray, step: int) -> None:
        rows = decisions.rows[chosen]
        self.rows = np.concatenate([self.rows, rows])
        self.until_stage = np.concatenate([self.until_stage, decisions.until_stage[chosen]])
        self.until_step = np.concatenate([self.until_step, decisions.until_step[chosen]])
        self.since = np.concatenate([self.since, np.full(len(rows), step, np.int64)])
        self.waiting[rows] = True

    def take_due(self, stage: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return (rows, deferred-at steps) that may come back now."""
        if not len(self.rows):
            return self.rows, self.since
        by_stage = self.until_stage >= 0
        if not ((by_stage & (self.until_stage <= stage)).any()
                or (~by_stage & (self.until_step <= step)).any()):
            return self.rows[:0], self.since[:0]
        due = np.where(by_stage, self.until_stage <= stage, self.until_step <= step)
        rows, since = self.rows[due], self.since[due]
        keep = ~due
        self.rows, self.until_stage = self.rows[keep], self.until_stage[keep]
        self.until_step, self.since = self.until_step[keep], self.since[keep]
        self.waiting[rows] = False
        return rows, since


class PreviewSimulation:
    """One preview run: per-step counts per group, stage reports and rule counts.

    ``steps`` None runs until one pass is complete and nothing waits, at most ``max_steps``.
    """

    def __init__(self, policy: Policy, runner: PolicyRunner, row_group: np.ndarray,
                 groups: tuple[str, ...], new_report: Callable[[int, int], object],
                 docs_per_step: int, tokens_per_doc: int, chunk_rows: int, steps: int | None,
                 max_steps: int) -> None:
        self.policy, self.runner, self.row_group, self.groups = policy, runner, row_group, groups
        self.new_report = new_report
        self.docs_per_step, self.tokens_per_doc, self.chunk_rows = (docs_per_step, tokens_per_doc,
                                                                    chunk_rows)
        self.steps, self.max_steps = steps, max_steps
        self.num_rows, self.num_groups = len(row_group), len(groups)
        self.driver = CurriculumDriver(policy)
        self.state = self.driver.advance(0, 0, {})
        capacity = max_steps if steps is not None else 1024
        shape = (capacity, self.num_groups)
        self.emitted, self.pending, self.released = (np.zeros(shape, np.int64) for _ in range(3))
        self.weights = np.zeros(shape, np.float64)
        self.reports = [new_report(0, 0)]
        self.rule_counts: dict[str, int] = {}
        self.spool = PreviewSpool(self.num_rows)
        self.cursor, self.passes, self.queued, self.tokens, self.step = 0, 1, 0, 0, 0

    # -- counting -----------------------------------------------------------------------------
    def _bincount(self, groups: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(groups, weights=weights, minlength=self.num_groups)

    def count(self, decisions: DecisionBatch, since: np.ndarray | None) -> int:
        """Record a batch of decisions (``since``: deferred-at steps of released rows); returns
        the documents emitted."""
        report, step = self.reports[-1], self.step
        g = self.row_group[decisions.rows]
        for rule, n in decisions.rule_counts().items():
            self.rule_counts[rule] = self.rule_counts.get(rule, 0) + n
        is_emit = decisions.kind == EMIT
        emit_groups = self._bincount(g[is_emit])
        emit_weights = self._bincount(g[is_emit], decisions.weight[is_emit])
        self.emitted[step] += emit_groups
        self.weights[step] += emit_weights
        deferred_mask = decisions.kind == DEFER
        defer_groups = self._bincount(g[deferred_mask])
        drop_groups = self._bincount(g[decisions.kind == DROP])
        for i, group in enumerate(self.groups):
            counts = report.counts[group]
            counts["deferred"] += int(defer_groups[i])
            counts["dropped"] += int(drop_groups[i])
            report.weight_sum[group] += float(emit_weights[i])
        if since is None:
            for i, group in enumerate(self.groups):
                report.counts[group]["emitted"] += int(emit_groups[i])
        else:
            self._count_released(g[is_emit], step - since[is_emit], emit_groups)
        if deferred_mask.any():
            self.spool.add(decisions, deferred_mask, step)
        return int(is_emit.sum())

    def _count_released(self, groups: np.ndarray, waited_steps: np.ndarray,
                        emit_groups: np.ndarray) -> None:
        report, step = self.reports[-1], self.step
        self.released[step] += emit_groups
        waits = self._bincount(groups, waited_steps.astype(np.float64))
        for i, group in enumerate(self.groups):
            report.counts[group]["released"] += int(emit_groups[i])
            report.wait_steps_sum[group] += int(waits[i])
        if len(groups):
            if report.first_release_step is None:
                report.first_release_step = step
            report.last_release_step = step

    # -- one step -----------------------------------------------------------------------------
    def _grow(self) -> None:
        """Grow the per-step arrays (their length is unknown when ``steps`` is None)."""
        grow = len(self.emitted)
        self.emitted, self.weights, self.pending, self.released = (
            np.concatenate([a, np.zeros((grow, self.num_groups), a.dtype)])
            for a in (self.emitted, self.weights, self.pending, self.released))

    def _fill_step(self) -> bool:
        """Decide rows until a step's documents are queued; True when the preview is complete."""
        spool, state = self.spool, self.state
        started_a_pass = False
        while self.queued < self.docs_per_step:
            due_rows, since = spool.take_due(state.stage, self.step)
            if len(due_rows):
                self.queued += self.count(self.runner.decide_rows(due_rows, state), since)
                continue
            if self.cursor >= self.num_rows:
                if self.steps is None and not len(spool.rows):
                    return True  # one pass done and nothing waits: the preview is complete
                if spool.waiting.all() or started_a_pass:
                    return False  # nothing (more) can be emitted this step: it stays short
                self.cursor, self.passes, started_a_pass = 0, self.passes + 1, True
            # About one step's worth at a time: decisions see a state at most a step old (like a
            # loader's prefetch), and deferred or skipped rows rarely need a second call.
            wanted = min(self.chunk_rows, self.docs_per_step)
            rows = np.arange(self.cursor, min(self.num_rows, self.cursor + wanted), dtype=np.int64)
            self.cursor += len(rows)
            rows = rows[~spool.waiting[rows]]
            if len(rows):
                self.queued += self.count(self.runner.decide_rows(rows, state), None)
        return False

    def _end_step(self, finished: bool) -> bool:
        """Close the step and advance the stages; True when the simulation stops."""
        consumed = min(self.queued, self.docs_per_step)  # a step runs short when nothing is left
        self.queued -= consumed
        self.pending[self.step] = self._bincount(self.row_group[self.spool.rows])
        self.step += 1
        last = self.step - 1
        if finished and not self.emitted[last].any() and not self.released[last].any():
            self.step -= 1  # the last step emitted nothing: do not count it
            return True
        self.tokens += consumed * self.tokens_per_doc
        previous_stage = self.state.stage
        self.state = self.driver.advance(self.step, self.tokens, {})
        if self.state.stage != previous_stage:
            self.reports[-1].end_step = self.step
            self.reports[-1].exit_reason = self.driver.history[-1].reason
            self.reports.append(self.new_report(self.state.stage, self.step))
        return finished

    def run(self) -> PreviewSimulation:
        """Simulate step by step until done or ``max_steps``."""
        while self.step < self.max_steps:
            if self.step >= len(self.emitted):
                self._grow()
            if self._end_step(self._fill_step()):
                break
        return self
