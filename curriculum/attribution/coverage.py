"""Check that the hooks see every use of every covered parameter.

A layer type being covered is not enough: a weight can also be used functionally
(``F.linear(x, self.wte.weight)``, ``nn.MultiheadAttention``'s ``out_proj``), or a layer can be
called in a batch layout the hooks cannot split per example. Then the pieces miss part of the
gradient and the scores would be silently wrong. So, once, on a few probe rows, the attributor
rebuilds each covered parameter's gradient from the pieces and compares it with autograd's; a
parameter that does not match is moved to the uncovered list, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from curriculum.attribution.hooks import GradientPiece, LayerCapture
from curriculum.attribution.losses import Batch, ProbeLoss, count_labelled_tokens
from curriculum.attribution.probe import probe_mode


def add_piece_gradient(total: torch.Tensor, piece: GradientPiece) -> None:
    """Add the piece's summed (over examples) gradient into ``total`` (the parameter's shape)."""
    if piece.cols is None:
        total += piece.rows.sum(dim=(0, 1)).to(total.dtype)
    elif piece.is_lookup:
        total.index_add_(0, piece.rows.flatten(), piece.cols.flatten(0, 1).to(total.dtype))
    else:
        total += (piece.rows.flatten(0, 1).T @ piece.cols.flatten(0, 1)).to(total.dtype)


def coverage_errors(
    model: nn.Module,
    capture: LayerCapture,
    parameters: Mapping[str, nn.Parameter],
    batch: Batch,
    probe_loss_fn: ProbeLoss,
) -> dict[str, float]:
    """Relative error ``|rebuilt - autograd| / |autograd|`` of each parameter's gradient."""
    names = list(parameters)
    tensors = [parameters[name] for name in names]
    device = tensors[0].device
    batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    rebuilt = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in parameters.items()}

    def sink(pieces: list[GradientPiece]) -> None:
        for piece in pieces:
            add_piece_gradient(rebuilt[piece.name], piece)

    with probe_mode(model):
        capture.arm(batch["input_ids"].shape, sink, set(names))
        try:
            loss = probe_loss_fn(model, batch, max(1, count_labelled_tokens(batch)))
            grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        finally:
            capture.disarm()
    errors = {}
    for name, grad in zip(names, grads, strict=True):
        expected = torch.zeros_like(rebuilt[name]) if grad is None else grad.double()
        scale = float(expected.norm())
        difference = float((rebuilt[name] - expected).norm())
        errors[name] = 0.0 if difference == 0.0 else difference / max(scale, 1e-30)
    return errors
