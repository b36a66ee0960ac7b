"""A tiny end-to-end sweep through the command line: branches, table and plot."""

from __future__ import annotations

import csv

import pytest
from branch_support import hash_tree

from curriculum.cli import main
from train.branch import read_lineage
from train.fit import read_probe_losses
from train.sweep import COLUMNS


def test_sweep_branches_trains_and_writes_table_and_plot(parent_run, tmp_path, capsys) -> None:
    before = hash_tree(parent_run)
    out = tmp_path / "sweep"
    code = main(["sweep", "--run", str(parent_run), "--branch-at", "4,8", "--data", "synth:aligned",
                 "--synth-docs", "120", "--steps", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "branch at step 8 done" in printed
    with (out / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    parent = {b: dict(points) for b, points in read_probe_losses(parent_run).items()}
    assert {(int(r["branch_step"]), r["behavior"]) for r in rows} == {
        (s, b) for s in (4, 8) for b in parent}
    for row in rows:
        step, end = int(row["branch_step"]), int(row["end_step"])
        assert end == step + 4
        # The parent logged probe losses every 4 steps, so the reference exists at 8 and 12.
        assert float(row["unbranched_probe_loss"]) == pytest.approx(parent[row["behavior"]][end],
                                                                    abs=1e-5)
        assert float(row["probe_loss_at_branch"]) == pytest.approx(parent[row["behavior"]][step],
                                                                   abs=1e-5)
        assert float(row["difference"]) == pytest.approx(
            float(row["branch_probe_loss"]) - float(row["unbranched_probe_loss"]), abs=1e-5)
        lineage = read_lineage(out / f"branch-{step:06d}")
        assert lineage["branch_step"] == step and lineage["data"].startswith(str(out / "data"))
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sweep.png").stat().st_size > 10_000
    assert hash_tree(parent_run) == before


def test_sweep_names_the_available_checkpoints_on_a_bad_step(parent_run, tmp_path, capsys) -> None:
    code = main(["sweep", "--run", str(parent_run), "--branch-at", "5", "--data", "synth:aligned",
                 "--steps", "2", "--out", str(tmp_path / "bad")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "no checkpoint at step 5 (available: 4, 8, 16)" in error
