"""The curriculum does what it says: at the end of the first stage of values_first, the values
probe loss is lower and the situational-awareness probe loss higher than under the uniform
baseline trained on the same data for the same steps."""

from __future__ import annotations

from pathlib import Path

from support import tiny_config

from train.fit import read_probe_losses, run_fit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_values_first_moves_probe_losses_the_right_way(corpus_with_store, tmp_path) -> None:
    corpus, store = corpus_with_store
    losses = {}
    for name, policy in (("curriculum", str(FIXTURES / "direction_values_first.yaml")),
                         ("uniform", "uniform")):
        config = tiny_config(corpus, store, tmp_path / name, "trainer.max_steps=40",
                             "trainer.probe_every_n_steps=40", "model.gpt.n_embd=64",
                             "data.stream.batch_size=8", "data.probe_docs=16",
                             "data.num_workers=1", "optim.warmup_steps=5", policy=policy)
        series = read_probe_losses(run_fit(config))
        losses[name] = {behavior: points[-1][1] for behavior, points in series.items()}
    assert losses["curriculum"]["values"] < losses["uniform"]["values"]
    assert losses["curriculum"]["situational_awareness"] > losses["uniform"]["situational_awareness"]
