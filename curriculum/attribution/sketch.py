"""Sketched mode: the probe gradients of each weight projected to rank r, for large models.

For one weight with (preconditioned) probe gradients G_1..G_K (m, n), a randomized range finder
(Halko, Martinsson & Tropp 2011) finds an orthonormal left basis L (m, r) of the column space of
``[G_1 ... G_K]`` and a right basis R (n, r) of the row space of ``[G_1; ...; G_K]``: random
Gaussian test matrices, ``power_iterations`` rounds of ``A A^T``, then a QR. Each probe gradient
is kept as its r x r core ``C_k = L^T G_k R``, so ``G_k ~ L C_k R^T`` and example i's score is

    sum_t <R_it, G_k C_it>  ~  < sum_t (L^T R_it)(R^T C_it)^T , C_k >

-- ``B T r (m + n)`` multiply-adds to project the tokens, ``B T r^2`` for the small outer
products, ``B K r^2`` for the dot products, against ``B T m n`` for the cheapest exact form once
K >= 2. The bases are shared by the K behaviors, so the cost does not grow with K. The sketch is
exact when the probe gradients have rank <= r; its quality otherwise is what
:func:`spearman_correlation` against exact scores measures (``bench/attribution_overhead.py``).
Layers where the sketch would not save work (r close to min(m, n)), embedding lookups and biases
are scored exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from curriculum.attribution.hooks import GradientPiece


@dataclass
class SketchedProbe:
    """Rank-r form of one weight's K probe gradients: ``G_k ~ left @ core[k] @ right.T``."""

    left: torch.Tensor
    """(m, r) orthonormal columns."""
    right: torch.Tensor
    """(n, r) orthonormal columns."""
    core: torch.Tensor
    """(K, r, r)."""


def sketch_saves_work(m: int, n: int, rank: int) -> bool:
    """Whether a rank-``rank`` sketch costs less per token than an exact (m, n) dot product."""
    return rank < min(m, n) and rank * (m + n) + rank * rank < m * n


def sketch_probe_gradients(
    probe: torch.Tensor, rank: int, power_iterations: int = 1, generator: torch.Generator | None = None
) -> SketchedProbe:
    """Randomized rank-``rank`` two-sided sketch of ``probe`` (K, m, n)."""
    num_probes, m, n = probe.shape
    rank = min(rank, m, n)
    work = probe.float() if probe.dtype in (torch.float16, torch.bfloat16) else probe

    def gaussian(*shape: int) -> torch.Tensor:
        sample = torch.randn(*shape, generator=generator, dtype=work.dtype)
        return sample.to(work.device)

    # Left basis: range of A = [G_1 ... G_K] (m, K n). A @ Omega = sum_k G_k @ Omega_k.
    left = torch.einsum("kmn,knr->mr", work, gaussian(num_probes, n, rank))
    for _ in range(power_iterations):
        left = torch.linalg.qr(left).Q
        left = torch.einsum("kmn,knr->mr", work, torch.einsum("kmn,mr->knr", work, left))
    left = torch.linalg.qr(left).Q
    # Right basis: row space of B = [G_1; ...; G_K] (K m, n). B^T @ Omega = sum_k G_k^T Omega_k.
    right = torch.einsum("kmn,kmr->nr", work, gaussian(num_probes, m, rank))
    for _ in range(power_iterations):
        right = torch.linalg.qr(right).Q
        right = torch.einsum("kmn,kmr->nr", work, torch.einsum("kmn,nr->kmr", work, right))
    right = torch.linalg.qr(right).Q
    core = left.T @ work @ right
    return SketchedProbe(left.to(probe.dtype), right.to(probe.dtype), core.to(probe.dtype))


def sketched_dot_products(piece: GradientPiece, sketch: SketchedProbe) -> torch.Tensor:
    """(B, K) approximate dot products of a dense weight piece with the sketched probes."""
    if piece.cols is None or piece.is_lookup:
        raise ValueError(f"{piece.name}: only dense weight pieces are sketched")
    dtype = sketch.core.dtype
    left_tokens = piece.rows.to(dtype) @ sketch.left  # (B, T, r)
    right_tokens = piece.cols.to(dtype) @ sketch.right  # (B, T, r)
    small = torch.bmm(left_tokens.transpose(1, 2), right_tokens)  # (B, r, r)
    num_probes = sketch.core.shape[0]
    return small.flatten(1) @ sketch.core.reshape(num_probes, -1).T


def spearman_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by order; fine for floats)."""
    if x.numel() != y.numel() or x.numel() < 2:
        raise ValueError("need two tensors of the same length >= 2")

    def ranks(values: torch.Tensor) -> torch.Tensor:
        order = values.flatten().double().argsort()
        result = torch.empty_like(order, dtype=torch.float64)
        result[order] = torch.arange(order.numel(), dtype=torch.float64)
        return result - result.mean()

    rx, ry = ranks(x), ranks(y)
    return float((rx @ ry) / (rx.norm() * ry.norm()).clamp_min(1e-300))
