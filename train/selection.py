"""In-batch selection as a training step: score every candidate row, update on the chosen ones.

One forward and one backward over the candidate batch serve both purposes:

1. the backward runs with every parameter's ``requires_grad`` off (:mod:`train.subset_gradients`),
   so autograd computes activation gradients only, and every parameter-holding call's input and
   output gradient are recorded;
2. exact mode (within :data:`MAX_PER_EXAMPLE_BYTES`): each Linear call's per-row weight
   gradients are formed once, one batched GEMM (:mod:`train.per_example_gradients`) -- the
   weight-gradient work a plain backward does -- and both the (rows, K) In-Run Data Shapley
   scores (a GEMM against the K probe gradients) and, after the choice, the chosen rows'
   gradient (the selection weights folded into one factor of a product) are read from them.
   Sketched mode, or a model over the budget: the attributor's hooks score the rows and the
   chosen rows' weight-gradient GEMMs are computed from the recorded pieces;
3. the stage's ``select`` rule (:mod:`policies.select_rule`) ranks the rows by its expression
   over ``score.<behavior>`` and chooses the rows that update the weights, with coefficients
   ``N_all / N_chosen`` (N = labelled tokens): the result is the gradient of the chosen rows'
   own loss, ``sum(w * CE) / N_chosen``, exactly as a plain step on them alone would have it
   (tested to 1e-12 in float64 through AdamW steps).

Scores under Adam are divided by the second moment of a step applying the whole candidate
batch's gradient (the update's own gradient is not known before the choice; the candidates' is
its stand-in, and unlike the optimizer state alone it gives the rows of tokens new to this step
a second moment instead of a ``1/eps`` factor).

Why recombination rather than a masked second pass: a plain step costs a forward F, the
activation-gradient half of the backward (about F) and the weight-gradient half (about F). The
selection step pays F + F, the weight-gradient half once (the per-row GEMMs), and passes over
the per-row gradients for the scores and the subset; a second pass over the chosen rows would
add 1.5 F on top of the scoring pass. ``bench/selection.py`` measures both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from curriculum.attribution import InRunAttributor
from curriculum.batch import IGNORE_INDEX
from policies.select_rule import SelectRule
from train.per_example_gradients import PerExampleGradients, per_example_bytes
from train.subset_gradients import SubsetGradients

#: Largest per-row weight gradients (bytes) an exact selection step forms at once; above it the
#: scores come from the attributor's hooks and the chosen rows' GEMMs are recomputed.
MAX_PER_EXAMPLE_BYTES = 2 * 2**30


@dataclass
class SelectionOutcome:
    """What one selection step decided."""

    scores: np.ndarray
    """(rows, K) float64 scores of every candidate row (``-lr * <P G_k, grad l_i>``)."""
    values: np.ndarray
    """(rows,) the rule's ``by`` of each row."""
    chosen: np.ndarray
    """Indices of the rows that updated the weights, ascending."""


def subset_coefficients(labels: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
    """(rows,) ``N_all / N_chosen`` on the chosen rows, 0 elsewhere (N = labelled tokens): turns
    the per-row pieces of the batch's mean loss into the chosen rows' own mean loss."""
    valid = (labels != IGNORE_INDEX).sum(dim=1).double()
    coefficients = torch.zeros(len(valid), dtype=torch.float64, device=labels.device)
    index = torch.as_tensor(np.asarray(chosen, np.int64), device=labels.device)
    chosen_tokens = valid.index_select(0, index).sum().clamp_min(1.0)
    coefficients[index] = valid.sum().clamp_min(1.0) / chosen_tokens
    return coefficients


class SelectionStep:
    """Arms the attributor and the subset capture around one training step's forward/backward.

    Use: :meth:`begin` before the forward (with the probe gradients refreshed), run the forward
    and ``backward`` of the candidate batch's mean loss, then :meth:`finish` before the optimizer
    step: it chooses the rows and writes their gradient into ``.grad``.
    """

    def __init__(self, model: nn.Module, attributor: InRunAttributor,
                 max_per_example_bytes: int = MAX_PER_EXAMPLE_BYTES) -> None:
        self.model = model
        self.attributor = attributor
        self.subset = SubsetGradients(model)
        self.max_per_example_bytes = int(max_per_example_bytes)
        self.recombining = False
        """The step in flight forms per-row gradients (exact mode, within the budget)."""
        self._buffers: dict[tuple[int, ...], torch.Tensor] = {}
        """Per-row gradient storage, reused from step to step (see PerExampleGradients)."""
        names = set(attributor.covered_parameters)
        self._probe_names = {p: name for name, p in model.named_parameters() if name in names}

    @property
    def armed(self) -> bool:
        """True between :meth:`begin` and :meth:`finish` / :meth:`cancel`."""
        return self.subset.armed

    def begin(self, batch: dict[str, Any]) -> None:
        """Arm the hooks (the attributor's first, so ours see its expanded lookups) and freeze
        the parameters for an activation-only backward."""
        rows = int(batch["input_ids"].shape[0])
        self.recombining = (self.attributor.config.mode == "exact"
                            and per_example_bytes(self.model, rows) <= self.max_per_example_bytes)
        if self.recombining:
            if not self.attributor.behaviors:
                raise RuntimeError("refresh the attributor's probe gradients before a selection step")
        else:
            self.attributor.begin(batch)
        self.subset.arm(rows)
        self.subset.freeze()

    def finish(self, batch: dict[str, Any], rule: SelectRule, lr: float, step: int,
               loader_rows: int) -> SelectionOutcome:
        """After the backward: scores, the rule's choice, and the chosen rows' gradient in
        ``.grad`` of every trainable parameter."""
        self.subset.disarm()
        self.subset.unfreeze()
        if self.recombining:
            pieces = PerExampleGradients(self.subset.take_calls(), self.subset.parameters,
                                         self._buffers)
            scores = self._recombined_scores(pieces, lr)
        else:
            if self.attributor.defers_scoring:  # the same denominator (see _recombined_scores)
                rows = int(batch["input_ids"].shape[0])
                whole = torch.ones(rows, device=batch["labels"].device)
                for parameter, grad in self.subset.gradients(whole, keep=True).items():
                    parameter.grad = grad
            scores = self.attributor.finish(lr=lr).detach().double().cpu().numpy()
        values = rule.values(scores, self.attributor.behaviors)
        keep = rule.keep_count(loader_rows, len(values))
        chosen = rule.choose(values, keep, step)
        coefficients = subset_coefficients(batch["labels"], chosen)
        if self.recombining:
            gradients = pieces.gradients(coefficients)
        else:
            gradients = self.subset.gradients(coefficients)
        for parameter, grad in gradients.items():
            parameter.grad = grad
        self.recombining = False
        return SelectionOutcome(scores, values, chosen)

    def _recombined_scores(self, pieces: PerExampleGradients, lr: float) -> np.ndarray:
        """Exact (rows, K) scores from the per-row gradients. Adam's denominator is that of a
        step applying the whole candidate batch's gradient: the chosen rows' gradient is not
        known before the scores, and the candidates' is its best stand-in -- it gives every
        parameter the batch touches a second moment, where the optimizer state alone would
        divide the rows of tokens new to this step by ``eps``."""
        attributor = self.attributor

        def probe_for(parameter: nn.Parameter, gradient: torch.Tensor | None) -> torch.Tensor:
            return attributor.preconditioned_probe_gradient(self._probe_names[parameter],
                                                            gradient)

        scores = pieces.scores(set(self._probe_names), probe_for, attributor.precondition)
        return (scores * -float(lr)).double().cpu().numpy()

    def cancel(self) -> None:
        """Disarm and unfreeze without an update (a step whose backward did not happen)."""
        self.subset.disarm()
        self.subset.unfreeze()
        self.subset.clear()
        self.recombining = False
        if self.attributor.armed:
            self.attributor.cancel()
