"""``curriculum ledger RUN --check | --summary``: exit codes and what it prints.

The command module is driven through its own parser, as ``curriculum.cli`` builds it: the full
``main`` imports every command (Lightning included), which would dominate these tests' time.
``main`` turns the ValueErrors checked here into one line and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from ledger_support import simulate, write_run

from curriculum.commands import ledger as command
from curriculum.ledger import Fate, LedgerError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="curriculum ledger")
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("good")
    write_run(run_dir, simulate(num_rows=200, world_size=2, num_workers=2, num_epochs=2, seed=1))
    return run_dir


def test_check_passes_with_one_ok_line(good_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(good_run), "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ok: ") and "epochs 0-1 complete" in lines[0]


def test_check_fails_listing_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = simulate(num_rows=200, world_size=2, num_workers=2, num_epochs=2, seed=1)
    rank, b, _, event = run.find(Fate.EMIT, epoch=0)
    run.batches[rank][b].events.append(event)  # emitted twice
    write_run(tmp_path, run)
    assert main([str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAILED: 1 problem(s)")
    assert out[1].startswith(f"  epoch 0 row {event[1]}: EMIT at step")


def test_rows_option_overrides_meta(good_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(good_run), "--check", "--rows", "203", "--max-problems", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAILED: 6 problem(s)")  # rows 200-202 in each of the two epochs
    assert out[1:] == ["  epoch 0 row 200: no fate recorded (missing) in a complete epoch",
                       "  epoch 0 row 201: no fate recorded (missing) in a complete epoch",
                       "  ... and 4 more"]


def test_summary_prints_counts_and_reasons(good_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("key,row,behavior\n" + "".join(f"k{r},{r},{'values' if r < 100 else 'awareness'}\n"
                                                     for r in range(200)))
    assert main([str(good_run), "--summary", "--labels", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "events by stage and behavior" in out and "values" in out and "awareness" in out
    assert "not UTF-8" in out and "filter: toxicity>=0.9" in out


@pytest.mark.parametrize("argv, message", [
    (["--check"], "meta.json: not found"),
    (["--summary"], "no ledger records"),
    ([], "say what to do: --check, --summary, or both"),
    (["--check", "--rows", "-1"], "--rows must be >= 0"),
])
def test_bad_input_is_one_line_value_error(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(LedgerError) as error:
        main([str(tmp_path / "no-run"), *argv])
    assert isinstance(error.value, ValueError)  # curriculum.cli prints it as one line, exit 2
    assert message in str(error.value) and "\n" not in str(error.value)
