"""Runs in-batch selection inside a Lightning fit, as the policy's ``select`` rules say.

Per step: the loader's candidate batch (``candidate_factor`` x the batch size) gets the rows
returned at earlier steps in front (:class:`loaders.candidates.CandidateStream`); the stage in
force (the :class:`~train.curriculum_callback.CurriculumCallback`'s) gives the ``select`` rule;
the forward and backward of :class:`~train.module.CurriculumLM` run over all candidates with the
hooks of :class:`train.selection.SelectionStep` armed; after the backward (``on_after_backward``,
before clipping and the optimizer step) the chosen rows' gradient replaces ``.grad``; at the end
of the batch every row's fate goes to the selection ledger and the candidates' scores to the
behavior store. A stage without ``select`` trains on every candidate row (returned rows too).

Exact resume: the return queue, the ledger length and the probe-refresh schedule are in the
checkpoint. Probe gradients are refreshed at global steps that are multiples of
``probe_refresh_steps`` and at the first step after a (re)start, so a run resumed from a
checkpoint taken at such a multiple makes the same choices as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from curriculum.attribution import AttributionConfig, InRunAttributor
from curriculum.ledger.selection import SelectionLedger
from loaders.candidates import Candidates, CandidateStream
from policies.schema import StageSpec
from train.attribution_callback import row_scores
from train.selection import SelectionStep

#: Candidate factor when a policy selects and neither it nor the data config names one.
DEFAULT_CANDIDATE_FACTOR = 2


@dataclass
class SelectionSettings:
    """In-batch selection settings of a fit (``data.selection``); the rules are the policy's."""

    candidate_factor: int | None = None
    """Candidate rows per step as a multiple of ``data.stream.batch_size`` (None: the policy's
    ``candidate_factor``, else 2)."""
    probe_refresh_steps: int = 10
    """Recompute the probe gradients at global steps divisible by this (a forward and backward
    over every probe set; make ``checkpoint_every_n_steps`` a multiple for exact resume)."""
    record_attribution: bool = True
    """Add every candidate row's scores of the step to the store's attribution table."""
    attributor: AttributionConfig = field(default_factory=AttributionConfig)
    """Exact or sketched scores (``mode``), and the like."""


@dataclass
class SelectionPlan:
    """What a fit needs to run selection: the stages' rules, the factor, the settings."""

    stages: tuple[StageSpec, ...]
    behaviors: tuple[str, ...]
    candidate_factor: int
    settings: SelectionSettings
    store: str


def plan_selection(settings: SelectionSettings | None, policy: Any, store: str) -> SelectionPlan | None:
    """A plan when the policy has a ``select`` rule in some stage (or ``settings`` is given),
    else None. ``policy`` is a loaded :class:`policies.Policy` (or None)."""
    stages = tuple(policy.stages) if policy is not None else ()
    selects = any(stage.select is not None for stage in stages)
    if not selects:
        if settings is not None:
            raise ValueError("data.selection is set but no stage of the policy has a 'select' "
                             "rule: nothing would be selected")
        return None
    settings = settings or SelectionSettings()
    if settings.probe_refresh_steps < 1:
        raise ValueError("data.selection.probe_refresh_steps must be >= 1")
    factor = settings.candidate_factor or getattr(policy.spec, "candidate_factor", None) \
        or DEFAULT_CANDIDATE_FACTOR
    if factor < 1:
        raise ValueError(f"candidate_factor must be >= 1, got {factor}")
    return SelectionPlan(stages, tuple(policy.behaviors), int(factor), settings, store)


def selection_plan_for(settings: SelectionSettings | None, curriculum: Any,
                       policy: Any = None) -> SelectionPlan | None:
    """:func:`plan_selection` for a fit's ``data.selection`` and ``data.curriculum`` (a
    :class:`loaders.policy_stage.CurriculumStreamConfig` or None), with the run's ``policy``
    when the caller already loaded it (else it is loaded here)."""
    if curriculum is None:
        if settings is not None:
            raise ValueError("data.selection needs data.curriculum: the select rules are the "
                             "policy's")
        return None
    from curriculum.store import StoreReader
    from policies import load_policy

    store = str(curriculum.store)
    if policy is None:
        policy = load_policy(curriculum.policy, StoreReader(store))
    return plan_selection(settings, policy, store)


class SelectionCallback(L.Callback):
    """Selection steps as the plan's rules say (see the module docs)."""

    def __init__(self, run_dir: str | Path, plan: SelectionPlan) -> None:
        self.run_dir = Path(run_dir)
        self.plan = plan
        self.stream = CandidateStream()
        self.ledger: SelectionLedger | None = None
        self.step_runner: SelectionStep | None = None
        self.store: Any = None
        self._restored: dict[str, Any] | None = None
        self._refreshed = False
        self._candidates: Candidates | None = None
        self._rule_stage = -1
        self._outcome: Any = None
        self._batch: Any = None
        self._step = 0
        self.totals = {"selected": 0, "returned": 0, "rejected": 0}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the selection ledger (cut back to the checkpoint), build the step, the store."""
        self.ledger = SelectionLedger(self.run_dir, trainer.global_rank)
        restored, self._restored = self._restored, None
        self.ledger.truncate(int(restored["ledger_records"]) if restored else 0)
        if restored:
            self.stream.load_state_dict(restored["stream"])
            self.totals = dict(restored.get("totals", self.totals))
        missing = [b for b in self.plan.behaviors if b not in pl_module.probe_batches]
        if missing:
            raise ValueError(f"selection reads score.<behavior> for {missing}, which have no "
                             "probe set")
        attributor = InRunAttributor(pl_module.model, optimizer=trainer.optimizers[0],
                                     config=self.plan.settings.attributor)
        self.step_runner = SelectionStep(pl_module.model, attributor)
        if self.plan.settings.record_attribution and self.plan.store and trainer.local_rank == 0:
            from curriculum.store import BehaviorStore

            self.store = BehaviorStore.open(self.plan.store)
        self._refreshed = False

    def _stage(self, trainer: L.Trainer) -> int:
        from train.curriculum_callback import CurriculumCallback

        for callback in trainer.callbacks:
            if isinstance(callback, CurriculumCallback):
                return int(callback.state.stage)
        return 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Compose the candidate batch; refresh probes on schedule; arm the selection step."""
        step = trainer.global_step
        self._candidates = self.stream.compose(batch, step)
        stage = min(self._stage(trainer), len(self.plan.stages) - 1)
        rule = self.plan.stages[stage].select
        self._rule_stage = stage if rule is not None else -1
        self._outcome = None
        self._batch, self._step = batch, step
        if rule is None:
            return
        runner = self.step_runner
        if not self._refreshed or step % self.plan.settings.probe_refresh_steps == 0:
            probes = {b: {k: v.to(pl_module.device) for k, v in pl_module.probe_batches[b].items()}
                      for b in self.plan.behaviors}
            runner.attributor.refresh_probe_gradients(probes)
            self._refreshed = True
        runner.begin(batch)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Choose the rows and put their gradient in ``.grad`` (before clipping and the step)."""
        runner = self.step_runner
        if runner is None or not runner.armed:
            return
        rule = self.plan.stages[self._rule_stage].select
        lr = trainer.optimizers[0].param_groups[0]["lr"] / max(1, trainer.world_size)
        self._outcome = runner.finish(self._batch, rule, lr, self._step,
                                      self._candidates.loader_rows)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Settle every candidate row's fate; ledger, store and logs."""
        runner, candidates = self.step_runner, self._candidates
        if runner is not None and runner.armed:  # the backward did not happen
            runner.cancel()
        if candidates is None:
            return
        outcome, stage = self._outcome, self._rule_stage
        if outcome is None:  # no rule this stage: every candidate row trained
            chosen, rule = np.arange(len(candidates.sequences)), None
            stage = -1
        else:
            chosen, rule = outcome.chosen, self.plan.stages[stage].select
        settled = self.stream.settle(candidates, batch, chosen, self._step, stage,
                                     rule.unselected if rule else "reject",
                                     rule.max_returns if rule else 0)
        self.ledger.append(settled.records)
        for name in self.totals:
            self.totals[name] += getattr(settled, name)
            pl_module.log(f"selection/{name}", float(getattr(settled, name)), on_step=True,
                          on_epoch=False, reduce_fx="sum")
        pl_module.log("selection/queue_rows", float(len(self.stream.queue)), on_step=True,
                      on_epoch=False)
        if outcome is not None and self.store is not None:
            rows, per_row = row_scores(outcome.scores, batch["token_rows"].cpu().numpy(),
                                       batch["labels"].cpu().numpy())
            self.store.record_attribution(rows, per_row)
        self._candidates = None
        self._batch = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Flush the ledger and record the return queue."""
        if self.ledger is not None:
            self.ledger.flush()
            self.ledger.write_pending(trainer.global_step, self.stream.pending_sequences())
        if self.step_runner is not None:
            self.step_runner.cancel()
            self.step_runner.attributor.close()
        if self.store is not None and hasattr(self.store, "refresh_estimates"):
            self.store.refresh_estimates()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Close the ledger."""
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def state_dict(self) -> dict[str, Any]:
        """Return queue, ledger length, totals (plain data)."""
        if self.ledger is None:
            return {}
        self.ledger.flush()
        self.ledger.write_pending(-1, self.stream.pending_sequences())
        return {"stream": self.stream.state_dict(), "ledger_records": self.ledger.num_records,
                "totals": dict(self.totals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Applied in ``on_train_start``."""
        if state_dict:
            self._restored = state_dict
