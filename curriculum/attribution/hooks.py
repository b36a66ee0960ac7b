"""Capture each covered layer's inputs ``a`` and output gradients ``g`` during a backward pass.

A covered layer call hands its per-example gradient to a sink as :class:`GradientPiece` objects,
one per parameter: example i's gradient of a weight, viewed as an (m, n) matrix in the
parameter's own layout, is ``sum_t rows[i, t] (outer) cols[i, t]``; of a bias, ``sum_t rows[i, t]``.

============  =====================  ===============  ==============
layer         weight shape (m, n)    rows             cols
============  =====================  ===============  ==============
nn.Linear     (d_out, d_in)          g (B, T, d_out)  a (B, T, d_in)
GPT-2 Conv1D  (d_in, d_out)          a (B, T, d_in)   g (B, T, d_out)
nn.Embedding  (vocab, d)             ids (B, T)       g (B, T, d)
============  =====================  ===============  ==============

Every other parameter-holding layer (LayerNorm, custom modules) is *uncovered*: it is listed in
an :class:`UncoveredParametersWarning` and its gradient is left out of the scores.

Why tensor hooks on the layer output instead of module backward hooks: a tensor hook fires once
with the total gradient of that output, so a layer called several times in one forward (weight
sharing) yields one piece per call, and the a/g of each call stay paired.

Batch layout. The sink needs the batch dimension first, of size B (the batch being scored). An
embedding lookup shared by the whole batch -- the position embedding, looked up once with ids
(T,) or (1, T) and broadcast over the batch -- has its output *expanded* to B while armed (a
view: same values; the gradient reaching the weight is the same sum over the batch, computed by
the same reduction, so training is bitwise unchanged), so that each example's gradient arrives
separately. This assumes the model broadcasts that output against batched tensors, as position
embeddings are used (``tok + pos``); ``expand_shared_lookups=False`` turns it off. Rule: ids
shaped like the batch's ``input_ids`` without its batch dimension, or with batch dimension 1,
are a shared lookup (a (B,) class embedding whose B equals the sequence length would be misread).
Any other call whose leading dimension is not B is reported in a warning and left out; the
attributor's coverage check then excludes its parameters.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class UncoveredParametersWarning(UserWarning):
    """Some trainable parameters are not seen by the attribution hooks."""


@dataclass
class GradientPiece:
    """One layer call's share of one parameter's per-example gradients (see the module docs)."""

    name: str
    """Name of the parameter (the first name, for a parameter shared by several layers)."""
    rows: torch.Tensor
    """(B, T, m) floats, or (B, T) long row ids into an (m, n) weight (embedding lookups)."""
    cols: torch.Tensor | None
    """(B, T, n) floats; None for a bias, whose per-example gradient is ``rows.sum(1)``."""

    @property
    def is_lookup(self) -> bool:
        """Rows are ids (one-hot rows), not dense vectors."""
        return not self.rows.is_floating_point()


Sink = Callable[[list[GradientPiece]], None]


def conv1d_type() -> type | None:
    """Hugging Face's GPT-2 ``Conv1D`` class if transformers is already imported (a model that
    holds one has imported it), else None: importing transformers just to look is slow."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv1d"``, ``"embedding"``, or None when the hooks do not cover it."""
    conv1d = conv1d_type()
    if conv1d is not None and isinstance(module, conv1d):
        return "conv1d"
    if isinstance(module, nn.Linear):
        return "linear"
    # scale_grad_by_freq divides each row's gradient by its count in the *batch*: not a sum of
    # per-example terms.
    if isinstance(module, nn.Embedding) and not module.scale_grad_by_freq:
        return "embedding"
    return None


@dataclass
class CoveredLayer:
    """A layer the hooks see, and the names of its trainable parameters."""

    name: str
    """Module name in the model."""
    kind: str
    """``linear``, ``conv1d`` or ``embedding``."""
    module: nn.Module
    weight: str | None
    """Parameter name of the weight (None when frozen)."""
    bias: str | None
    """Parameter name of the bias (None when absent or frozen)."""


class LayerCapture:
    """Forward hooks on every covered layer of ``model``, present only while armed.

    The hooks are registered by :meth:`arm` and removed by :meth:`disarm`, so the steps that are
    not scored run the model's plain forward (a registered hook, even one that returns at once,
    takes every covered call off PyTorch's fast path). While armed for a batch, each covered call
    that takes part in the graph registers a tensor hook on its output; when backward reaches it,
    the call's pieces go to the sink, and the layer input is released. Nothing is written to
    ``.grad`` and no gradient is modified.
    """

    def __init__(
        self, model: nn.Module, warn_uncovered: bool = True, expand_shared_lookups: bool = True
    ) -> None:
        self.model = model
        self.expand_shared_lookups = expand_shared_lookups
        names = {id(p): name for name, p in model.named_parameters()}
        self._layers: dict[nn.Module, CoveredLayer] = {}
        covered_ids: set[int] = set()
        uncovered: dict[str, list[str]] = {}
        for module_name, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            kind = layer_kind(module)
            if kind is None:
                label = f"{module_name or '<root>'} ({type(module).__name__})"
                uncovered[label] = [n for n, _ in own]
                continue
            weight = module.weight if module.weight.requires_grad else None
            bias = getattr(module, "bias", None)
            bias = bias if isinstance(bias, nn.Parameter) and bias.requires_grad else None
            self._layers[module] = CoveredLayer(
                module_name,
                kind,
                module,
                None if weight is None else names[id(weight)],
                None if bias is None else names[id(bias)],
            )
            seen = [p for p in (weight, bias) if p is not None]
            covered_ids.update(id(p) for p in seen)
            extra = [n for n, p in own if all(p is not q for q in seen)]
            if extra:  # a subclass's own parameters (adapters and the like): not in the pieces
                uncovered[f"{module_name} ({type(module).__name__})"] = extra
        self.covered_parameters: list[str] = [
            name for name, p in model.named_parameters() if id(p) in covered_ids
        ]
        """Names of the parameters whose gradient the scores include."""
        self.uncovered_layers: dict[str, list[str]] = uncovered
        """``{"module (Type)": [parameter names]}`` of trainable layers the hooks do not see."""
        self.uncovered_parameters: list[str] = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and id(p) not in covered_ids
        ]
        if warn_uncovered and self.uncovered_parameters:
            warn_uncovered_parameters(model, self.uncovered_parameters, uncovered)
        self._batch_shape: tuple[int, ...] | None = None
        self._sink: Sink | None = None
        self._generation = 0
        self._active: set[str] | None = None
        self.calls_recorded = 0
        """Covered calls recorded since the last :meth:`arm`."""
        self.calls_received = 0
        """Of those, calls whose output gradient has arrived."""
        self.unattributable: set[str] = set()
        """Layers whose calls did not fit the batch layout since the last :meth:`arm`."""
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> list[CoveredLayer]:
        """Every covered layer, in module order."""
        return list(self._layers.values())

    @property
    def armed(self) -> bool:
        """True between :meth:`arm` and :meth:`disarm`."""
        return self._sink is not None

    def arm(
        self, batch_shape: Sequence[int], sink: Sink, parameters: set[str] | None = None
    ) -> None:
        """Send the pieces of the coming forward/backward to ``sink``.

        ``batch_shape`` is the shape of the batch's ``input_ids`` (B, T); ``parameters`` limits
        the pieces to these names (None: every covered parameter).
        """
        self._generation += 1
        self._batch_shape = tuple(int(s) for s in batch_shape)
        self._sink = sink
        self._active = parameters
        self.calls_recorded = 0
        self.calls_received = 0
        self.unattributable = set()
        if not self._handles:
            self._handles = [m.register_forward_hook(self._forward_hook) for m in self._layers]

    def disarm(self) -> None:
        """Stop capturing and remove the forward hooks; tensor hooks of calls already recorded
        become no-ops."""
        self._generation += 1
        self._sink = None
        self._batch_shape = None
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def remove(self) -> None:
        """Detach from the model for good (the same as :meth:`disarm`: nothing stays registered
        between scored batches)."""
        self.disarm()

    def _forward_hook(
        self, module: nn.Module, inputs: tuple[object, ...], output: object
    ) -> torch.Tensor | None:
        if self._sink is None or not torch.is_grad_enabled():
            return None
        if not isinstance(output, torch.Tensor) or not output.requires_grad or not inputs:
            return None
        x = inputs[0]
        if not isinstance(x, torch.Tensor):
            return None
        layer = self._layers[module]
        active = self._active
        if active is not None and layer.weight not in active and layer.bias not in active:
            return None
        assert self._batch_shape is not None
        layout = _batch_layout(layer.kind, x, self._batch_shape)
        if layout != "batched" and not self.expand_shared_lookups:
            layout = None
        if layout is None:
            self.unattributable.add(layer.name)
            return None
        batch_size = self._batch_shape[0]
        replaced = None
        if layout == "unbatched":
            x = x.unsqueeze(0).expand(batch_size, *x.shape)
            replaced = output = output.unsqueeze(0).expand(batch_size, *output.shape)
        elif layout == "broadcast":
            x = x.expand(batch_size, *x.shape[1:])
            replaced = output = output.expand(batch_size, *output.shape[1:])
        x = x.detach()
        generation, sink = self._generation, self._sink
        self.calls_recorded += 1

        def on_gradient(grad: torch.Tensor) -> None:
            if generation != self._generation:
                return
            self.calls_received += 1
            with torch.no_grad():
                pieces = _pieces(layer, x, grad, active)
                if pieces:
                    sink(pieces)

        output.register_hook(on_gradient)
        return replaced


def _batch_layout(kind: str, x: torch.Tensor, batch_shape: tuple[int, ...]) -> str | None:
    """``"batched"`` (leading dim is the batch), ``"broadcast"`` (an embedding lookup with leading
    dim 1), ``"unbatched"`` (an embedding lookup without batch dim) or None (does not fit)."""
    batch_size = batch_shape[0]
    if kind == "embedding":
        if x.ndim < len(batch_shape) and tuple(x.shape) == batch_shape[1:]:
            return "unbatched"
        if x.ndim >= 1 and x.shape[0] == batch_size:
            return "batched"
        if x.ndim == len(batch_shape) and x.shape[0] == 1:
            return "broadcast"
        return None
    # Dense layers: only batched calls; expanding a shared dense output is not assumed safe.
    return "batched" if x.ndim >= 2 and x.shape[0] == batch_size else None


def _pieces(
    layer: CoveredLayer, x: torch.Tensor, grad: torch.Tensor, active: set[str] | None
) -> list[GradientPiece]:
    batch_size = x.shape[0]
    pieces: list[GradientPiece] = []
    weight = layer.weight if active is None or layer.weight in active else None
    bias = layer.bias if active is None or layer.bias in active else None
    if layer.kind == "embedding":
        g = grad.reshape(batch_size, -1, grad.shape[-1])
        ids = x.reshape(batch_size, -1)
        if weight is not None:
            padding_idx = layer.module.padding_idx
            if padding_idx is not None:  # autograd gives the padding row no gradient
                g = g * (ids != padding_idx).unsqueeze(-1).to(g.dtype)
            pieces.append(GradientPiece(weight, ids, g))
        return pieces
    g = grad.reshape(batch_size, -1, grad.shape[-1])
    a = x.reshape(batch_size, -1, x.shape[-1])
    if weight is not None:
        if layer.kind == "linear":
            pieces.append(GradientPiece(weight, g, a))
        else:  # Conv1D: weight is (d_in, d_out)
            pieces.append(GradientPiece(weight, a, g))
    if bias is not None:
        pieces.append(GradientPiece(bias, g, None))
    return pieces


def warn_uncovered_parameters(
    model: nn.Module, names: list[str], layers: dict[str, list[str]], reason: str = ""
) -> None:
    """One warning naming every uncovered layer and the share of parameters it holds."""
    sizes = dict(model.named_parameters())
    total = sum(p.numel() for p in sizes.values() if p.requires_grad)
    left_out = sum(sizes[n].numel() for n in names if n in sizes)
    listed = "; ".join(f"{layer}: {', '.join(params)}" for layer, params in layers.items())
    warnings.warn(
        f"attribution leaves out {len(names)} parameter tensors ({left_out} of {total} trainable "
        f"parameters, {100.0 * left_out / max(1, total):.2f}%){reason}; scores are gradient dot "
        f"products over the other parameters only. Not covered: {listed}",
        UncoveredParametersWarning,
        stacklevel=3,
    )
