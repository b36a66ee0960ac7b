"""Bundled transport: the same batches in the same order as an unbundled loader, and exact
resume from a state taken between any two batches (mid-round, at a round's end, at the end)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

from curriculum.shards.manifest import ShardManifest
from loaders.bundles import BUNDLE_KEY, DEFAULT_BUNDLE_BATCHES, BundledLoader, bundle_size_for
from loaders.datamodule import stream_loader
from loaders.stream import PackedTextStream, StreamConfig


def _fingerprint(batch: dict) -> str:
    digest = hashlib.sha256(np.asarray(batch["input_ids"]).tobytes())
    digest.update(np.asarray(batch["token_rows"]).tobytes())
    digest.update(str(batch["skipped_rows"]).encode())
    return digest.hexdigest()


def _loader(corpus, workers: int, bundle: int, snapshot: int = 16):
    manifest = ShardManifest.load(corpus.out_dir)
    # Three shards over two or three workers: their shares (and last bundles) differ in length.
    config = StreamConfig(batch_size=2, seq_len=96, num_epochs=1, seed=5)
    return stream_loader(PackedTextStream(manifest, config), num_workers=workers,
                         snapshot_every_n_steps=snapshot, bundle_batches=bundle)


@pytest.mark.parametrize(("workers", "bundle"), [(2, 3), (3, 4), (2, 8)])
def test_bundled_order_is_the_unbundled_order(small_corpus, workers: int, bundle: int) -> None:
    plain = _loader(small_corpus, workers, 1)
    assert type(plain) is StatefulDataLoader
    reference = [_fingerprint(b) for b in plain]
    bundled = _loader(small_corpus, workers, bundle)
    assert isinstance(bundled, BundledLoader)
    assert [_fingerprint(b) for b in bundled] == reference
    assert len(reference) > 6 * bundle * workers


@pytest.mark.parametrize("snapshot", [1, 16])
def test_resume_between_any_two_batches_is_exact(small_corpus, snapshot: int) -> None:
    reference = [_fingerprint(b) for b in _loader(small_corpus, 2, 3, snapshot)]
    # Before the first batch, mid-round, at a round's end, later, in the last round, at the end.
    for cut in (0, 4, 6, 41, len(reference) - 2, len(reference)):
        first = _loader(small_corpus, 2, 3, snapshot)
        iterator = iter(first)
        head = [_fingerprint(next(iterator)) for _ in range(cut)]
        state = first.state_dict()
        del iterator, first
        resumed = _loader(small_corpus, 2, 3, snapshot)
        resumed.load_state_dict(state)
        assert resumed.state_dict()[BUNDLE_KEY] == state[BUNDLE_KEY]
        tail = [_fingerprint(b) for b in resumed]
        assert head + tail == reference, f"cut at batch {cut}"


def test_state_of_an_unbundled_loader_resumes_in_a_bundled_one(small_corpus) -> None:
    reference = [_fingerprint(b) for b in _loader(small_corpus, 2, 1)]
    first = _loader(small_corpus, 2, 1)
    iterator = iter(first)
    head = [_fingerprint(next(iterator)) for _ in range(23)]
    state = first.state_dict()
    del iterator, first
    resumed = _loader(small_corpus, 2, 4)
    resumed.load_state_dict(state)  # its steps count single batches: bundles of one it reads
    assert resumed.bundle_batches == 1
    assert head + [_fingerprint(b) for b in resumed] == reference


def test_bundle_size_stays_inside_the_curriculum_lag() -> None:
    assert bundle_size_for(object(), 2) == DEFAULT_BUNDLE_BATCHES
    waiting = SimpleNamespace(wiring=SimpleNamespace(state_path="/run/state", lag_steps=8))
    assert bundle_size_for(waiting, 1) == 4
    assert bundle_size_for(waiting, 2) == 2
    assert bundle_size_for(waiting, 8) == 1
    free = SimpleNamespace(wiring=SimpleNamespace(state_path="", lag_steps=8))
    assert bundle_size_for(free, 2) == DEFAULT_BUNDLE_BATCHES
