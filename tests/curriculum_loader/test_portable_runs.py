"""A run directory is portable: its recorded config resolves from any working directory, so
``resume``, ``sweep`` and ``fit --resume`` / ``--ckpt last`` work wherever they are started."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import yaml
from support import tiny_config

from curriculum.cli import COMMANDS, main
from train.fit import run_fit
from train.run_config import load_run_config


def _relative_run(corpus: Path, store: Path, start: Path, monkeypatch) -> Path:
    """A 4-step run started in ``start`` with every path given relative to it."""
    start.mkdir()
    monkeypatch.chdir(start)
    config = tiny_config(Path(os.path.relpath(corpus)), Path(os.path.relpath(store)),
                         Path("run"), "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2",
                         "data.num_workers=1")
    return (start / run_fit(config)).resolve()


def test_a_run_records_absolute_paths(corpus_with_store, tmp_path, monkeypatch) -> None:
    corpus, store = corpus_with_store
    run = _relative_run(corpus, store, tmp_path / "start", monkeypatch)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["run_dir"] == str(run)
    assert recorded["data"]["shards"] == str(corpus)
    assert recorded["data"]["probes"] == str(corpus / "probes")
    assert recorded["data"]["curriculum"]["store"] == str(store)


def test_resume_and_fit_resume_work_from_another_directory(corpus_with_store, tmp_path,
                                                           monkeypatch) -> None:
    corpus, store = corpus_with_store
    run = _relative_run(corpus, store, tmp_path / "start", monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["resume", "--from", str(run / "checkpoints" / "step-000002.ckpt"), "--data",
                 str(corpus), "--steps", "2", "--out", "branch"]) == 0
    assert (elsewhere / "branch" / "lineage.json").is_file()
    # Continue the run itself from its newest checkpoint, under its recorded config.
    assert main(["fit", "--resume", str(run), "--set", "trainer.max_steps=6"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    # ... and with a config and --ckpt last.
    assert main(["fit", "--config", str(run / "config.yaml"), "--ckpt", "last",
                 "--set", "trainer.max_steps=8"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8


def test_relative_paths_in_a_run_config_resolve_against_the_run(tmp_path, monkeypatch) -> None:
    run = tmp_path / "runs" / "one"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "run_dir": "somewhere/else", "data": {
            "shards": "../../corpus", "policy": None,  # a key older runs recorded
            "curriculum": {"policy": "values_first", "store": "../../store", "lag_steps": 8,
                           "state_path": "", "spool_dir": ""}}}))
    monkeypatch.chdir(tmp_path / "runs")
    config = load_run_config(run)
    assert config.run_dir == str(run.resolve())
    assert config.data.shards == str((tmp_path / "corpus").resolve())
    assert config.data.curriculum.store == str((tmp_path / "store").resolve())
    assert config.data.curriculum.policy == "values_first"  # a built-in stays a name


def test_every_listed_command_exists() -> None:
    missing = [n for n in COMMANDS if importlib.util.find_spec(f"curriculum.commands.{n}") is None]
    assert not missing, f"COMMANDS lists commands without a module: {missing}"
