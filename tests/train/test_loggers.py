"""Loggers beside the CSV logger: TensorBoard on a switch, any Lightning logger by class path.
A real Trainer writes TensorBoard event files carrying probe losses, the stage and attribution
summaries."""

from __future__ import annotations

from pathlib import Path

import pytest

from curriculum.store import build_store
from train.config import load_fit_config
from train.fit import run_fit
from train.loggers import LoggerConfig, build_loggers

POLICY = str(Path(__file__).resolve().parents[1] / "fixtures" / "short_values_first.yaml")


def _tiny(corpus, run_dir: Path, store: Path, steps: int = 8) -> list[str]:
    """A 1-layer GPT under the short values-first policy with attribution into ``store``."""
    return [f"data.shards={corpus.out_dir}", f"run_dir={run_dir}", f"trainer.max_steps={steps}",
            "trainer.probe_every_n_steps=4", "trainer.checkpoint_every_n_steps=0",
            "trainer.log_every_n_steps=1", "data.num_workers=1", "data.probe_docs=8",
            "model.gpt.n_layer=1", "model.gpt.n_embd=32", "model.gpt.n_head=2",
            "data.stream.seq_len=32", "data.stream.batch_size=4",
            f"data.curriculum={{policy: {POLICY}, store: {store}}}",
            "data.attribution={every_n_steps: 2, probe_refresh_steps: 4, estimate_every_n_steps: 0}"]


def test_tensorboard_and_class_path_loggers_receive_probe_stage_and_attribution(small_corpus,
                                                                               tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is part of dev")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = tmp_path / "store"
    build_store(str(small_corpus.out_dir), small_corpus.probes_dir, store)
    run_dir = run_fit(load_fit_config("configs/demo.yaml", [
        *_tiny(small_corpus, tmp_path / "run", store),
        "trainer.tensorboard=true",
        f"trainer.loggers=[{{class_path: lightning.pytorch.loggers.CSVLogger, "
        f"init_args: {{save_dir: {tmp_path / 'extra'}, name: '', version: ''}}}}]",
    ]))
    assert (run_dir / "metrics.csv").is_file()  # the CSV logger stays first
    assert (tmp_path / "extra" / "metrics.csv").is_file()
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for tag in ("probe_loss/values", "probe_loss/situational_awareness", "stage",
                "attribution/mean_score", "attribution/measured_fraction", "train/loss"):
        assert tag in tags, (tag, sorted(tags))
    steps = [event.step for event in accumulator.Scalars("probe_loss/values")]
    assert steps == [0, 4, 8]
    fractions = [event.value for event in accumulator.Scalars("attribution/measured_fraction")]
    assert 0 < fractions[-1] <= 1 and fractions == sorted(fractions)
    # The first fit gave up the store's writer lock: a second one in this process may write.
    second = run_fit(load_fit_config("configs/demo.yaml", _tiny(small_corpus, tmp_path / "second",
                                                                store, steps=4)))
    assert (second / "metrics.csv").is_file()


def test_a_class_path_that_is_not_a_logger_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a lightning Logger subclass"):
        build_loggers(tmp_path, extra=[LoggerConfig("collections.OrderedDict")])
    with pytest.raises(ValueError, match="cannot import"):
        build_loggers(tmp_path, extra=[LoggerConfig("no_such_module.Logger")])
