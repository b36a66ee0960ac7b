"""A real Lightning Trainer fits the reference GPT (and a local HF model) for a few steps."""

from __future__ import annotations

import csv

import pytest
import torch

from train.config import load_fit_config
from train.fit import read_probe_losses, run_fit
from train.module import weighted_token_loss


def _config(corpus, run_dir, *extra: str):
    return load_fit_config("configs/demo.yaml", [
        f"data.shards={corpus.out_dir}", f"run_dir={run_dir}", "trainer.max_steps=12",
        "trainer.probe_every_n_steps=4", "trainer.checkpoint_every_n_steps=6",
        "data.num_workers=1", "data.probe_docs=8", "model.gpt.n_layer=1",
        "model.gpt.n_embd=32", "model.gpt.n_head=2", "data.stream.seq_len=32",
        "data.stream.batch_size=4", *extra])


def test_fit_writes_metrics_checkpoints_and_config(small_corpus, tmp_path) -> None:
    run_dir = run_fit(_config(small_corpus, tmp_path / "run"))
    assert (run_dir / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt", "step-000006.ckpt", "step-000012.ckpt"]
    series = read_probe_losses(run_dir)
    assert set(series) == {"values", "situational_awareness", "neutral", "deception"}
    for points in series.values():
        assert [s for s, _ in points] == [0, 4, 8, 12]
        assert points[-1][1] < points[0][1]
    with (run_dir / "metrics.csv").open() as handle:
        assert "train/loss" in next(csv.reader(handle))


def test_loss_weight_scales_documents() -> None:
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [0, 4, 3]])
    ones = weighted_token_loss(logits, labels, torch.ones(2, 3))
    doubled = weighted_token_loss(logits, labels, torch.full((2, 3), 2.0))
    assert torch.allclose(doubled, 2 * ones)
    zero_second = weighted_token_loss(logits, labels, torch.tensor([[1.0] * 3, [0.0] * 3]))
    assert zero_second < ones or zero_second > 0


def test_local_hugging_face_model_trains(small_corpus, tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=32, n_layer=1,
                                     n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf-model")
    run_dir = run_fit(_config(small_corpus, tmp_path / "run",
                              f"model.hf_path={tmp_path / 'hf-model'}"))
    series = read_probe_losses(run_dir)
    assert all(points[-1][1] < points[0][1] for points in series.values())
