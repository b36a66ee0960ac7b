"""In-batch selection as a training step: score every candidate row, update on the chosen ones.

One forward and one backward over the candidate batch serve both purposes:

1. the backward runs with every parameter's ``requires_grad`` off (:mod:`train.subset_gradients`),
   so autograd computes activation gradients only, while the attributor's hooks turn the layer
   inputs and output gradients into this step's (rows, K) In-Run Data Shapley scores;
2. the stage's ``select`` rule (:mod:`policies.select_rule`) ranks the rows by its expression
   over ``score.<behavior>`` and chooses the rows that update the weights;
3. the weight gradients are computed for the chosen rows only, from the same captured pieces,
   with coefficients ``N_all / N_chosen`` (N = labelled tokens): the result is the gradient of
   the chosen rows' own loss, ``sum(w * CE) / N_chosen``, exactly as a plain step on them alone
   would have it (tested to 1e-12 in float64 through AdamW steps).

Why recombination rather than a masked second pass: a plain step costs a forward F, the
activation-gradient half of the backward (about F) and the weight-gradient half (about F). The
selection step pays F + F, the scores, and the weight-gradient half for the chosen rows only
(F/2 at fraction 0.5), where a second pass over the chosen rows would add 1.5 F on top of the
scoring pass. ``bench/selection.py`` measures both.
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
from train.subset_gradients import SubsetGradients


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

    def __init__(self, model: nn.Module, attributor: InRunAttributor) -> None:
        self.model = model
        self.attributor = attributor
        self.subset = SubsetGradients(model)

    @property
    def armed(self) -> bool:
        """True between :meth:`begin` and :meth:`finish` / :meth:`cancel`."""
        return self.subset.armed

    def begin(self, batch: dict[str, Any]) -> None:
        """Arm the hooks (the attributor's first, so ours see its expanded lookups) and freeze
        the parameters for an activation-only backward."""
        self.attributor.begin(batch)
        self.subset.arm(int(batch["input_ids"].shape[0]))
        self.subset.freeze()

    def finish(self, batch: dict[str, Any], rule: SelectRule, lr: float, step: int,
               loader_rows: int) -> SelectionOutcome:
        """After the backward: scores, the rule's choice, and the chosen rows' gradient in
        ``.grad`` of every trainable parameter."""
        self.subset.disarm()
        self.subset.unfreeze()
        scores = self.attributor.finish(lr=lr).detach().double().cpu().numpy()
        values = rule.values(scores, self.attributor.behaviors)
        keep = rule.keep_count(loader_rows, len(values))
        chosen = rule.choose(values, keep, step)
        gradients = self.subset.gradients(subset_coefficients(batch["labels"], chosen))
        for parameter, grad in gradients.items():
            parameter.grad = grad
        return SelectionOutcome(scores, values, chosen)

    def cancel(self) -> None:
        """Disarm and unfreeze without an update (a step whose backward did not happen)."""
        self.subset.disarm()
        self.subset.unfreeze()
        self.subset.clear()
        if self.attributor.armed:
            self.attributor.cancel()
