"""Per-example gradient dot products from layer pieces ("ghost" dot products), three exact forms.

For a weight piece (rows R (B, T, m), cols C (B, T, n)) and K probe gradients G_k (m, n), the
score of example i is ``<sum_t R_it C_it^T, G_k> = sum_t R_it . (G_k C_it)``. Costs in
multiply-adds for the batch (T tokens per example, M probe tokens over all K sets):

- ``aggregated``: ``sum_t R_it . (G_k C_it)`` -- one GEMM of the tokens against the stacked
  probe gradients: ``B T K m n``. Cheapest for K = 1.
- ``per_example``: one layer's per-example gradient ``R_i^T C_i`` for a chunk of examples at a
  time (never the whole model's, never kept), then K dot products: ``B T m n + B K m n``. About K
  times cheaper than ``aggregated`` once K >= 2; its transient memory is bounded by
  ``max_chunk_bytes``.
- ``gram``: with the probe sets' own rows and cols (M tokens), ``sum_t sum_s (R_it . R_s)
  (C_it . C_s)`` -- the T x M Gram matrices of both sides: ``B T M (m + n)``. Cheapest when the
  probe sets are small; unavailable under Adam preconditioning (an elementwise preconditioner
  does not factor through the Gram matrices) and for parameters shared by several layers.

Embedding lookups (gather the probe gradient's rows: ``B T K n``) and biases (``B T m + B K m``)
have one obvious form each.

Per-token contributions. Every form but ``per_example`` is a sum over the example's tokens, so
``per_token=True`` returns the (B, T, K) terms of that sum instead of their (B, K) total (the
contribution of each token position's layer input and output gradient). Summed over a document's
positions inside a packed row they give that document's share of the row's score, exactly
partitioning it; ``per_example`` has no such split and is never chosen for per-token scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from curriculum.attribution.hooks import GradientPiece

EXACT_FORMS: tuple[str, ...] = ("aggregated", "per_example", "gram")


@dataclass
class GramFactors:
    """The probe sets' own rows and cols for one weight (tokens with a zero gradient dropped)."""

    rows: torch.Tensor
    """(M, m) probe-token rows, all K sets stacked."""
    cols: torch.Tensor
    """(M, n) probe-token cols."""
    membership: torch.Tensor
    """(M, K) one-hot: which probe set each token belongs to."""

    @property
    def num_tokens(self) -> int:
        """M."""
        return int(self.rows.shape[0])


def exact_costs(piece: GradientPiece, num_probes: int, gram: GramFactors | None) -> dict[str, int]:
    """Multiply-adds of each applicable exact form for this piece (see the module docs)."""
    batch, tokens = piece.rows.shape[:2]
    if piece.cols is None or piece.is_lookup:  # one form: gather rows, or sum a bias
        width = (piece.rows if piece.cols is None else piece.cols).shape[-1]
        return {"aggregated": batch * tokens * num_probes * width}
    m, n = piece.rows.shape[-1], piece.cols.shape[-1]
    costs = {
        "aggregated": batch * tokens * num_probes * m * n,
        "per_example": batch * tokens * m * n + batch * num_probes * m * n,
    }
    if gram is not None:
        costs["gram"] = batch * tokens * gram.num_tokens * (m + n + 1)
    return costs


def choose_form(
    piece: GradientPiece, num_probes: int, allowed: tuple[str, ...], gram: GramFactors | None,
    per_token: bool = False,
) -> str:
    """The cheapest allowed form (``aggregated`` when nothing else applies); with ``per_token``,
    the cheapest form that has per-token terms."""
    costs = exact_costs(piece, num_probes, gram)
    candidates = {form: cost for form, cost in costs.items()
                  if form in allowed and not (per_token and form == "per_example")}
    return min(candidates, key=candidates.__getitem__) if candidates else "aggregated"


def dot_products(
    piece: GradientPiece,
    probe: torch.Tensor,
    form: str = "aggregated",
    gram: GramFactors | None = None,
    max_chunk_bytes: int = 64 * 2**20,
    per_token: bool = False,
) -> torch.Tensor:
    """(B, K): ``<example i's gradient of this piece, probe[k]>`` for every i, k; with
    ``per_token`` the (B, T, K) per-token terms that sum to it (see the module docs).

    ``probe`` is (K, m, n) for a weight, (K, m) for a bias, in the parameter's layout.
    """
    dtype = probe.dtype
    rows = piece.rows if piece.is_lookup else piece.rows.to(dtype)
    batch, tokens = rows.shape[:2]
    num_probes = probe.shape[0]
    if piece.cols is None:  # bias
        return rows @ probe.T if per_token else rows.sum(dim=1) @ probe.T
    cols = piece.cols.to(dtype)
    m, n = probe.shape[1], probe.shape[2]
    element = probe.element_size()
    if piece.is_lookup:
        per_example = tokens * num_probes * n * element
        return _chunked(batch, per_example, max_chunk_bytes,
                        lambda s: _lookup(rows[s], cols[s], probe, per_token))
    if form == "per_example":
        if per_token:
            raise ValueError(f"{piece.name}: the per_example form has no per-token terms")
        flat = probe.reshape(num_probes, m * n)
        return _chunked(
            batch, m * n * element, max_chunk_bytes,
            lambda s: torch.bmm(rows[s].transpose(1, 2), cols[s]).reshape(-1, m * n) @ flat.T,
        )
    if form == "gram":
        if gram is None:
            raise ValueError(f"{piece.name}: gram form needs the probe sets' factors")
        per_example = tokens * gram.num_tokens * element * 2
        return _chunked(batch, per_example, max_chunk_bytes,
                        lambda s: _gram(rows[s], cols[s], gram, per_token))
    if form != "aggregated":
        raise ValueError(f"unknown form {form!r}; known: {', '.join(EXACT_FORMS)}")
    per_example = tokens * num_probes * min(m, n) * element
    return _chunked(batch, per_example, max_chunk_bytes,
                    lambda s: _aggregated(rows[s], cols[s], probe, per_token))


def _chunked(
    batch: int, bytes_per_example: int, max_bytes: int, compute: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    step = max(1, max_bytes // max(1, bytes_per_example))
    if step >= batch:
        return compute(slice(0, batch))
    return torch.cat([compute(slice(start, start + step)) for start in range(0, batch, step)])


def _aggregated(rows: torch.Tensor, cols: torch.Tensor, probe: torch.Tensor,
                per_token: bool = False) -> torch.Tensor:
    num_probes, m, n = probe.shape
    batch, tokens = rows.shape[:2]
    if m <= n:  # project the wider side, so the intermediate is B T K min(m, n)
        projected = cols @ probe.reshape(num_probes * m, n).T
        other = rows
    else:
        projected = rows @ probe.transpose(1, 2).reshape(num_probes * n, m).T
        other = cols
    projected = projected.view(batch, tokens, num_probes, -1)
    terms = projected * other.unsqueeze(2)
    return terms.sum(dim=3) if per_token else terms.sum(dim=(1, 3))


def _lookup(ids: torch.Tensor, cols: torch.Tensor, probe: torch.Tensor,
            per_token: bool = False) -> torch.Tensor:
    # Row ids_it of probe k, dotted with cols_it. One index_select per k: several times faster
    # on CPU than one gather of (K, B, T, n) followed by an einsum.
    flat = ids.reshape(-1)
    dims = (2,) if per_token else (1, 2)
    return torch.stack(
        [(p.index_select(0, flat).view_as(cols) * cols).sum(dim=dims) for p in probe], dim=-1
    )


def _gram(rows: torch.Tensor, cols: torch.Tensor, gram: GramFactors,
          per_token: bool = False) -> torch.Tensor:
    batch, tokens = rows.shape[:2]
    row_gram = rows.reshape(batch * tokens, -1) @ gram.rows.T
    col_gram = cols.reshape(batch * tokens, -1) @ gram.cols.T
    terms = (row_gram * col_gram).view(batch, tokens, -1)
    return (terms if per_token else terms.sum(dim=1)) @ gram.membership
