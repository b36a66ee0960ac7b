"""Reopening gives identical answers; damaged and mismatched stores are refused with their cause;
builds are atomic."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curriculum.store import BehaviorStore, StoreError, StoreReader, build_store
from curriculum.synth import SynthResult, write_synthetic_corpus


def _damaged_copy(built_store_path: Path, name: str) -> Path:
    copy = built_store_path.parent / f"damaged-{name.replace('.', '_')}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(built_store_path, copy)
    return copy


def test_reopening_gives_identical_answers(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    rng = np.random.default_rng(0)
    measured = rng.choice(store.num_rows, size=300, replace=False)
    store.record_attribution(measured, rng.normal(size=(300, len(store.behaviors))))
    store.refresh_estimates()
    rows = np.arange(store.num_rows)
    query = store.embeddings(rng.choice(store.num_rows, size=16))
    before = {
        "affinity": store.affinity(rows),
        "attribution": store.attribution(rows),
        "measured": store.is_measured(rows),
        "embeddings": store.embeddings(rows),
        "search": store.search(query, 5),
        "keys": store.rows_for_keys(["doc00000005", "doc00000999", "missing"]),
        "shards": store.shard_summaries().mean_affinity,
    }
    store.close()

    reopened = BehaviorStore.open(store.path)
    assert isinstance(reopened, BehaviorStore)
    after = {
        "affinity": reopened.affinity(rows),
        "attribution": reopened.attribution(rows),
        "measured": reopened.is_measured(rows),
        "embeddings": reopened.embeddings(rows),
        "search": reopened.search(query, 5),
        "keys": reopened.rows_for_keys(["doc00000005", "doc00000999", "missing"]),
        "shards": reopened.shard_summaries().mean_affinity,
    }
    for name, value in before.items():
        if isinstance(value, tuple):
            for a, b in zip(value, after[name], strict=True):
                np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            np.testing.assert_array_equal(value, after[name], err_msg=name)
    assert list(after["keys"]) == [5, 999, -1]
    # A fresh writer session rebuilds the neighbour index and gets the same estimates again.
    assert reopened.refresh_estimates() > 0
    np.testing.assert_array_equal(reopened.attribution(rows), before["attribution"])
    reopened.close()


def test_reader_pickles_as_its_path_and_never_imports_faiss(built_store_path: Path) -> None:
    reader = StoreReader(built_store_path)
    reader.affinity([0, 1])  # opened here; pickling must still carry only the path
    payload = pickle.dumps(reader)
    assert len(payload) < 300
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone.affinity([0, 1]), reader.affinity([0, 1]))
    assert BehaviorStore.open(built_store_path, readonly=True).behaviors == reader.behaviors

    script = (
        "import pickle, sys; reader = pickle.loads(sys.stdin.buffer.read()); "
        "reader.attribution([0, 5]); reader.affinity([3]); reader.rows_for_keys(['doc00000003']); "
        "print('faiss' in sys.modules, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True,
                            check=True)
    assert result.stdout.split() == [b"False", b"False"]


@pytest.mark.parametrize(
    ("name", "damage", "cause"),
    [
        ("store.json", lambda p: p.write_text("{not json"), "damaged store manifest"),
        ("store.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()),
                                                          "version": 99})), "format version 99"),
        ("affinity.npy", lambda p: p.write_bytes(p.read_bytes()[:-100]), "damaged"),
        ("embeddings.npy", lambda p: p.write_bytes(b"garbage" * 10), "damaged"),
        ("attribution_sum.npy", lambda p: p.write_bytes(p.read_bytes()[:200]), "damaged table"),
        ("attribution_count.npy", lambda p: p.unlink(), "missing table"),
        ("key_rows_sorted.npy", lambda p: p.unlink(), "missing store file"),
    ],
)
def test_damaged_store_is_refused_naming_the_file(
    built_store_path: Path, name: str, damage: object, cause: str
) -> None:
    copy = _damaged_copy(built_store_path, name)
    damage(copy / name)  # type: ignore[operator]
    with pytest.raises(StoreError) as raised:
        BehaviorStore.open(copy)
    message = str(raised.value)
    assert name in message and cause in message and "\n" not in message
    shutil.rmtree(copy)


def test_damaged_index_is_refused_when_first_searched(built_store_path: Path) -> None:
    copy = _damaged_copy(built_store_path, "index")
    index_path = copy / "index.faiss"
    index_path.write_bytes(b"\0" * index_path.stat().st_size)  # same size, garbage inside
    store = BehaviorStore.open(copy)
    assert isinstance(store, BehaviorStore)
    with pytest.raises(StoreError, match="index.faiss: damaged FAISS index"):
        store.search(store.embeddings([0]), 3)
    with pytest.raises(StoreError, match="index.faiss: damaged .CRC-32"):
        store.verify()
    store.close()
    shutil.rmtree(copy)


def test_table_of_the_wrong_shape_is_refused(built_store_path: Path) -> None:
    copy = _damaged_copy(built_store_path, "shape")
    np.save(copy / "attribution_estimate.npy", np.zeros((7, 4), np.float32))
    with pytest.raises(StoreError, match=r"attribution_estimate.npy: table is float32\(7, 4\)"):
        StoreReader(copy).open()
    shutil.rmtree(copy)


def test_mismatched_store_is_refused(
    built_store_path: Path, store_corpus: SynthResult, tmp_path: Path
) -> None:
    other = write_synthetic_corpus(tmp_path / "other", num_docs=40, num_shards=1, seed=3,
                                   probe_docs_per_behavior=4)
    with pytest.raises(StoreError, match="built from other shards"):
        BehaviorStore.open(built_store_path, shards=other.out_dir)
    with pytest.raises(StoreError, match="no behavior 'honesty'"):
        BehaviorStore.open(built_store_path, behaviors=["values", "honesty"])
    with pytest.raises(StoreError, match="dimension 256, expected 128"):
        StoreReader(built_store_path).check_compatible(dim=128)
    # The right expectations pass, and the shards on disk still hash as recorded.
    BehaviorStore.open(built_store_path, shards=str(store_corpus.out_dir), behaviors=["values"],
                       verify_shards=True, readonly=True)


def test_changed_shards_are_detected(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=60, num_shards=2, seed=5,
                                    probe_docs_per_behavior=4)
    build_store(corpus.out_dir, corpus.probes_dir, tmp_path / "store").close()
    shard = corpus.shard_paths[1]
    shard.write_bytes(shard.read_bytes() + b"\0" * 512)  # the data changed after indexing
    with pytest.raises(StoreError, match="shards changed since the store was built"):
        BehaviorStore.open(tmp_path / "store", verify_shards=True)


def test_build_refuses_a_damaged_shard_and_leaves_nothing(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=60, num_shards=2, seed=5,
                                    probe_docs_per_behavior=4)
    shard = corpus.shard_paths[0]
    shard.write_bytes(shard.read_bytes()[:3000])
    with pytest.raises(StoreError, match="shard-000000.tar"):
        build_store(str(shard), corpus.probes_dir, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    assert not list(tmp_path.glob(".store.building-*"))


def test_build_checks_rows_against_the_corpus_manifest(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=60, num_shards=2, seed=5,
                                    probe_docs_per_behavior=4)
    other = write_synthetic_corpus(tmp_path / "other", num_docs=70, num_shards=2, seed=6,
                                   probe_docs_per_behavior=4)
    # The shard was replaced after the manifest was written: its rows would all shift.
    shutil.copy(other.shard_paths[1], corpus.shard_paths[1])
    with pytest.raises(StoreError, match="manifest.json: lists 30 samples in .*, the shard holds 35"):
        build_store(corpus.out_dir, corpus.probes_dir, tmp_path / "store")


def test_failed_rebuild_keeps_the_old_store(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=60, num_shards=1, seed=5,
                                    probe_docs_per_behavior=4)
    out = tmp_path / "store"
    build_store(corpus.out_dir, corpus.probes_dir, out).close()
    with pytest.raises(StoreError, match="already exists"):
        build_store(corpus.out_dir, corpus.probes_dir, out)
    with pytest.raises(StoreError, match="IVF4096"):
        build_store(corpus.out_dir, corpus.probes_dir, out, index_factory="IVF4096,Flat",
                    overwrite=True)
    with pytest.raises(StoreError, match="index factory 'NotAnIndex'"):
        build_store(corpus.out_dir, corpus.probes_dir, out, index_factory="NotAnIndex",
                    overwrite=True)
    assert StoreReader(out).num_rows == 60
    rebuilt = build_store(corpus.out_dir, corpus.probes_dir, out, overwrite=True,
                          embedder="hashed:dim=64")
    assert rebuilt.dim == 64 and rebuilt.embeddings([0]).shape == (1, 64)
    rebuilt.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "store"]


def test_bad_probe_sets_are_refused(tmp_path: Path) -> None:
    corpus = write_synthetic_corpus(tmp_path / "corpus", num_docs=20, num_shards=1, seed=5,
                                    probe_docs_per_behavior=2)
    with pytest.raises(StoreError, match="values.jsonl:2: invalid JSON"):
        (corpus.probes_dir / "values.jsonl").write_text('{"text": "ok"}\n{oops\n')
        build_store(corpus.out_dir, corpus.probes_dir, tmp_path / "store")
    with pytest.raises(StoreError, match="honesty.jsonl: probe set not found"):
        build_store(corpus.out_dir, corpus.probes_dir, tmp_path / "store",
                    behaviors=["honesty"])
    with pytest.raises(StoreError, match="probe directory not found"):
        build_store(corpus.out_dir, tmp_path / "nowhere", tmp_path / "store")
