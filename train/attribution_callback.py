"""Online attribution during training: In-Run Data Shapley scores written into the store.

Every ``every_n_steps`` steps the callback arms :class:`curriculum.attribution.InRunAttributor`
before the forward, reads the (B, K) scores after Lightning's backward (``on_after_backward``,
before clipping and the optimizer step, so the update is untouched), multiplies by ``-lr`` (and
by ``1 / world_size`` under DDP, whose update is the mean of the ranks' gradients, so that a
document's score is the same whichever rank, and however many ranks, trained on it) and adds
them to the behavior store's attribution table. Probe gradients are recomputed every
``probe_refresh_steps``. Under DDP the scores of every rank are gathered, and the rank-local
leader of each node (local rank 0, the store's single writer) records all of them, so every
node's store holds every measurement. kNN estimates for unmeasured rows are refreshed every
``estimate_every_n_steps`` in the same writer process (FAISS never runs in DataLoader workers).

Rows. With ``pad`` packing a batch row is one document and its score is exact. With ``concat``
packing a row holds several documents that attention mixes. By default (``document_scores:
segments``) the attributor returns each token position's terms of the row's score and each
document gets the sum over its own positions (:func:`segment_scores`): the terms partition the
row's score exactly, and a document is credited with the gradient flowing through its own
tokens' activations (which includes what later documents' losses ask of them through
attention). ``token_share`` splits the row's score by labelled-token share instead (blurrier:
every document of a row gets the same per-token score).

Gradient clipping. The update Adam makes uses the clipped gradient, so the callback passes the
clip coefficient ``min(1, clip / ||g||)`` (Lightning's norm clipping, ``gradient_clip_val``) to the
attributor, which scales the scores and the second moment accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from curriculum.attribution import AttributionConfig, InRunAttributor
from curriculum.batch import IGNORE_INDEX


@dataclass
class AttributionSettings:
    """When and how attribution runs during training."""

    store: str = ""
    """Behavior store directory to write the scores into."""
    every_n_steps: int = 4
    """Score the training batch every this many steps."""
    probe_refresh_steps: int = 100
    """Recompute the probe gradients every this many steps. A refresh is a forward and backward
    pass over every probe set (at the demo's size, K=2 x 32 documents: about 4 plain steps), so
    its cost per step is that over this cadence. Why 100: at the demo's learning rate, scores
    with a probe gradient 1 step old rank like fresh ones (Spearman 0.65-0.93), but from 2 steps
    on the correlation scatters between -0.7 and 0.7 with no trend with age out to 100 steps:
    the fast component of the probe gradient (Adam's oscillation in sharp directions) is lost
    within a step or two at any affordable cadence, so refreshing more often costs more without
    tracking it (``bench/attribution_overhead.py`` prints the table)."""
    estimate_every_n_steps: int = 10
    """Refresh the kNN estimates of unmeasured rows every this many steps (0: never). Often,
    so that within one pass the documents measured so far inform the decisions about those
    not yet seen (at the demo's size a refresh takes milliseconds: a flat search of K-dimensional
    affinity profiles)."""
    estimate_space: str = "affinity"
    """Where kNN estimates look for measured neighbours: ``affinity`` (documents with the same
    affinity profile, the same mix of behaviors) or ``embedding`` (the store's embeddings:
    content, or gradient features with a ``grad:CKPT`` store); see
    :mod:`curriculum.store.profile`."""
    estimate_neighbors: int = 20
    """Measured neighbours per kNN estimate."""
    document_scores: str = "segments"
    """How a packed row's score is split over its documents: ``segments`` (each document's own
    token positions' terms, exact partition) or ``token_share`` (by labelled-token share)."""
    attributor: AttributionConfig = field(default_factory=AttributionConfig)
    """Exact or sketched mode, preconditioning and the like."""


DOCUMENT_SCORES = ("segments", "token_share")


def segment_scores(terms: np.ndarray, token_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-document scores from per-token terms (B, T, K): each document's score is the sum of
    the terms at its positions (``token_rows`` (B, T), -1 on padding, whose terms are dropped).
    A document on several rows of the batch gets one score, their sum. Returns (rows, scores)."""
    flat_rows = token_rows.reshape(-1)
    flat_terms = terms.reshape(-1, terms.shape[-1])
    keep = flat_rows >= 0
    unique, inverse = np.unique(flat_rows[keep], return_inverse=True)
    out = np.zeros((len(unique), terms.shape[-1]), np.float64)
    np.add.at(out, inverse, flat_terms[keep])
    return unique.astype(np.int64), out.astype(np.float32)


def clip_coefficient(parameters: Any, max_norm: float | None) -> float:
    """``min(1, max_norm / (||g||_2 + 1e-6))`` over the parameters' ``.grad`` (what
    ``torch.nn.utils.clip_grad_norm_`` multiplies them by); 1.0 without clipping."""
    if not max_norm:
        return 1.0
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 1.0
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    return min(1.0, float(max_norm) / (norm + 1e-6))


def row_scores(scores: np.ndarray, token_rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray,
                                                                                       np.ndarray]:
    """Per-document scores from per-sequence scores (B, K): each sequence's score split over its
    documents by their share of its labelled tokens. Returns (rows, scores)."""
    out_rows, out_scores = [], []
    valid = labels != IGNORE_INDEX
    for index in range(scores.shape[0]):
        rows = token_rows[index][valid[index] & (token_rows[index] >= 0)]
        if rows.size == 0:
            continue
        unique, counts = np.unique(rows, return_counts=True)
        share = counts / counts.sum()
        out_rows.append(unique)
        out_scores.append(share[:, None] * scores[index][None, :])
    if not out_rows:
        return np.zeros(0, np.int64), np.zeros((0, scores.shape[1]), np.float32)
    return np.concatenate(out_rows), np.concatenate(out_scores).astype(np.float32)


class AttributionCallback(L.Callback):
    """Writes per-document, per-behavior attribution scores into the behavior store."""

    def __init__(self, settings: AttributionSettings) -> None:
        if settings.every_n_steps < 1 or settings.probe_refresh_steps < 1:
            raise ValueError("every_n_steps and probe_refresh_steps must be >= 1")
        if settings.document_scores not in DOCUMENT_SCORES:
            raise ValueError(f"document_scores must be one of {', '.join(DOCUMENT_SCORES)}, "
                             f"got {settings.document_scores!r}")
        self.settings = settings
        self.attributor: InRunAttributor | None = None
        self.store: Any = None
        self.behaviors: tuple[str, ...] = ()
        self._last_refresh = -1
        self._batch: Any = None
        self.measured_rows = 0
        self._measured: np.ndarray | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Open the store (writer on local rank 0) and attach the attributor."""
        from curriculum.store import BehaviorStore, StoreReader

        reader = StoreReader(self.settings.store)
        self.behaviors = tuple(reader.behaviors)
        missing = [b for b in self.behaviors if b not in pl_module.probe_batches]
        if missing:
            raise ValueError(f"{self.settings.store}: no probe set for behaviors {missing}")
        if trainer.local_rank == 0:
            self.store = BehaviorStore.open(self.settings.store)
        # Rows measured in the store for some behavior, so far (earlier runs on it included), for
        # the attribution/measured_fraction metric.
        self._measured = reader.is_measured(np.arange(reader.num_rows)).any(axis=1)
        self.attributor = InRunAttributor(pl_module.model, optimizer=trainer.optimizers[0],
                                          config=self.settings.attributor)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Refresh probe gradients on schedule and arm the hooks for this step."""
        step = trainer.global_step
        if step % self.settings.every_n_steps:
            return
        if self._last_refresh < 0 or step - self._last_refresh >= self.settings.probe_refresh_steps:
            probes = {b: {k: v.to(pl_module.device) for k, v in pl_module.probe_batches[b].items()}
                      for b in self.behaviors}
            losses = self.attributor.refresh_probe_gradients(probes)
            self._last_refresh = step
            for behavior, loss in (losses or {}).items():
                pl_module.log(f"attribution/probe_loss/{behavior}", float(loss), on_step=True)
        self._batch = batch
        per_token = self.settings.document_scores == "segments" and "token_rows" in batch
        self.attributor.begin(batch, per_token=per_token)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Read the scores of the batch just backpropagated, gather them, write the store."""
        if self.attributor is None or not self.attributor.armed:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        clip = trainer.gradient_clip_val
        if trainer.gradient_clip_algorithm not in (None, "norm"):
            clip = None  # value clipping has no single coefficient: scores leave it out
        scale = clip_coefficient(pl_module.parameters(), clip)
        scores = self.attributor.finish(lr=lr, grad_scale=scale).detach().double().cpu().numpy()
        # The hooks see the gradient of this rank's own loss; DDP then averages the parameter
        # gradients over the ranks, so each example moves the weights by 1/world_size of it.
        scores = scores / max(1, trainer.world_size)
        batch = self._batch
        token_rows = batch["token_rows"].cpu().numpy()
        if scores.ndim == 3:
            rows, per_row = segment_scores(scores, token_rows)
            scores = scores.sum(axis=1)
        else:
            rows, per_row = row_scores(scores, token_rows, batch["labels"].cpu().numpy())
        gathered = [(rows, per_row)]
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (rows, per_row))
        if self.store is not None:
            all_rows = np.concatenate([g[0] for g in gathered])
            all_scores = np.concatenate([g[1] for g in gathered])
            self.store.record_attribution(all_rows, all_scores)
            self.measured_rows += len(all_rows)
        pl_module.log("attribution/mean_score", float(np.mean(scores)) if scores.size else 0.0,
                      on_step=True)
        if self._measured is not None and self._measured.size:
            for rows_of_rank, _ in gathered:
                self._measured[rows_of_rank] = True
            pl_module.log("attribution/measured_fraction", float(self._measured.mean()), on_step=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Disarm if the backward was skipped; refresh estimates on schedule."""
        if self.attributor is not None and self.attributor.armed:
            self.attributor.cancel()
        every = self.settings.estimate_every_n_steps
        if self.store is not None and every and trainer.global_step % every == 0:
            self._refresh_estimates()

    def _refresh_estimates(self) -> None:
        if self.measured_rows:  # nothing to estimate from yet
            self.store.refresh_estimates(k=self.settings.estimate_neighbors,
                                         space=self.settings.estimate_space)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final estimates, then release the hooks and the store's writer lock (so the next
        run, or an analysis in this process, can write it)."""
        if self.store is not None and self.settings.estimate_every_n_steps:
            self._refresh_estimates()
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.attributor is not None:
            self.attributor.close()
        self._close_store()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Give up the store's writer lock also when training stopped with an error."""
        self._close_store()

    def _close_store(self) -> None:
        # The writer lock is a flock on the store: held on, it would refuse the next run in the
        # same process (the demo trains two policies on one store).
        if self.store is not None:
            self.store.close()
            self.store = None
