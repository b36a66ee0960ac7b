"""The losses attribution is defined on: a per-example training loss and a probe-set loss.

Scores are exact per-example gradient dot products only if the batch loss that is backpropagated
is a *sum of per-example terms*, each depending on its own row of the batch alone. With the
causal-LM loss of :func:`train.module.weighted_token_loss` that holds, with

    l_i = sum_t valid_it * w_it * CE_it / N,      N = sum_{j,t} valid_jt  (labelled tokens in the batch)

so that the batch loss is ``sum_i l_i`` (the mean over every labelled token of the batch, each
weighted by ``loss_weight``). ``N`` is a constant of the batch, not of the parameters, so
``grad l_i`` is well defined; an example with no labelled token has ``l_i = 0`` and score 0.
The probe loss of behavior k is the plain mean token cross-entropy over its whole probe set,
``L_Vk = sum_{j,t} valid_jt * CE_jt / N_Vk`` (no ``loss_weight``).

``labels`` are already shifted (``labels[:, t]`` is the target of ``logits[:, t]``) and -100
marks padding and ignored positions, as :mod:`loaders.packing` writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from curriculum.batch import IGNORE_INDEX  # the one definition (re-exported from here)

Batch = Mapping[str, torch.Tensor]
"""``input_ids`` (B, T) long, ``labels`` (B, T) long, optional ``loss_weight`` (B, T) float."""

PerExampleLoss = Callable[[nn.Module, Batch], torch.Tensor]
"""``loss_fn(model, batch) -> (B,)`` per-example losses whose sum is the batch training loss."""

ProbeLoss = Callable[[nn.Module, Batch, int], torch.Tensor]
"""``probe_loss_fn(model, batch, num_probe_tokens) -> scalar``: this micro-batch's share of the
probe-set loss, i.e. its summed token loss divided by the labelled tokens of the whole set."""


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor (our GPT) or an object with ``.logits`` (Hugging Face)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no logits tensor (got {type(output).__name__})")
    return logits


def token_cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Per-token cross-entropy (B, T); 0 where ``labels`` is -100.

    Half-precision logits are lifted to float32; float64 logits stay float64 (exactness tests).
    """
    logits = logits_of(model(batch["input_ids"]))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    labels = batch["labels"].to(logits.device)
    per_token = F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    return per_token.view(labels.shape)


def per_example_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """``l_i = sum_t valid * loss_weight * CE / N`` (B,), N = labelled tokens of the batch.

    ``per_example_token_loss(model, batch).sum()`` equals
    ``train.module.weighted_token_loss(logits, labels, loss_weight)``.
    """
    per_token = token_cross_entropy(model, batch)
    valid = (batch["labels"] != IGNORE_INDEX).to(per_token.device, per_token.dtype)
    weight = batch.get("loss_weight")
    weighted = per_token * valid
    if weight is not None:
        weighted = weighted * weight.to(per_token.device, per_token.dtype)
    return weighted.sum(dim=1) / valid.sum().clamp_min(1.0)


def mean_token_probe_loss(model: nn.Module, batch: Batch, num_probe_tokens: int) -> torch.Tensor:
    """This micro-batch's share of the probe loss: summed token CE / labelled tokens of the set."""
    return token_cross_entropy(model, batch).sum() / max(1, num_probe_tokens)


def count_labelled_tokens(batch: Batch) -> int:
    """Positions whose label is not -100."""
    return int((batch["labels"] != IGNORE_INDEX).sum())
