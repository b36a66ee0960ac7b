"""Early checkpoints: the schedule, full checkpoints with loader state, sidecars and the index."""

from __future__ import annotations

import json

import pytest
import torch
from branch_support import BATCH_SIZE, SEQ_LEN

from curriculum.cli import main
from train.branch import load_checkpoint, parent_loader_positions
from train.early_checkpoints import (
    INDEX_NAME,
    EarlyCheckpointConfig,
    early_checkpoint_dir,
    list_early_checkpoints,
)
from train.fit import read_probe_losses


def test_default_schedule_is_dense_early_then_sparse() -> None:
    config = EarlyCheckpointConfig()
    assert config.steps_until(3000) == [*range(50, 501, 50), 1000, 2000, 3000]
    assert not config.is_checkpoint_step(0)
    assert EarlyCheckpointConfig(10, 20, 0).steps_until(100) == [10, 20]
    with pytest.raises(ValueError, match="dense_every_n_steps"):
        EarlyCheckpointConfig(dense_every_n_steps=0)


def test_sidecars_hold_step_tokens_stage_and_probe_losses(parent_run) -> None:
    checkpoints = list_early_checkpoints(parent_run)
    assert [c.step for c in checkpoints] == [4, 8, 16]
    logged = read_probe_losses(parent_run)
    for checkpoint in checkpoints:
        assert checkpoint.tokens_seen == checkpoint.step * BATCH_SIZE * SEQ_LEN
        assert checkpoint.stage is None  # a plain fit has no curriculum stages
        assert set(checkpoint.probe_losses) == set(logged)
        for behavior, loss in checkpoint.probe_losses.items():
            # Same weights as the probe-loss callback saw at that step.
            assert loss == pytest.approx(dict(logged[behavior])[checkpoint.step], abs=1e-6)
    index = json.loads((early_checkpoint_dir(parent_run) / INDEX_NAME).read_text())
    assert [entry["step"] for entry in index] == [4, 8, 16]


def test_checkpoint_holds_loader_state_and_the_weights_of_that_step(parent_run) -> None:
    early = {c.step: c for c in list_early_checkpoints(parent_run)}
    checkpoint, how = load_checkpoint(early[8].path)
    assert how == "weights_only"
    assert checkpoint["global_step"] == 8
    # Lightning stores the StatefulDataLoader's state (each worker's stream position) by itself.
    positions = parent_loader_positions(checkpoint)
    assert set(positions) == {0}
    assert {"epoch", "cursor", "ordinal"} <= set(positions[0])
    regular, _ = load_checkpoint(parent_run / "checkpoints" / "step-000008.ckpt")
    assert checkpoint["state_dict"].keys() == regular["state_dict"].keys()
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(tensor, regular["state_dict"][name]), name


def test_resume_list_prints_the_checkpoints(parent_run, capsys) -> None:
    assert main(["resume", "--list", str(parent_run)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["step", "tokens_seen", "stage"]
    assert [line.split()[0] for line in lines[1:]] == ["4", "8", "16"]
