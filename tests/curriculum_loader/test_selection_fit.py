"""In-batch selection inside a real Lightning fit: ledger accounting and exact resume."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from support import BatchRecorder, tiny_config

from curriculum.ledger import check_ledger
from curriculum.ledger.selection import SelectionEvent, check_selection, read_selection
from train.fit import run_fit

SELECT_POLICY = "tests/fixtures/short_values_first_select.yaml"


def _config(corpus, store, run_dir, *extra):
    return tiny_config(corpus, store, run_dir, "data.selection={probe_refresh_steps: 3}",
                       *extra, policy=SELECT_POLICY)


def test_selection_fit_accounts_for_every_row_and_resumes_exactly(corpus_with_store,
                                                                  tmp_path) -> None:
    corpus, shared_store = corpus_with_store
    store = tmp_path / "store"  # this test writes attribution scores: keep the shared one clean
    shutil.copytree(shared_store, store)
    whole = BatchRecorder()
    run_fit(_config(corpus, store, tmp_path / "whole", "trainer.max_steps=12",
                    "trainer.checkpoint_every_n_steps=6"), callbacks=[whole])
    records = read_selection(tmp_path / "whole")[0]
    steps = np.unique(records["step"])
    assert steps.tolist() == list(range(12))
    per_step = [np.unique(records["sequence"][(records["step"] == s) &
                                               (records["event"] == SelectionEvent.SELECT)]).size
                for s in range(12)]
    assert per_step == [4] * 12  # batch size 4 kept out of 8 (+ returned) candidates
    events = set(records["event"].tolist())
    assert {SelectionEvent.RETURN, SelectionEvent.REJECT} <= events
    result = check_selection(tmp_path / "whole")
    assert result is not None and result.ok, result.problems
    assert result.selected == 48 and result.rejected > 0
    assert check_ledger(tmp_path / "whole").ok
    from curriculum.store import StoreReader

    measured = StoreReader(store).is_measured(np.unique(records["row"]))
    assert measured.all()  # every candidate's score of the step went to the store
    # Candidate batches: 8 loader rows (2 x the batch size), plus the rows returned just before.
    assert set(whole.sizes.values()) == {8}
    candidates = [np.unique(records["sequence"][records["step"] == s]).size for s in range(12)]
    assert candidates[0] == 8 and max(candidates) > 8

    first = BatchRecorder()
    run_fit(_config(corpus, store, tmp_path / "cut", "trainer.max_steps=9",
                    "trainer.checkpoint_every_n_steps=6"), callbacks=[first])
    checkpoint = tmp_path / "cut" / "checkpoints" / "step-000006.ckpt"
    second = BatchRecorder()
    run_fit(_config(corpus, store, tmp_path / "cut", "trainer.max_steps=12"),
            ckpt_path=str(checkpoint), callbacks=[second])
    resumed = {**{s: d for s, d in first.digests.items() if s < 6}, **second.digests}
    assert resumed == whole.digests
    assert np.array_equal(read_selection(tmp_path / "cut")[0], records)
    assert check_selection(tmp_path / "cut").ok
    # The same weights after step 12: the update used the same rows, recombined the same way.
    a = torch.load(tmp_path / "whole" / "checkpoints" / "step-000012.ckpt", weights_only=True)
    saved = [torch.load(path, weights_only=True)
             for path in (tmp_path / "cut" / "checkpoints").glob("*.ckpt")]
    (b,) = [c for c in saved if c["global_step"] == 12]
    for name, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][name]), name
