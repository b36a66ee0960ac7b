"""Fixtures: tiny real runs (a real Lightning Trainer on a small synthetic corpus) to report on.

- ``attributed``: trained under the short values-first policy with online attribution into its
  own copy of the store;
- ``policy_only``: the same policy, no attribution (its store copy holds no measured score);
- ``plain``: no policy, no attribution (no ledger, no policy.yaml).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from curriculum.store import build_store
from curriculum.synth import write_synthetic_corpus
from train.config import load_fit_config
from train.fit import run_fit

POLICY = str(Path(__file__).resolve().parents[1] / "fixtures" / "short_values_first.yaml")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ReportRuns:
    """Where the fixture's runs, stores and labels are."""

    corpus: Path
    labels: Path
    attributed: Path
    attributed_store: Path
    policy_only: Path
    policy_only_store: Path
    plain: Path


def tiny_overrides(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """A 1-layer GPT on 4 x 64-token batches for 24 steps (the policy's stage change takes
    effect at step 20), probes every 6 steps."""
    return [f"data.shards={corpus}", f"run_dir={run_dir}", "trainer.max_steps=24",
            "trainer.probe_every_n_steps=6", "trainer.checkpoint_every_n_steps=0",
            "trainer.log_every_n_steps=1", "data.num_workers=1", "data.probe_docs=8",
            "model.gpt.n_layer=1", "model.gpt.n_embd=32", "model.gpt.n_head=2",
            "data.stream.seq_len=64", "data.stream.batch_size=4", *extra]


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> ReportRuns:
    """Three tiny runs on one 240-document corpus (see the module docstring)."""
    root = tmp_path_factory.mktemp("report")
    corpus, store = root / "corpus", root / "store"
    synth = write_synthetic_corpus(corpus, num_docs=240, num_shards=2, seed=3,
                                   probe_docs_per_behavior=8)
    build_store(str(corpus), corpus / "probes", store)
    stores = {name: root / f"store-{name}" for name in ("attributed", "policy_only")}
    for copy in stores.values():
        shutil.copytree(store, copy)
    config = str(ROOT / "configs" / "demo.yaml")
    curriculum = "data.curriculum={{policy: {policy}, store: {store}, window_size_docs: 16}}"
    runs = {}
    for name, extra in (
        ("attributed", ("data.attribution={every_n_steps: 2, probe_refresh_steps: 8, "
                        "estimate_every_n_steps: 8}",)),
        ("policy_only", ()),
    ):
        runs[name] = run_fit(load_fit_config(config, tiny_overrides(
            corpus, root / name, curriculum.format(policy=POLICY, store=stores[name]), *extra)))
    runs["plain"] = run_fit(load_fit_config(config, tiny_overrides(corpus, root / "plain",
                                                                   "trainer.max_steps=8")))
    return ReportRuns(corpus, synth.labels_path, runs["attributed"], stores["attributed"],
                      runs["policy_only"], stores["policy_only"], runs["plain"])
