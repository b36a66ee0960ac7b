"""Fixtures: a small corpus with a behavior store, and a tiny corpus whose epochs complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curriculum.store import build_store
from curriculum.synth import write_synthetic_corpus


@pytest.fixture(scope="session")
def corpus_with_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """800 documents in 4 shards and their behavior store."""
    root = tmp_path_factory.mktemp("curriculum")
    corpus, store = root / "corpus", root / "store"
    write_synthetic_corpus(corpus, num_docs=800, num_shards=4, seed=11, probe_docs_per_behavior=16)
    build_store(str(corpus), corpus / "probes", store)
    return corpus, store


@pytest.fixture(scope="session")
def uneven_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """90 short documents (60 characters) in two shards of very different sizes (80 and 10), with a store."""
    from curriculum.shards.writer import write_shards
    from curriculum.synth import generate_documents

    root = tmp_path_factory.mktemp("uneven")
    corpus, store = root / "corpus", root / "store"
    docs = generate_documents(90, seed=5)
    write_shards(({"__key__": d.key, "txt": d.text[:60]} for d in docs), corpus,
                 max_docs_per_shard=80)
    reference = write_synthetic_corpus(root / "probes-source", num_docs=8, num_shards=1, seed=5,
                                       probe_docs_per_behavior=8)
    shutil.copytree(reference.probes_dir, corpus / "probes")
    build_store(str(corpus), corpus / "probes", store)
    return corpus, store
