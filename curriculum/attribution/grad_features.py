"""LoGra-style gradient features: a compact per-document vector whose inner products approximate
per-example gradient dot products, for the behavior store's inner-product index.

For each covered weight (m, n) two small random matrices are drawn once, ``R`` (r_m, m) and
``S`` (r_n, n) with ``r_m = min(r, m)``, ``r_n = min(r, n)``; a bias (m,) gets ``R`` alone. The
layer's ``a`` and ``g`` are projected *before* the outer product (Choe et al. 2024, "What is
your data worth to GPT?"), so example i's feature block is

    F_i = sum_t (R rows_it) (S cols_it)^T  =  R (grad_i W) S^T        (r_m x r_n)

at ``B T r (m + n)`` multiply-adds, and no per-example gradient is formed. ``R`` has orthonormal
rows scaled by ``sqrt(m / r_m)`` (likewise ``S``), so ``E[R^T R] = I`` and
``E <F_i, F_j> = <grad_i W, grad_j W>``: the feature inner product is an unbiased estimate of
the gradient dot product, and *exact* when r >= m, n (the projections are then orthogonal). A
weight shared by several layers (tied embeddings) has one block that every use adds into, as its
gradient does. The features of a probe set (its mean-loss gradient, projected) are the query
direction "which documents push behavior X".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from curriculum.attribution.hooks import GradientPiece, LayerCapture
from curriculum.attribution.losses import (
    IGNORE_INDEX,
    Batch,
    PerExampleLoss,
    mean_token_probe_loss,
    per_example_token_loss,
    token_cross_entropy,
)
from curriculum.attribution.probe import batch_slices, probe_mode


@dataclass
class GradientFeatureConfig:
    """Shape of the gradient features."""

    rank: int = 8
    """r: each weight's gradient is projected to at most r x r, each bias to at most r."""
    seed: int = 0
    """Seed of the projection matrices (features of different seeds are not comparable)."""
    micro_batch_size: int = 32
    """Documents per forward/backward in :meth:`GradientFeatureProjector.features`."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.micro_batch_size < 1:
            raise ValueError("rank and micro_batch_size must be >= 1")


def _orthonormal_projection(rank: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """(min(rank, dim), dim): orthonormal rows scaled so that ``E[P^T P] = I``."""
    rank = min(rank, dim)
    gaussian = torch.randn(dim, rank, generator=generator, dtype=torch.float64)
    basis = torch.linalg.qr(gaussian).Q.T  # (rank, dim), orthonormal rows, uniformly oriented
    return basis * math.sqrt(dim / rank)


class GradientFeatureProjector:
    """Per-example projected gradients of a model (see the module docs).

    ``features(batch)`` runs its own forward and backward (``.grad`` untouched, eval mode);
    ``begin(batch)`` / ``finish()`` collect them from a backward someone else runs (in-run).
    """

    def __init__(
        self,
        model: nn.Module,
        config: GradientFeatureConfig | None = None,
        *,
        loss_fn: PerExampleLoss = per_example_token_loss,
        warn_uncovered: bool = True,
    ) -> None:
        self.model = model
        self.config = config or GradientFeatureConfig()
        self.loss_fn = loss_fn
        self.capture = LayerCapture(model, warn_uncovered=warn_uncovered)
        parameters = dict(model.named_parameters())
        generator = torch.Generator().manual_seed(self.config.seed)
        self._projections: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._blocks: dict[str, slice] = {}
        offset = 0
        for name in self.capture.covered_parameters:  # model order: stable across runs
            parameter = parameters[name]
            rank = self.config.rank
            device, dtype = parameter.device, parameter.dtype
            rows = _orthonormal_projection(rank, parameter.shape[0], generator).to(device, dtype)
            cols = None
            size = rows.shape[0]
            if parameter.ndim == 2:
                cols = _orthonormal_projection(rank, parameter.shape[1], generator).to(device, dtype)
                size *= cols.shape[0]
            self._projections[name] = (rows, cols)
            self._blocks[name] = slice(offset, offset + size)
            offset += size
        self.dim = offset
        """Length of a feature vector."""
        self._features: torch.Tensor | None = None

    @property
    def blocks(self) -> dict[str, slice]:
        """Where each parameter's block lies in a feature vector."""
        return dict(self._blocks)

    def begin(self, batch: Batch | torch.Tensor) -> None:
        """Collect features from the coming forward and backward of ``batch``."""
        input_ids = batch if isinstance(batch, torch.Tensor) else batch["input_ids"]
        first = next(iter(self._projections.values()))[0]
        self._features = torch.zeros(input_ids.shape[0], self.dim, dtype=first.dtype,
                                     device=first.device)
        self.capture.arm(input_ids.shape, self._accumulate)

    def finish(self) -> torch.Tensor:
        """(B, dim) features of the batch since :meth:`begin`; call after its backward."""
        if not self.capture.armed or self._features is None:
            raise RuntimeError("finish() without begin()")
        received = self.capture.calls_received
        self.capture.disarm()
        features, self._features = self._features, None
        if received == 0:
            raise RuntimeError("finish() before backward: no gradient reached the hooks")
        return features

    def features(self, batch: Batch) -> torch.Tensor:
        """(B, dim) features of ``loss_fn``'s per-example gradients, micro-batched; ``.grad``,
        train/eval modes and the random state are left as they were."""
        device = next(iter(self._projections.values()))[0].device
        parts = []
        with probe_mode(self.model):
            for chunk in batch_slices(batch, self.config.micro_batch_size, device):
                parts.append(self._run(chunk, lambda c: self.loss_fn(self.model, c).sum()))
        return torch.cat(parts)

    def probe_features(self, batch: Batch) -> torch.Tensor:
        """(dim,) feature of a probe set's mean token loss gradient (sum of its rows' features
        under the probe loss)."""
        device = next(iter(self._projections.values()))[0].device
        total = int((batch["labels"] != IGNORE_INDEX).sum())
        result = torch.zeros(self.dim, dtype=next(iter(self._projections.values()))[0].dtype,
                             device=device)
        with probe_mode(self.model):
            for chunk in batch_slices(batch, self.config.micro_batch_size, device):
                result += self._run(chunk, lambda c: mean_token_probe_loss(self.model, c, total)).sum(0)
        return result

    def close(self) -> None:
        """Remove the hooks from the model."""
        self.capture.remove()

    def _run(self, chunk: dict[str, torch.Tensor], loss_of: Any) -> torch.Tensor:
        parameters = [p for n, p in self.model.named_parameters() if n in self._blocks]
        self.begin(chunk)
        try:
            loss = loss_of(chunk)
            torch.autograd.grad(loss, parameters, allow_unused=True)
        except BaseException:
            self.capture.disarm()
            raise
        return self.finish()

    def _accumulate(self, pieces: list[GradientPiece]) -> None:
        assert self._features is not None
        for piece in pieces:
            rows_projection, cols_projection = self._projections[piece.name]
            block = self._blocks[piece.name]
            dtype = rows_projection.dtype
            if piece.is_lookup:
                left = rows_projection.T[piece.rows]  # (B, T, r_m): projected one-hot rows
            else:
                left = piece.rows.to(dtype) @ rows_projection.T
            if piece.cols is None:  # bias: R sum_t g_t
                self._features[:, block] += left.sum(dim=1)
                continue
            assert cols_projection is not None
            right = piece.cols.to(dtype) @ cols_projection.T  # (B, T, r_n)
            self._features[:, block] += torch.bmm(left.transpose(1, 2), right).flatten(1)


class GradientFeatureEmbedder:
    """The store's :class:`~curriculum.store.embedders.Embedder` on gradient features.

    Each document is byte-tokenized (one per row, at most ``seq_len`` predicted tokens) and
    embedded as the unit-normalized projected gradient of its own mean token loss: inner products
    of the embeddings are cosine similarities of per-document gradients, so a probe set's
    :meth:`behavior_direction` queries the FAISS index for the documents whose gradient points
    the way that lowers that behavior's probe loss. The model is the reference GPT from a
    checkpoint (or random weights from ``model_seed``), or a model passed in.
    """

    name = "gradient"

    def __init__(self, checkpoint: str | None = None, model_seed: int = 0, rank: int = 8,
                 seed: int = 0, seq_len: int = 128, batch_size: int = 32,
                 model: nn.Module | None = None) -> None:
        if model is None:  # the GPT embedder's loader (checkpoint formats live there)
            from curriculum.store.embedders import make_embedder

            model = make_embedder("gpt", checkpoint=checkpoint, seed=model_seed).model
        self.checkpoint, self.model_seed, self.seq_len = checkpoint, int(model_seed), int(seq_len)
        self.model = model
        self.projector = GradientFeatureProjector(
            model, GradientFeatureConfig(rank=rank, seed=seed, micro_batch_size=batch_size),
            loss_fn=_per_document_mean_loss, warn_uncovered=False)
        self.dim = self.projector.dim

    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serializable."""
        config = self.projector.config
        return {"checkpoint": self.checkpoint, "model_seed": self.model_seed, "rank": config.rank,
                "seed": config.seed, "seq_len": self.seq_len, "batch_size": config.micro_batch_size}

    def fit(self, texts: Sequence[str | bytes]) -> None:
        """Nothing to fit: projections come from the seed."""

    def embed(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """float32 (len(texts), dim), rows of unit norm (zeros for an empty text)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self.projector.features(byte_document_batch(texts, self.seq_len))
        return _unit_rows(features)

    def behavior_direction(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """float32 (dim,) unit query vector of a probe set (its mean-loss gradient feature)."""
        feature = self.projector.probe_features(byte_document_batch(texts, self.seq_len))
        return _unit_rows(feature[None])[0]

    def state(self) -> dict[str, np.ndarray]:
        """No fitted state."""
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """No fitted state."""


def byte_document_batch(texts: Sequence[str | bytes], seq_len: int) -> dict[str, torch.Tensor]:
    """One UTF-8 byte-tokenized document per row (end-of-text 256), right-padded with label -100
    and ``loss_weight`` 1 on labelled tokens: the batch layout of :mod:`loaders.packing`."""
    eos = 256
    inputs = torch.full((len(texts), seq_len), eos, dtype=torch.long)
    labels = torch.full((len(texts), seq_len), IGNORE_INDEX, dtype=torch.long)
    for i, text in enumerate(texts):
        data = text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8")
        tokens = list(data[:seq_len]) + [eos]
        length = len(tokens) - 1
        if length:
            inputs[i, :length] = torch.tensor(tokens[:-1])
            labels[i, :length] = torch.tensor(tokens[1:])
    return {"input_ids": inputs, "labels": labels,
            "loss_weight": (labels != IGNORE_INDEX).float()}


def _per_document_mean_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    per_token = token_cross_entropy(model, batch)
    valid = (batch["labels"] != IGNORE_INDEX).to(per_token.dtype)
    return (per_token * valid).sum(1) / valid.sum(1).clamp_min(1.0)


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    array = features.detach().double().cpu().numpy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms > 0, norms, 1.0)).astype(np.float32)
