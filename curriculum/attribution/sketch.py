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
Layers where the sketch would not save work (r close to min(m, n)) and embedding lookups are
scored exactly. A dense layer's bias is sketched together with its weight: the bias gradient
``sum_t R_it`` (Linear) is the weight gradient of a constant input 1, so ``[G_k | b_k]`` (an
extra column, or for GPT-2's Conv1D an extra row) is sketched as one matrix and the tokens'
projections get the basis's extra row added -- the bias then costs nothing per token instead of
a pass over the output gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
    bias: str | None = None
    """Name of the bias sketched with the weight (its piece is then skipped), if any."""
    bias_side: str | None = None
    """``cols``: the bias is the last of the n + 1 columns (``right`` has n + 1 rows); ``rows``:
    the last of m + 1 rows (``left`` has m + 1 rows)."""


def with_bias(probe: torch.Tensor, bias: torch.Tensor, side: str) -> torch.Tensor:
    """The weight's probe gradients (K, m, n) with the bias's (K, m) or (K, n) appended as an
    extra column (``side="cols"``) or row (``side="rows"``)."""
    if side == "cols":
        return torch.cat([probe, bias.unsqueeze(2)], dim=2)
    if side == "rows":
        return torch.cat([probe, bias.unsqueeze(1)], dim=1)
    raise ValueError(f"side must be 'cols' or 'rows', got {side!r}")


def sketch_saves_work(m: int, n: int, rank: int) -> bool:
    """Whether a rank-``rank`` sketch costs less per token than an exact (m, n) dot product."""
    return rank < min(m, n) and rank * (m + n) + rank * rank < m * n


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block's torch ops on one CPU thread. Sketching is many small ops (QR of (m, r)
    matrices, thin products): latency-bound, and LAPACK splits a QR into many tiny parallel
    regions, each waking the thread team -- with sleeping (passive) OpenMP threads, 30x slower
    than one thread doing the work (measured: 4.9 ms vs 0.03 ms for a 128 x 32 QR; a refresh's
    sketching, 150 ms vs 40 ms)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def sketched_dot_products(piece: GradientPiece, sketch: SketchedProbe,
                          per_token: bool = False) -> torch.Tensor:
    """(B, K) approximate dot products of a dense weight piece (and, when the sketch holds it,
    the layer's bias) with the sketched probes; (B, T, K) per-token terms with ``per_token``."""
    if piece.cols is None or piece.is_lookup:
        raise ValueError(f"{piece.name}: only dense weight pieces are sketched")
    dtype = sketch.core.dtype
    left, right = sketch.left, sketch.right
    rows, cols = piece.rows.to(dtype), piece.cols.to(dtype)
    # The bias's constant input 1 projects to the basis's extra row.
    if sketch.bias_side == "rows":
        left_tokens = torch.addmm(left[-1], rows.flatten(0, 1), left[:-1]).view(*rows.shape[:2], -1)
    else:
        left_tokens = rows @ left  # (B, T, r)
    if sketch.bias_side == "cols":
        right_tokens = torch.addmm(right[-1], cols.flatten(0, 1), right[:-1]).view(*cols.shape[:2], -1)
    else:
        right_tokens = cols @ right  # (B, T, r)
    if per_token:  # left_t^T core_k right_t for every token t
        return torch.einsum("btr,krs,bts->btk", left_tokens, sketch.core, right_tokens)
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
