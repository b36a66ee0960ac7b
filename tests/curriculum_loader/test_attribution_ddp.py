"""Attribution under DDP: two gloo processes write the same store contents as one process that
trains on the same global batches.

Why the single-process run is the same training: under DDP rank r backpropagates its own batch
loss ``L_r = sum_{i in r} l_i`` with ``l_i = sum_t w_it CE_it / N_r`` (``N_r``: labelled tokens of
rank r's batch) and the gradients are averaged, so the update follows ``(L_0 + L_1) / 2``. One
process given the concatenated batch (rank 0's rows, then rank 1's) minimises
``sum_i sum_t w'_it CE_it / (N_0 + N_1)``; with ``w'_it = w_it (N_0 + N_1) / (2 N_r)`` that is the
same objective term for term, so both runs follow the same weights, and example i's term (hence
its gradient, hence its In-Run Data Shapley score) is the same in both: rank r's hooks see
``grad l_i`` of its own loss, and the callback's ``1 / world_size`` is DDP's averaging. With
``pad`` packing and the 60-character documents of ``uneven_corpus`` a row is one whole document,
so every document's score is exact. Rank 0, the single node's store writer, must record rank
1's rows too: only the gather brings them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from support import tiny_config

from curriculum.store import StoreReader
from train.fit import run_fit

STEPS = 4
COMMON = (f"trainer.max_steps={STEPS}", f"trainer.checkpoint_every_n_steps={STEPS}",
          "data.stream.packing=pad", "data.num_workers=1",
          "trainer.probe_every_n_steps=1000", "data.probe_docs=4", "optim.warmup_steps=2",
          # float64: DDP's mean of rank gradients and one process's sum round differently, and
          # Adam's preconditioner amplifies that noise in directions with tiny second moments
          # (an attention key bias has a zero gradient up to rounding), in float32 up to 1% of a
          # score; in float64 the two runs agree to the store's float32 storage.
          "trainer.precision=64-true")


def attribution(store: Path) -> str:
    return (f"data.attribution={{store: {store}, every_n_steps: 1, probe_refresh_steps: 2, "
            "estimate_every_n_steps: 0}")


class BatchSaver(L.Callback):
    """Saves every batch this rank trains on (each rank is its own process)."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.save({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)},
                   self.out / f"batch-rank{trainer.global_rank}-step{trainer.global_step}.pt")


def global_batch(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The ranks' batches concatenated, ``loss_weight`` rescaled to DDP's mean of rank means."""
    labelled = [float((part["labels"] != -100).sum().clamp_min(1)) for part in parts]
    total = sum(labelled)
    batch = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    batch["loss_weight"] = torch.cat([
        part["loss_weight"] * (total / (len(parts) * n)) for part, n in zip(parts, labelled, strict=True)])
    return batch


class ListDataModule(L.LightningDataModule):
    """Serves a fixed list of batches, in order."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.batches, batch_size=None, shuffle=False)


def test_two_gloo_ranks_write_what_one_process_writes(uneven_corpus, tmp_path) -> None:
    corpus, store = uneven_corpus
    ddp_store, single_store = tmp_path / "ddp-store", tmp_path / "single-store"
    shutil.copytree(store, ddp_store)
    shutil.copytree(store, single_store)
    saved = tmp_path / "batches"
    saved.mkdir()

    # (a) Two real gloo processes with the attribution callback.
    ddp = run_fit(tiny_config(corpus, store, tmp_path / "ddp", *COMMON, attribution(ddp_store),
                              "trainer.devices=2", "trainer.strategy=ddp_spawn"),
                  callbacks=[BatchSaver(saved)])

    # (b) One process over the same global batches, from the same initial weights (same seed).
    batches = [global_batch([torch.load(saved / f"batch-rank{rank}-step{step}.pt", weights_only=True)
                             for rank in (0, 1)]) for step in range(STEPS)]
    single = run_fit(tiny_config(corpus, store, tmp_path / "single", *COMMON,
                                 attribution(single_store)),
                     datamodule=ListDataModule(batches))

    # Same training: the weight trajectories agree.
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for run in (ddp, single)]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], rtol=1e-10, atol=1e-12)

    # (c) Same store contents: measured cells, counts and sums.
    readers = [StoreReader(path) for path in (ddp_store, single_store)]
    rows = np.arange(readers[0].num_rows)

    def rows_of(parts: list[dict[str, torch.Tensor]]) -> set[int]:
        ids = torch.cat([part["token_rows"].flatten() for part in parts]).numpy()
        return set(ids[ids >= 0].tolist())

    per_rank = [rows_of([torch.load(saved / f"batch-rank{rank}-step{step}.pt", weights_only=True)
                         for step in range(STEPS)]) for rank in (0, 1)]
    assert per_rank[1] - per_rank[0]  # rows only rank 1 trained on: only a gather records them
    ddp_measured, single_measured = (r.is_measured(rows) for r in readers)
    np.testing.assert_array_equal(ddp_measured, single_measured)
    assert set(np.flatnonzero(ddp_measured.any(axis=1)).tolist()) == per_rank[0] | per_rank[1]
    counts = [r.attribution_counts(rows) for r in readers]
    np.testing.assert_array_equal(counts[0], counts[1])
    sums = [r.attribution(rows).astype(np.float64) * c for r, c in zip(readers, counts, strict=True)]
    scale = np.abs(sums[1]).max()
    assert scale > 0
    np.testing.assert_allclose(sums[0], sums[1], rtol=1e-5, atol=1e-9 * scale)
