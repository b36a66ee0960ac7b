"""The gradient of a subset of a batch, recombined from one backward pass over the whole batch.

Why this works: in a model whose examples do not interact (attention within a row, LayerNorm per
token, no batch norm, no dropout), the gradient reaching a layer's output for example i depends
only on example i's loss. So with ``g_it`` the output gradient and ``a_it`` the input of a call
at token t, any weighted subset's gradient is a weighted sum of per-example pieces:

==============  ==================================================
layer           subset gradient (``c_i`` = 0 outside the subset)
==============  ==================================================
nn.Linear       W: ``sum_i c_i sum_t g_it a_it^T``; b: ``sum_i c_i sum_t g_it``
nn.Embedding    row ``v``: ``sum_i c_i sum_{t: id_it = v} g_it``
nn.LayerNorm    gamma: ``sum_i c_i sum_t g_it * xhat_it``; beta: ``sum_i c_i sum_t g_it``
==============  ==================================================

:meth:`SubsetGradients.activations_only` runs the backward with every parameter's
``requires_grad`` off, so autograd computes only the activation gradients (it skips the weight
gradient GEMMs); the embedding outputs are made to require grad so the graph still reaches
every layer. :meth:`SubsetGradients.gradients` then does the weight-gradient work for the chosen
rows only (a ``top_fraction`` of 0.5 costs half of the weight-gradient GEMMs of the batch).
Another module's hooks (the attributor's) may run in the same backward: this one reads the
output gradients and never changes them.

Every trainable parameter must sit in one of the three layer kinds (checked at construction);
Hugging Face's GPT-2 ``Conv1D`` is not handled here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_KINDS = ((nn.Linear, "linear"), (nn.Embedding, "embedding"), (nn.LayerNorm, "layernorm"))


class SubsetGradientError(ValueError):
    """A model, or a call inside it, whose subset gradient cannot be recombined."""


@dataclass
class RecordedCall:
    """One parameter-holding call of the recorded forward, and its output gradient."""

    kind: str
    module: nn.Module
    inputs: torch.Tensor
    """(B, ..., d_in) layer input, or (B, ...) ids for an embedding."""
    grad: torch.Tensor | None = None
    """(B, ..., d_out) gradient of the call's output, once backward reached it."""


def _kind(module: nn.Module) -> str | None:
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return None


class SubsetGradients:
    """Records every parameter-holding call of one forward/backward and recombines the gradient
    of any weighted subset of the batch's examples (see the module docs)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._modules: list[nn.Module] = []
        unsupported = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            kind = _kind(module)
            if kind is None:
                unsupported.append(f"{name or '<root>'} ({type(module).__name__})")
            elif kind == "embedding" and (module.scale_grad_by_freq or module.sparse):
                unsupported.append(f"{name} (Embedding with scale_grad_by_freq or sparse)")
            else:
                self._modules.append(module)
        if unsupported:
            raise SubsetGradientError(
                "in-batch selection recombines gradients of Linear, Embedding and LayerNorm "
                f"layers only; these trainable layers are none of them: {', '.join(unsupported)}")
        self._calls: list[RecordedCall] = []
        self._batch_size = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_flags: list[bool] | None = None

    @property
    def armed(self) -> bool:
        """True between :meth:`arm` and :meth:`disarm`."""
        return bool(self._handles)

    def arm(self, batch_size: int) -> None:
        """Record the calls of the coming forward (examples along dim 0, ``batch_size`` of them).

        Register after any other module that expands shared lookups (the attributor's capture):
        this hook then sees its expanded output."""
        self.disarm()
        self._batch_size = int(batch_size)
        self._calls = []
        for module in self._modules:
            if isinstance(module, nn.Embedding):
                # Runs first: with a frozen weight an embedding's output is a leaf that does not
                # require grad, and nothing downstream would get a gradient.
                self._handles.append(module.register_forward_hook(_require_grad, prepend=True))
            self._handles.append(module.register_forward_hook(self._record))

    def disarm(self) -> None:
        """Remove the hooks (recorded calls are kept until :meth:`gradients` or :meth:`clear`)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop the recorded calls and their tensors."""
        self._calls = []

    def take_calls(self) -> list[RecordedCall]:
        """The recorded calls (after the backward), handed over and cleared here."""
        calls, self._calls = self._calls, []
        return calls

    @contextlib.contextmanager
    def activations_only(self) -> Iterator[None]:
        """Inside: every trainable parameter has ``requires_grad`` off (restored on exit), so a
        forward and backward compute activation gradients only."""
        with self.frozen():
            yield

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Context form of :meth:`freeze` / :meth:`unfreeze`."""
        self.freeze()
        try:
            yield
        finally:
            self.unfreeze()

    def freeze(self) -> None:
        """Turn ``requires_grad`` off on every trainable parameter (before the forward)."""
        if self._saved_flags is None:
            self._saved_flags = [p.requires_grad for p in self.parameters]
            for p in self.parameters:
                p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Restore ``requires_grad`` (after the backward)."""
        if self._saved_flags is not None:
            for p, flag in zip(self.parameters, self._saved_flags, strict=True):
                p.requires_grad_(flag)
            self._saved_flags = None

    def _record(self, module: nn.Module, inputs: tuple[object, ...], output: object) -> object:
        if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor) or not inputs:
            return None
        x = inputs[0]
        if not isinstance(x, torch.Tensor):
            return None
        kind = _kind(module)
        batch = self._batch_size
        replaced = None
        if kind == "embedding" and not (x.ndim >= 2 and x.shape[0] == batch):
            # A lookup shared by the batch (position embeddings: ids (T,) or (1, T)): expand the
            # ids, and the output too unless an earlier hook did, so each example's gradient
            # arrives separately. A view: the values and the reduction are unchanged.
            ids = x if x.ndim >= 2 else x.unsqueeze(0)
            if ids.shape[0] == 1 and not (output.ndim == ids.ndim + 1 and output.shape[0] == batch):
                out = output if output.ndim == ids.ndim + 1 else output.unsqueeze(0)
                replaced = output = out.expand(batch, *out.shape[1:])
            x = ids.expand(batch, *ids.shape[1:]) if ids.shape[0] == 1 else ids
        if x.shape[0] != batch or output.shape[0] != batch:
            raise SubsetGradientError(
                f"a {type(module).__name__} call has leading dimension {x.shape[0]}, not the "
                f"batch's {batch}: its gradient cannot be split by example")
        if not output.requires_grad:
            return replaced
        call = RecordedCall(kind, module, x.detach())
        self._calls.append(call)

        def on_gradient(grad: torch.Tensor) -> None:
            call.grad = grad if call.grad is None else call.grad + grad

        output.register_hook(on_gradient)
        return replaced

    @torch.no_grad()
    def gradients(self, coefficients: torch.Tensor,
                  keep: bool = False) -> dict[nn.Parameter, torch.Tensor]:
        """``{parameter: sum_i coefficients[i] * grad_i}`` for every trainable parameter, where
        ``grad_i`` is example i's share of the gradient of the loss that was backpropagated.
        Only examples with a non-zero coefficient cost work. Clears the recorded calls unless
        ``keep``."""
        chosen, weights = split_coefficients(coefficients, self._batch_size)
        # The usual case (every chosen row weighs N_all / N_chosen): scale once at the end
        # instead of every output gradient.
        common = weights[0] if len(weights) and bool((weights == weights[0]).all()) else None
        out: dict[nn.Parameter, torch.Tensor] = {
            p: torch.zeros_like(p) for p in self.parameters}
        for call in self._calls:
            if call.grad is None:
                continue  # the call did not reach the loss: no gradient
            g = call.grad.index_select(0, chosen)
            if common is None:
                g = g * weights.to(g.dtype).view(-1, *([1] * (g.ndim - 1)))
            accumulate_call(call, g, chosen, out)
        if not keep:
            self._calls = []
        if common is not None:
            for grad in out.values():
                grad.mul_(common.to(grad.dtype))
        return out


def split_coefficients(coefficients: torch.Tensor,
                       batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(chosen, weights)``: the indices of the non-zero coefficients and their values."""
    coefficients = coefficients.reshape(-1)
    if coefficients.shape[0] != batch_size:
        raise ValueError(f"{coefficients.shape[0]} coefficients for a batch of {batch_size}")
    chosen = torch.nonzero(coefficients, as_tuple=True)[0]
    return chosen, coefficients.index_select(0, chosen)


def weighted_rows(grad: torch.Tensor, chosen: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The ``chosen`` rows of an output gradient, each multiplied by its weight."""
    g = grad.index_select(0, chosen)
    return g * weights.to(g.dtype).view(-1, *([1] * (g.ndim - 1)))


def accumulate_call(call: RecordedCall, g: torch.Tensor, chosen: torch.Tensor,
                    out: dict[nn.Parameter, torch.Tensor]) -> None:
    """Add ``call``'s share of the subset gradient to ``out``: ``g`` is its output gradient on
    the ``chosen`` rows, already multiplied by their coefficients."""
    module, inputs = call.module, call.inputs
    if call.kind == "linear":
        x = inputs.index_select(0, chosen)
        g2, a2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        _add(out, module.weight, g2.T @ a2.to(g2.dtype))
        _add(out, module.bias, g2.sum(0))
    elif call.kind == "embedding":
        if module.weight not in out:
            return
        ids = inputs
        if ids.stride(0) == 0:  # one lookup shared by the batch: sum the examples first
            g, ids = g.sum(0), ids[0]
        else:
            ids = ids.index_select(0, chosen)
        g2 = g.reshape(-1, g.shape[-1])
        padding = -1 if module.padding_idx is None else module.padding_idx
        # What autograd runs for an embedding (padding row excluded): fast, deterministic.
        grad = torch.ops.aten.embedding_dense_backward(
            g2, ids.reshape(-1), module.num_embeddings, padding, False)
        out[module.weight] += grad.to(module.weight.dtype)
    else:  # LayerNorm over the trailing normalized_shape
        x = inputs.index_select(0, chosen)
        dims = len(module.normalized_shape)
        xhat = F.layer_norm(x.to(g.dtype), module.normalized_shape, eps=module.eps)
        reduce = tuple(range(g.ndim - dims))
        _add(out, module.weight, (g * xhat).sum(reduce))
        _add(out, module.bias, g.sum(reduce))


def _add(out: dict[nn.Parameter, torch.Tensor], parameter: nn.Parameter | None,
         value: torch.Tensor) -> None:
    if parameter is not None and parameter in out:
        out[parameter] += value.to(parameter.dtype)


def _require_grad(module: nn.Module, inputs: tuple[object, ...], output: object) -> object:
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and not output.requires_grad \
            and output.is_floating_point():
        return output.detach().requires_grad_(True)
    return None
