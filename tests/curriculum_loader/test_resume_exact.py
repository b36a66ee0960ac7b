"""Exact resume: a run interrupted mid-epoch (documents in the window and the spool) and resumed
consumes the same rows in the same order as an uninterrupted one, and writes the same ledger."""

from __future__ import annotations

import numpy as np
import torch
from support import BatchRecorder, tiny_config

from curriculum.ledger import check_ledger, load_ledger
from loaders.checkpointable import from_checkpointable
from train.fit import run_fit


def test_resume_mid_epoch_is_exact_with_two_workers(corpus_with_store, tmp_path) -> None:
    corpus, store = corpus_with_store
    whole = BatchRecorder()
    run_fit(tiny_config(corpus, store, tmp_path / "whole", "trainer.max_steps=36"), callbacks=[whole])

    first = BatchRecorder()
    # Snapshots every step, so the checkpoint's loader state can be inspected below.
    run_fit(tiny_config(corpus, store, tmp_path / "cut", "trainer.max_steps=20",
                        "trainer.checkpoint_every_n_steps=15", "data.snapshot_every_n_steps=1"),
            callbacks=[first])
    checkpoint = tmp_path / "cut" / "checkpoints" / "step-000015.ckpt"
    # The interruption must fall where it is hard: documents waiting in the window and spool.
    saved = torch.load(checkpoint, weights_only=True)
    loader = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    workers = loader["_snapshot"]["_worker_snapshots"].values()
    states = [from_checkpointable(w["dataset_state"]) for w in workers]
    assert sum(len(s["window"]["rows"]) for s in states) > 0
    assert sum(len(s["spool"]["pending"]["row"]) for s in states) > 0

    second = BatchRecorder()
    run_fit(tiny_config(corpus, store, tmp_path / "cut", "trainer.max_steps=36"),
            ckpt_path=str(checkpoint), callbacks=[second])
    resumed = {**{s: d for s, d in first.digests.items() if s < 15}, **second.digests}
    assert sorted(resumed) == sorted(whole.digests) == list(range(36))
    assert resumed == whole.digests

    assert np.array_equal(load_ledger(tmp_path / "whole").records,
                          load_ledger(tmp_path / "cut").records)
    for run in ("whole", "cut"):
        assert check_ledger(tmp_path / run).ok
