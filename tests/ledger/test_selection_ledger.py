"""The selection ledger and the return queue: every candidate row accounted for, bounded returns."""

from __future__ import annotations

import json

import numpy as np
import torch

from curriculum.ledger.selection import (
    SelectionEvent,
    SelectionLedger,
    check_selection,
    read_selection,
)
from loaders.candidates import CandidateStream


def _batch(step: int, rows: int = 4, tokens: int = 6) -> dict[str, torch.Tensor]:
    # Row r of step s holds documents 100*s + 2r and 100*s + 2r + 1 (3 tokens each).
    token_rows = torch.tensor([[100 * step + 2 * r] * 3 + [100 * step + 2 * r + 1] * 3
                               for r in range(rows)])
    return {"input_ids": torch.arange(rows * tokens).view(rows, tokens) + step,
            "labels": torch.ones(rows, tokens, dtype=torch.long),
            "loss_weight": torch.ones(rows, tokens), "token_rows": token_rows,
            "rows": torch.stack([token_rows[:, 0], token_rows[:, -1]], dim=1)}


def _run(tmp_path, steps: int, stream: CandidateStream | None = None,
         ledger: SelectionLedger | None = None, start: int = 0) -> tuple[CandidateStream, list]:
    stream = stream or CandidateStream()
    ledger = ledger or SelectionLedger(tmp_path, 0)
    sizes = []
    for step in range(start, steps):
        batch = _batch(step)
        candidates = stream.compose(batch, step)
        sizes.append(len(candidates.sequences))
        # Keep the two rows with the largest first token: returned rows sort first and lose.
        chosen = np.sort(np.argsort(-batch["input_ids"][:, 0].numpy(), kind="stable")[:2])
        settled = stream.settle(candidates, batch, chosen, step, stage=0, unselected="return",
                                max_returns=1)
        ledger.append(settled.records)
    ledger.write_pending(steps, stream.pending_sequences())
    return stream, sizes


def test_every_candidate_row_is_selected_rejected_or_pending(tmp_path) -> None:
    stream, sizes = _run(tmp_path, 5)
    assert sizes == [4, 6, 6, 6, 6]  # 4 loader rows + the 2 returned the step before
    result = check_selection(tmp_path)
    assert result.ok, result.problems
    assert result.sequences == 20 and result.selected == 10
    assert result.pending == len(stream.queue) == 2
    assert result.selected + result.rejected + result.pending == result.sequences
    records = read_selection(tmp_path)[0]
    first_document = records["row"] % 2 == 0  # one record per document: count one per row
    returned = (records["event"] == SelectionEvent.RETURN) & first_document
    assert np.bincount(records["sequence"][returned]).max() == 1  # the bound holds
    assert result.returns == int(returned.sum())
    assert result.tokens_offered == 20 * 6 and result.tokens_selected == 10 * 6


def test_a_lost_row_fails_the_check(tmp_path) -> None:
    _run(tmp_path, 3)
    path = tmp_path / "ledger" / "selection-rank-00000.bin"
    records = read_selection(tmp_path)[0]
    # Drop the terminal records of one selected sequence: it was offered and never settled.
    victim = records["sequence"][records["event"] == SelectionEvent.SELECT][0]
    keep = ~((records["sequence"] == victim) & (records["event"] == SelectionEvent.SELECT))
    path.write_bytes(records[keep].tobytes())
    result = check_selection(tmp_path)
    assert not result.ok
    assert any("the saved return queue describes the first" in p for p in result.problems)
    # Even with a queue file that matches the length, the unsettled sequence is caught.
    pending = tmp_path / "ledger" / "selection-pending-rank-00000.json"
    saved = json.loads(pending.read_text())
    pending.write_text(json.dumps({**saved, "records": int(keep.sum())}))
    result = check_selection(tmp_path)
    assert not result.ok
    assert any("differ from the saved queue" in p for p in result.problems)


def test_a_second_fate_fails_the_check(tmp_path) -> None:
    _run(tmp_path, 3)
    path = tmp_path / "ledger" / "selection-rank-00000.bin"
    records = read_selection(tmp_path)[0]
    twice = records[records["event"] == SelectionEvent.SELECT][:1].copy()
    path.write_bytes(np.concatenate([records, twice]).tobytes())
    result = check_selection(tmp_path)
    assert not result.ok
    assert any("do not read OFFER (RETURN)* (SELECT | REJECT)" in p for p in result.problems)


def test_queue_state_round_trips_and_resume_truncates(tmp_path) -> None:
    whole, _ = _run(tmp_path / "whole", 6)
    stream, _ = _run(tmp_path / "cut", 3)
    saved = stream.state_dict()
    ledger = SelectionLedger(tmp_path / "cut", 0)
    kept = ledger.num_records
    _run(tmp_path / "cut", 5, stream, ledger, start=3)  # runs on past the "checkpoint"
    ledger.truncate(kept)
    restored = CandidateStream()
    restored.load_state_dict(saved)
    _run(tmp_path / "cut", 6, restored, ledger, start=3)
    assert np.array_equal(read_selection(tmp_path / "whole")[0], read_selection(tmp_path / "cut")[0])
    assert restored.pending_sequences() == whole.pending_sequences()
    assert check_selection(tmp_path / "cut").ok
