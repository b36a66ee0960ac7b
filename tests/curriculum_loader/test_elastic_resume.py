"""Elastic resume: a checkpoint taken on one layout (ranks x DataLoader workers), with documents
in the priority window and the defer spool, resumed on another; the ledger check proves that every
row of the epoch spanning the change was consumed exactly once. Ranks are real gloo processes."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from support import tiny_config

from curriculum.ledger import check_ledger, load_ledger, read_ledger_meta
from loaders.elastic import RECORD_KEY, reader_states
from train.fit import run_fit

CUT = 10
COMMON = ("data.stream.seq_len=32", "data.stream.batch_size=8", "trainer.probe_every_n_steps=1000",
          "data.probe_docs=4", "data.curriculum.window_size_docs=4")


def _fit(corpus: Path, store: Path, run: Path, steps: int, devices: int, workers: int,
         ckpt: Path | None = None) -> None:
    # Snapshots every 4 steps: the checkpoint at step 10 is replayed from the one at step 8.
    extra = ["data.snapshot_every_n_steps=4", f"trainer.max_steps={steps}",
             f"trainer.devices={devices}", f"data.num_workers={workers}",
             f"trainer.checkpoint_every_n_steps={CUT}"]
    if devices > 1:
        extra.append("trainer.strategy=ddp_spawn")
    run_fit(tiny_config(corpus, store, run, *COMMON, *extra),
            ckpt_path=str(ckpt) if ckpt else None)


def _checkpoint_holds_window_and_spool(checkpoint: Path, ranks: int) -> None:
    record = torch.load(checkpoint, weights_only=True)[RECORD_KEY]
    assert record["version"] == 1 and record["layout"]["world_size"] == ranks
    assert len(record["ranks"]) == ranks
    states = [s for rank_state in record["ranks"] for s, _ in reader_states(rank_state)]
    # Snapshot states (before the batches replayed since them) already hold both.
    assert sum(len(s.get("window", {}).get("rows", [])) for s in states) > 0
    assert sum(len(s.get("spool", {}).get("pending", {}).get("row", [])) for s in states) > 0


def _elastic(uneven_corpus, tmp_path: Path, before: tuple[int, int], after: tuple[int, int],
             steps: int) -> None:
    corpus, store = uneven_corpus
    run = tmp_path / "run"
    _fit(corpus, store, run, CUT, *before)
    checkpoint = run / "checkpoints" / f"step-{CUT:06d}.ckpt"
    _checkpoint_holds_window_and_spool(checkpoint, before[0])
    _fit(corpus, store, run, steps, *after, ckpt=checkpoint)

    meta = read_ledger_meta(run)
    assert meta.segments() == [(0, before[0], before[1]), (CUT, after[0], after[1])]
    report = check_ledger(run)
    assert report.ok, report.problems
    assert 0 in report.complete_epochs, report.summary_line()
    records = load_ledger(run).records
    assert (records["step"] < CUT).any() and (records["step"] >= CUT).any()
    assert int(records["step"].max()) == steps - 1


def test_two_ranks_resume_on_one(uneven_corpus, tmp_path) -> None:
    _elastic(uneven_corpus, tmp_path, (2, 1), (1, 1), 45)


def test_one_rank_resumes_on_two(uneven_corpus, tmp_path) -> None:
    _elastic(uneven_corpus, tmp_path, (1, 1), (2, 1), 35)


def test_two_workers_resume_on_one_and_say_so(uneven_corpus, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="curriculum.elastic"):
        _elastic(uneven_corpus, tmp_path, (1, 2), (1, 1), 45)
    lines = [r.getMessage() for r in caplog.records if r.name == "curriculum.elastic"]
    assert len(lines) == 1 and "re-partitioned" in lines[0]
    assert "1 rank(s) x 2 worker(s), resuming on 1 rank(s) x 1 worker(s)" in lines[0]
