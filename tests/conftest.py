"""Shared fixtures: a small synthetic corpus written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from curriculum.synth import SynthResult, write_synthetic_corpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """600 documents in 3 shards, with probe sets and labels."""
    out: Path = tmp_path_factory.mktemp("corpus")
    return write_synthetic_corpus(out, num_docs=600, num_shards=3, seed=7,
                                  probe_docs_per_behavior=16)
