"""A branch starts from exactly the parent's state, records its lineage, leaves the parent alone."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from branch_support import hash_tree

from curriculum.cli import main
from train.branch import (
    BranchConfig,
    BranchError,
    load_checkpoint,
    parse_mix,
    read_lineage,
    run_branch,
    sha256_file,
)
from train.early_checkpoints import list_early_checkpoints
from train.fit import read_probe_losses

BRANCH_STEP, BRANCH_STEPS = 8, 4


class CaptureStart(L.Callback):
    """Copies the module's weights, the optimizer state and learning rates before the first step."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        optimizer = trainer.optimizers[0]
        self.optimizer = {k: {n: t.clone() if torch.is_tensor(t) else t for n, t in v.items()}
                          for k, v in optimizer.state_dict()["state"].items()}
        self.lrs = [group["lr"] for group in optimizer.param_groups]


@pytest.fixture(scope="module")
def branched(parent_run, aligned_corpus, tmp_path_factory):
    """A 4-step branch at step 8 onto the aligned corpus, with the parent hashed before/after."""
    checkpoint = Path(next(c.path for c in list_early_checkpoints(parent_run)
                           if c.step == BRANCH_STEP))
    before = hash_tree(parent_run)
    capture = CaptureStart()
    run_dir = run_branch(BranchConfig(str(checkpoint), str(aligned_corpus.out_dir),
                                      steps=BRANCH_STEPS,
                                      run_dir=str(tmp_path_factory.mktemp("b") / "branch")),
                         callbacks=[capture])
    return {"checkpoint": checkpoint, "run_dir": run_dir, "capture": capture,
            "before": before, "after": hash_tree(parent_run)}


def test_branch_starts_from_the_parent_weights_tensor_by_tensor(branched) -> None:
    parent, _ = load_checkpoint(branched["checkpoint"])
    weights = branched["capture"].weights
    assert weights.keys() == parent["state_dict"].keys()
    for name, tensor in parent["state_dict"].items():
        assert torch.equal(weights[name], tensor), name
    # ... and then trains away from them.
    final, _ = load_checkpoint(branched["run_dir"] / "checkpoints" / "last.ckpt")
    assert not all(torch.equal(final["state_dict"][k], v) for k, v in parent["state_dict"].items())


def test_branch_restores_optimizer_state_and_continues_the_schedule(branched) -> None:
    parent, _ = load_checkpoint(branched["checkpoint"])
    captured = branched["capture"]
    for index, state in parent["optimizer_states"][0]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(captured.optimizer[index][name], state[name]), (index, name)
    # The first branch step uses the learning rate the parent's step 9 would have used.
    assert captured.lrs == pytest.approx(parent["lr_schedulers"][0]["_last_lr"])
    final, _ = load_checkpoint(branched["run_dir"] / "checkpoints" / "last.ckpt")
    assert final["lr_schedulers"][0]["last_epoch"] == BRANCH_STEP + BRANCH_STEPS


def test_branch_does_not_modify_the_parent_run(branched) -> None:
    assert branched["before"] == branched["after"]


def test_lineage_records_parent_checkpoint_and_branch_point(branched, parent_run) -> None:
    lineage = read_lineage(branched["run_dir"])
    assert lineage["parent_run"] == str(parent_run.resolve())
    assert lineage["parent_checkpoint"] == str(branched["checkpoint"].resolve())
    assert lineage["parent_checkpoint_sha256"] == sha256_file(branched["checkpoint"])
    assert lineage["branch_step"] == BRANCH_STEP
    assert lineage["branch_tokens_seen"] == BRANCH_STEP * 4 * 32
    assert (lineage["lr_schedule"], lineage["with_optimizer"], lineage["mix"]) == ("continue", True, None)
    # The branch's step-0 probe losses are the parent's at the branch point (same probe sets).
    parent_losses = read_probe_losses(parent_run)
    for behavior, points in read_probe_losses(branched["run_dir"]).items():
        assert points[0] == (0, pytest.approx(dict(parent_losses[behavior])[BRANCH_STEP], abs=1e-6))
        assert points[-1][0] == BRANCH_STEPS


def test_resume_command_mixes_restarts_warmup_and_drops_optimizer(parent_run, aligned_corpus,
                                                                   tmp_path, capsys) -> None:
    before = hash_tree(parent_run)
    out = tmp_path / "resumed"
    code = main(["resume", "--from", str(parent_run), "--step", "16", "--data",
                 str(aligned_corpus.out_dir), "--mix", "parent=0.3", "--steps", "2",
                 "--lr-schedule", "restart-warmup", "--no-optimizer", "--out", str(out)])
    assert code == 0
    assert "at step 16" in capsys.readouterr().out
    lineage = read_lineage(out)
    assert lineage["mix"] == [{"source": str(aligned_corpus.out_dir), "share": pytest.approx(0.7)},
                              {"source": "parent", "share": pytest.approx(0.3)}]
    assert (lineage["lr_schedule"], lineage["with_optimizer"], lineage["policy"]) == (
        "restart-warmup", False, None)
    final, _ = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert final["lr_schedulers"][0]["last_epoch"] == 2  # a new schedule, counted from the branch
    assert all(int(s["step"]) == 2 for s in final["optimizer_states"][0]["state"].values())
    assert hash_tree(parent_run) == before


def test_branch_refuses_to_write_into_the_parent_or_over_a_branch(parent_run, branched,
                                                                  aligned_corpus) -> None:
    checkpoint = str(branched["checkpoint"])
    with pytest.raises(BranchError, match="inside its parent"):
        run_branch(BranchConfig(checkpoint, str(aligned_corpus.out_dir),
                                run_dir=str(parent_run / "branch")))
    with pytest.raises(BranchError, match="already exists"):
        run_branch(BranchConfig(checkpoint, str(aligned_corpus.out_dir),
                                run_dir=str(branched["run_dir"])))
    with pytest.raises(BranchError, match="lr_schedule"):
        BranchConfig(checkpoint, "data", lr_schedule="cosine")


def test_parse_mix_accepts_sources_with_commas() -> None:
    assert parse_mix("parent=0.3") == [("parent", 0.3)]
    assert parse_mix("a.tar,b.tar=0.2,parent=0.1") == [("a.tar,b.tar", 0.2), ("parent", 0.1)]
    with pytest.raises(BranchError):
        parse_mix("parent")
    with pytest.raises(BranchError):
        parse_mix("parent=lots")
    with pytest.raises(BranchError, match="sum below 1"):
        BranchConfig("x.ckpt", "data", mix=[("parent", 0.6), ("other", 0.5)])


def test_branch_with_a_policy_indexes_its_corpus_and_keeps_a_ledger(branched, aligned_corpus,
                                                                   tmp_path) -> None:
    from curriculum.ledger import check_ledger

    run_dir = run_branch(BranchConfig(str(branched["checkpoint"]), str(aligned_corpus.out_dir),
                                      steps=BRANCH_STEPS, policy="values_first",
                                      run_dir=str(tmp_path / "with-policy")))
    assert (run_dir / "store" / "store.json").is_file()
    assert (run_dir / "policy.yaml").is_file()
    report = check_ledger(run_dir)
    assert report.ok and report.num_records > 0
    with pytest.raises(BranchError, match="--policy with --mix"):
        run_branch(BranchConfig(str(branched["checkpoint"]), str(aligned_corpus.out_dir),
                                policy="values_first", mix=[("parent", 0.5)],
                                run_dir=str(tmp_path / "mixed")))
