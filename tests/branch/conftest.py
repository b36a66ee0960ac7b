"""Fixtures of the branching tests: a tiny parent run with early checkpoints, an aligned corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from branch_support import EARLY, tiny_config

from curriculum.synth import SynthResult, write_synthetic_corpus
from train.fit import run_fit


@pytest.fixture(scope="session")
def parent_run(small_corpus: SynthResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 steps with early checkpoints at 4, 8 and 16, regular ones at 8 and 16, probes every 4."""
    run_dir = tmp_path_factory.mktemp("parent") / "run"
    return run_fit(tiny_config(small_corpus.out_dir, run_dir,
                               f"trainer.early_checkpoints={EARLY}"))


@pytest.fixture(scope="session")
def aligned_corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """200 values-heavy documents in 2 shards: the data branches move onto."""
    return write_synthetic_corpus(tmp_path_factory.mktemp("aligned"), num_docs=200, num_shards=2,
                                  seed=11, profile="aligned", probe_docs_per_behavior=4)
