"""The attribution callback inside a real fit: scores reach the store, the update is unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from support import tiny_config

from curriculum.store import StoreReader
from train.fit import run_fit


def test_attribution_writes_the_store_and_leaves_training_unchanged(corpus_with_store,
                                                                    tmp_path) -> None:
    corpus, store = corpus_with_store
    scored_store = tmp_path / "store"
    shutil.copytree(store, scored_store)
    common = ("trainer.max_steps=12", "trainer.checkpoint_every_n_steps=12",
              "data.stream.packing=pad", "data.num_workers=1")
    plain = run_fit(tiny_config(corpus, store, tmp_path / "plain", *common))
    scored = run_fit(tiny_config(
        corpus, scored_store, tmp_path / "scored", *common,
        "data.attribution={every_n_steps: 2, probe_refresh_steps: 4, estimate_every_n_steps: 6}"))
    weights = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for run in (plain, scored)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    reader = StoreReader(scored_store)
    rows = np.arange(reader.num_rows)
    measured = reader.is_measured(rows).any(axis=1)
    assert measured.sum() > 0
    assert np.isfinite(reader.attribution(rows[measured])).all()
    assert not StoreReader(store).is_measured(rows).any()  # the original store is untouched
