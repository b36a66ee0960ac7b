"""Fixtures of the store tests: one synthetic corpus and one store built from it per session.

Tests that write to a store work on a copy (:func:`fresh_store`), made next to the original so
that the relative shard paths in its manifest still resolve.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from curriculum.store import BehaviorStore, build_store
from curriculum.synth import SynthResult, write_synthetic_corpus

NUM_DOCS = 1200


@pytest.fixture(scope="session")
def store_corpus(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    """1200 documents in 4 shards, 32 probe documents per behavior, labels beside them."""
    out = tmp_path_factory.mktemp("store_corpus") / "corpus"
    return write_synthetic_corpus(out, num_docs=NUM_DOCS, num_shards=4, seed=11,
                                  probe_docs_per_behavior=32)


@pytest.fixture(scope="session")
def built_store_path(store_corpus: SynthResult) -> Path:
    """A store of the corpus with the default (hashed) embedder; never written to by tests."""
    out = store_corpus.out_dir.parent / "store"
    build_store(store_corpus.out_dir, store_corpus.probes_dir, out).close()
    return out


@pytest.fixture()
def fresh_store(built_store_path: Path, request: pytest.FixtureRequest) -> Iterator[BehaviorStore]:
    """A writable copy of the built store, removed after the test."""
    copy = built_store_path.parent / f"store-{request.node.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(built_store_path, copy)
    store = BehaviorStore.open(copy)
    assert isinstance(store, BehaviorStore)
    yield store
    store.close()
    shutil.rmtree(copy, ignore_errors=True)

