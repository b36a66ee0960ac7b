"""Runs lacking parts still render and say what is missing; a directory that is not a run is
refused with one line (exit 2)."""

from __future__ import annotations

import json
import shutil

import pytest

from curriculum.cli import main
from curriculum.report import build_report
from train.sweep import SweepRow, write_table


def test_a_run_without_policy_ledger_or_attribution_renders(report_runs, tmp_path) -> None:
    result = build_report([report_runs.plain], out=tmp_path / "report")
    page = result.index.read_text()
    for said in ("no policy.yaml", "no ledger", "no attribution", "no labels given"):
        assert said in page, said
    assert result.figures["probe_loss"].image is not None
    assert result.figures["stream_mix"].image is None
    assert (result.out_dir / "probe_loss.png").is_file()


def test_a_run_without_attribution_says_so(report_runs, tmp_path) -> None:
    result = build_report([report_runs.policy_only], out=tmp_path / "report")
    notes = result.runs[0].notes
    assert "no attribution" in notes["attribution"] and "data.attribution off" in notes["attribution"]
    assert result.figures["attribution_scores"].image is None
    assert result.figures["stream_mix"].image is not None
    assert "no top documents" in result.index.read_text()


def test_a_branch_shows_its_lineage(report_runs, tmp_path) -> None:
    branch = tmp_path / "branch"
    shutil.copytree(report_runs.plain, branch)
    lineage = {"parent_run": str(report_runs.attributed), "branch_step": 12,
               "data": "synthetic:aligned", "lr_schedule": "continue", "with_optimizer": True}
    (branch / "lineage.json").write_text(json.dumps(lineage))
    page = build_report([branch], out=tmp_path / "report").index.read_text()
    assert "Lineage of branch" in page and "synthetic:aligned" in page
    assert str(report_runs.attributed) in page


def test_not_a_run_directory_is_one_line_and_exit_2(tmp_path, capsys: pytest.CaptureFixture
                                                      ) -> None:
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "absent"):
        assert main(["report", str(path), "--quiet"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"curriculum report: error: {path}")
    assert "not a run directory" in str(lines) or "no such directory" in str(lines)


def test_cli_with_a_sweep_directory_and_a_run(report_runs, tmp_path,
                                              capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_table([SweepRow(8, "values", 16, 5.1, 4.2, 4.4)], sweep / "sweep.csv")
    out = tmp_path / "report"
    assert main(["report", str(report_runs.plain), str(sweep), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {(out / 'index.html').resolve()}"
    page = (out / "index.html").read_text()
    assert "Sweep 1" in page and "4.2" in page
