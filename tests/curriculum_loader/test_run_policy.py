"""A run loads its policy once per process and trains under its own copy (RUN/policy.yaml):
editing the source file mid-run changes nothing, in the driver or in any worker. run_fit does
not change the config it is given."""

from __future__ import annotations

import copy
import shutil

import lightning as L
import numpy as np
from support import POLICY, tiny_config

import policies
import policies.load
from curriculum.ledger import Fate, check_ledger, load_ledger
from curriculum.typed_config import to_mapping
from train.fit import run_fit

DROP_EVERYTHING = """name: drop_everything
stages:
  - name: only
    rules:
      - name: drop_all
        drop: "edited mid-run"
        when: affinity.values > -1000
"""


class EditPolicy(L.Callback):
    """Rewrites the policy file after the driver set up, before the DataLoader workers start."""

    def __init__(self, path) -> None:
        self.path = path

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.write_text(DROP_EVERYTHING)


def test_editing_the_policy_file_mid_run_changes_nothing(corpus_with_store, tmp_path) -> None:
    corpus, store = corpus_with_store
    source = tmp_path / "policy.yaml"
    shutil.copy(POLICY, source)
    original = source.read_text()
    run_dir = tmp_path / "run"
    run_fit(tiny_config(corpus, store, run_dir, "trainer.max_steps=10", policy=str(source)),
            callbacks=[EditPolicy(source)])
    assert (run_dir / "policy.yaml").read_text() == original
    events = load_ledger(run_dir).records["event"]
    assert np.count_nonzero(events == Fate.EMIT) > 0
    assert np.count_nonzero(events == Fate.DROP) == 0
    assert check_ledger(run_dir).ok


def test_the_policy_is_parsed_once_in_the_training_process(corpus_with_store, tmp_path,
                                                          monkeypatch) -> None:
    corpus, store = corpus_with_store
    parsed = []
    real = policies.load.load_policy_text

    def counting(*args, **kwargs):
        parsed.append(kwargs.get("source"))
        return real(*args, **kwargs)

    monkeypatch.setattr(policies.load, "load_policy_text", counting)
    monkeypatch.setattr(policies, "load_policy_text", counting)
    run_fit(tiny_config(corpus, store, tmp_path / "run", "trainer.max_steps=3",
                        "data.num_workers=0"))
    assert len(parsed) == 1, parsed  # no DataLoader workers: decisions in this process too


def test_run_fit_leaves_its_config_unchanged(corpus_with_store, tmp_path) -> None:
    corpus, store = corpus_with_store
    config = tiny_config(corpus, store, tmp_path / "run", "trainer.max_steps=2", "seed=3",
                         "data.num_workers=0",
                         "data.attribution={every_n_steps: 100, estimate_every_n_steps: 0}")
    before = copy.deepcopy(to_mapping(config))
    run_fit(config)
    assert to_mapping(config) == before
