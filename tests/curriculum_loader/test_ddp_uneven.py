"""DDP with uneven shards: two real gloo processes finish with equal step counts, and the ledger
accounts for every row."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from support import tiny_config

from curriculum.ledger import check_ledger, load_ledger
from train.fit import run_fit


class StepCounter(L.Callback):
    """Writes how many batches this rank trained on (each rank is its own process)."""

    def __init__(self, out: Path) -> None:
        self.out, self.batches = out, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer, pl_module) -> None:
        (self.out / f"steps-rank{trainer.global_rank}.txt").write_text(
            f"{self.batches} {trainer.global_step}")


def test_two_gloo_ranks_with_uneven_shards_take_equal_steps(uneven_corpus, tmp_path) -> None:
    corpus, store = uneven_corpus
    config = tiny_config(corpus, store, tmp_path / "ddp", "trainer.max_steps=30",
                         "trainer.devices=2", "trainer.strategy=ddp_spawn", "data.num_workers=1",
                         "data.stream.seq_len=32", "trainer.probe_every_n_steps=1000",
                         "data.probe_docs=4")
    run_fit(config, callbacks=[StepCounter(tmp_path)])
    # Both ranks trained 30 batches, though one reads 80 rows and the other 10.
    for rank in (0, 1):
        assert (tmp_path / f"steps-rank{rank}.txt").read_text() == "30 30"
    records = load_ledger(tmp_path / "ddp").records
    assert set(np.unique(records["rank"]).tolist()) == {0, 1}
    # Within an epoch the ranks read disjoint rows (shard order is reshuffled each epoch).
    for epoch in np.unique(records["epoch"]):
        rows = [set(records["row"][(records["rank"] == rank) & (records["epoch"] == epoch)
                                   & (records["row"] >= 0)].tolist()) for rank in (0, 1)]
        assert not rows[0] & rows[1]
    report = check_ledger(tmp_path / "ddp")
    assert report.ok, report.problems
