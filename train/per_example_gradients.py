"""Exact selection scores and the chosen rows' gradient from one set of per-example gradients.

A selection step needs two things from the candidate batch's backward: every row's score
``<P G_k, grad l_i>`` against K probe gradients, and, once the rule has chosen, the weight
gradient of the chosen rows. Both are linear in each row's weight gradient, which for a Linear
call is ``P_i = sum_t g_it a_it^T`` -- one batched GEMM over the calls that
:class:`~train.subset_gradients.SubsetGradients` recorded (the same multiply-adds as the
weight-gradient GEMM of a plain backward, ``B T m n``). With the B per-row gradients of a layer
as a (B, m n) matrix,

- the scores are one GEMM against the K stacked probe gradients: ``(B, m n) @ (m n, K)``;
- any weighted subset's gradient, ``sum_i c_i P_i``, is one (1, B) @ (B, m n) product with the
  selection weights folded into the left factor.

So the weight-gradient work of the candidate batch is done once, as in a plain step, and the
scores and the subset cost ``B (K + 1) m n`` on top (3 % of it at T = 128, K = 4). The
attributor's own exact forms would compute the same per-row gradients for the scores and drop
them, and the subset's GEMMs would then be recomputed for the chosen rows. Memory: the per-row
gradients of every Linear weight, B times the Linear parameters (:func:`per_example_bytes`);
:class:`~train.selection.SelectionStep` falls back to that path above a budget.

Embeddings (a lookup: the probe gradient's rows gathered at the ids, dotted with the output
gradients) and LayerNorms (not scored, as in the attributor; their subset gradient from
``g * xhat``) are done as :mod:`train.subset_gradients` does them. Parameters the probe
gradients do not cover add nothing to the scores.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from train.subset_gradients import (
    RecordedCall,
    accumulate_call,
    split_coefficients,
    weighted_rows,
)


def per_example_bytes(model: nn.Module, batch_size: int) -> int:
    """Bytes the per-row gradients of every Linear weight of ``model`` take for a batch of
    ``batch_size`` rows (one call per layer)."""
    return sum(batch_size * module.weight.numel() * module.weight.element_size()
               for module in model.modules()
               if isinstance(module, nn.Linear) and module.weight.requires_grad)


#: ``probe_for(parameter, gradient)``: the (K, *parameter.shape) probe gradients to dot with,
#: preconditioned for a step that applies ``gradient`` (None when not preconditioning).
ProbeFor = Callable[[nn.Parameter, "torch.Tensor | None"], torch.Tensor]


class PerExampleGradients:
    """The recorded calls of one backward; :meth:`scores` forms each Linear call's per-row
    gradients (see the module docs) and keeps them for :meth:`gradients`."""

    def __init__(self, calls: list[RecordedCall], parameters: list[nn.Parameter],
                 buffers: dict[tuple[int, ...], torch.Tensor] | None = None) -> None:
        """``buffers``: storage for the per-row gradients kept from one step to the next (the
        same dict every step): allocating and first touching a fresh ~B x parameters block
        costs about as much as filling it."""
        self.parameters = parameters
        self._buffers = {} if buffers is None else buffers
        self._calls = [call for call in calls if call.grad is not None]
        self._call_parameters = [_call_parameters(call) for call in self._calls]
        self._weights: dict[int, torch.Tensor] = {}
        """Index of a Linear call -> (B, m n) per-row weight gradients."""
        self._biases: dict[int, torch.Tensor] = {}
        """Index of a Linear call with a bias -> (B, m) per-row bias gradients."""

    @property
    def _device(self) -> torch.device:
        return self._calls[0].grad.device if self._calls else torch.device("cpu")

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self._calls[0].grad.shape[0]) if self._calls else 0

    @torch.no_grad()
    def scores(self, covered: set[nn.Parameter], probe_for: ProbeFor,
               precondition: bool) -> torch.Tensor:
        """(B, K) ``<probe_for(p, G_p), example i's gradient of p>`` summed over the ``covered``
        parameters ``p``, where ``G_p`` is the whole batch's gradient of ``p`` (passed only when
        ``precondition``: the denominator of a step applying it).

        A parameter with one call (most Linear weights) is scored right after its per-row
        gradients are formed, while they are in cache: their sum, the probe, the dot products.
        The others (embeddings, tied weights, used by several calls) once every call's share
        of ``G_p`` is known."""
        uses: dict[nn.Parameter, int] = {}
        dense: set[nn.Parameter] = set()
        for call, parameters in zip(self._calls, self._call_parameters, strict=True):
            for parameter in parameters:
                uses[parameter] = uses.get(parameter, 0) + 1
                if call.kind == "linear":
                    dense.add(parameter)
        total: torch.Tensor | None = None
        ones = torch.ones(1, self.batch_size, device=self._device)
        for index, call in enumerate(self._calls):
            if call.kind != "linear":
                continue
            self._form(index, call)
            for parameter, per_row in self._per_row(index, call):
                if parameter in covered and uses[parameter] == 1:
                    gradient = (ones.to(per_row.dtype) @ per_row).view_as(parameter) \
                        if precondition else None
                    dots = _dots(per_row, probe_for(parameter, gradient))
                    total = dots if total is None else total + dots
        for parameter in uses:
            if parameter in covered and (uses[parameter] > 1 or parameter not in dense):
                dots = self._shared_scores(parameter, probe_for, precondition)
                total = dots if total is None else total + dots
        if total is None:
            raise ValueError("no covered parameter took part in the backward")
        return total

    def _form(self, index: int, call: RecordedCall) -> None:
        g = call.grad.reshape(call.grad.shape[0], -1, call.grad.shape[-1])
        a = call.inputs.reshape(g.shape[0], -1, call.inputs.shape[-1]).to(g.dtype)
        key = (index, g.shape[0], g.shape[2], a.shape[2])
        buffer = self._buffers.get(key)
        if buffer is None or buffer.dtype != g.dtype or buffer.device != g.device:
            buffer = self._buffers[key] = torch.empty(key[1:], dtype=g.dtype, device=g.device)
        self._weights[index] = torch.bmm(g.transpose(1, 2), a, out=buffer).flatten(1)
        if call.module.bias is not None:
            self._biases[index] = g.sum(dim=1)

    def _per_row(self, index: int, call: RecordedCall) -> list[tuple[nn.Parameter, torch.Tensor]]:
        out = [(call.module.weight, self._weights[index])]
        if index in self._biases:
            out.append((call.module.bias, self._biases[index]))
        return out

    def _shared_scores(self, parameter: nn.Parameter, probe_for: ProbeFor,
                       precondition: bool) -> torch.Tensor:
        """Scores of a parameter used by several calls, or by an embedding."""
        calls = [(index, call) for index, (call, parameters)
                 in enumerate(zip(self._calls, self._call_parameters, strict=True))
                 if any(p is parameter for p in parameters)]
        gradient = None
        if precondition:
            whole = torch.ones(self.batch_size, dtype=torch.float64, device=self._device)
            gradient = torch.zeros_like(parameter)
            for index, call in calls:
                gradient += self._call_gradient(index, call, parameter, whole)
        probe = probe_for(parameter, gradient)
        total = None
        for index, call in calls:
            if call.kind == "linear":
                per_row = dict(self._per_row(index, call))[parameter]
                dots = _dots(per_row, probe)
            else:
                dots = _lookup_scores(call, probe)
            total = dots if total is None else total + dots
        return total

    def _call_gradient(self, index: int, call: RecordedCall, parameter: nn.Parameter,
                       coefficients: torch.Tensor) -> torch.Tensor:
        """``sum_i c_i`` (row i's gradient of ``parameter`` through this call)."""
        if call.kind == "linear":
            per_row = dict(self._per_row(index, call))[parameter]
            left = coefficients.to(per_row.dtype).unsqueeze(0)
            return (left @ per_row).view_as(parameter).to(parameter.dtype)
        chosen, weights = split_coefficients(coefficients, self.batch_size)
        out = {parameter: torch.zeros_like(parameter)}
        accumulate_call(call, weighted_rows(call.grad, chosen, weights), chosen, out)
        return out[parameter]

    @torch.no_grad()
    def gradients(self, coefficients: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
        """``{parameter: sum_i coefficients[i] * grad_i}`` for every trainable parameter (as
        :meth:`train.subset_gradients.SubsetGradients.gradients`), after :meth:`scores`."""
        chosen, weights = split_coefficients(coefficients, self.batch_size)
        coefficients = coefficients.reshape(-1)
        out: dict[nn.Parameter, torch.Tensor] = {p: torch.zeros_like(p) for p in self.parameters}
        for index, call in enumerate(self._calls):
            if call.kind != "linear":
                accumulate_call(call, weighted_rows(call.grad, chosen, weights), chosen, out)
                continue
            if index not in self._weights:
                self._form(index, call)
            # The coefficients folded into the left factor (zero outside the subset).
            left = coefficients.unsqueeze(0)
            for parameter, per_row in self._per_row(index, call):
                if parameter in out:
                    out[parameter] += (left.to(per_row.dtype) @ per_row).view_as(parameter).to(
                        parameter.dtype)
        return out


def _call_parameters(call: RecordedCall) -> list[nn.Parameter]:
    module = call.module
    out = [module.weight]
    if call.kind != "embedding" and getattr(module, "bias", None) is not None:
        out.append(module.bias)
    return [p for p in out if p.requires_grad]


def _dots(per_row: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """(B, K) from (B, size) per-row gradients and (K, *shape) probe gradients."""
    return per_row @ probe.reshape(probe.shape[0], -1).to(per_row.dtype).T


def _lookup_scores(call: RecordedCall, probe: torch.Tensor) -> torch.Tensor:
    """(B, K): ``sum_t probe[k, ids_it] . g_it`` (padding rows get no gradient, as in autograd)."""
    grad = call.grad
    batch = grad.shape[0]
    ids = call.inputs.reshape(batch, -1)
    g = grad.reshape(batch, ids.shape[1], -1)
    padding = call.module.padding_idx
    if padding is not None:
        g = g * (ids != padding).unsqueeze(-1).to(g.dtype)
    flat = ids.reshape(-1)
    # One index_select per probe set: several times faster on CPU than one (K, B, T, d) gather.
    return torch.stack([(p.index_select(0, flat).view_as(g).to(g.dtype) * g).sum(dim=(1, 2))
                        for p in probe], dim=-1)
