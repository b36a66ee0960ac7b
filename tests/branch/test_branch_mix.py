"""The mixed stream: proportions within sampling error, determinism, unique rows, exact resume."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest

from curriculum.shards.manifest import ShardManifest
from loaders.datamodule import stream_loader
from loaders.mix import MixedDataModule, MixedTextStream, MixSource
from loaders.stream import PackedTextStream, StreamConfig
from loaders.world import World


def _sources(small_corpus, aligned_corpus, shares=(0.7, 0.3)) -> list[MixSource]:
    corpora = [small_corpus.out_dir, aligned_corpus.out_dir]
    return [MixSource(ShardManifest.load(c), share, name=str(c))
            for c, share in zip(corpora, shares, strict=True)]


def _source_counts(stream: MixedTextStream, documents: int) -> np.ndarray:
    picks = [choice for choice, _ in itertools.islice(stream.iter_documents(World()), documents)]
    return np.bincount(picks, minlength=len(stream.streams))


@pytest.mark.parametrize("shares", [(0.7, 0.3), (0.5, 0.5), (0.9, 0.1)])
def test_mixed_stream_honours_proportions_within_binomial_error(small_corpus, aligned_corpus,
                                                                shares) -> None:
    documents = 2000
    stream = MixedTextStream(_sources(small_corpus, aligned_corpus, shares), StreamConfig(seed=5))
    counts = _source_counts(stream, documents)
    for count, share in zip(counts, shares, strict=True):
        sigma = math.sqrt(documents * share * (1 - share))
        # 4.5 sigma: a false alarm about once in 150,000 runs (and the draws are seeded anyway).
        assert abs(count - documents * share) <= 4.5 * sigma, (counts, shares)


def test_draws_are_deterministic_and_depend_on_seed_and_reader(small_corpus, aligned_corpus) -> None:
    def picks(seed: int, worker: int = 0) -> list[int]:
        stream = MixedTextStream(_sources(small_corpus, aligned_corpus), StreamConfig(seed=seed))
        world = World(worker=worker, num_workers=2)
        return [c for c, _ in itertools.islice(stream.iter_documents(world), 300)]

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert picks(1, worker=0) != picks(1, worker=1)


def test_batches_keep_the_format_and_rows_stay_unique_across_sources(small_corpus,
                                                                      aligned_corpus) -> None:
    sources = _sources(small_corpus, aligned_corpus, (0.5, 0.5))
    stream = MixedTextStream(sources, StreamConfig(batch_size=4, seq_len=64, seed=3))
    batches = list(itertools.islice(iter(stream), 30))
    assert set(batches[0]) >= {"input_ids", "labels", "loss_weight", "token_rows", "rows"}
    assert batches[0]["input_ids"].shape == (4, 64)
    rows = np.concatenate([b["token_rows"].ravel() for b in batches])
    first = sources[0].manifest.num_rows
    assert stream.row_offsets.tolist() == [0, first]
    assert (rows < first).any() and (rows >= first).any()  # both sources present
    assert rows.max() < first + sources[1].manifest.num_rows


def test_mixed_stream_resumes_exactly_with_two_workers(small_corpus, aligned_corpus) -> None:
    config = StreamConfig(batch_size=2, seq_len=48, seed=9)

    def loader():
        stream = MixedTextStream(_sources(small_corpus, aligned_corpus), config)
        return stream_loader(stream, num_workers=2, snapshot_every_n_steps=1)

    def fingerprint(batch) -> str:
        return hashlib.sha256(batch["input_ids"].tobytes() + batch["token_rows"].tobytes()).hexdigest()

    reference = [fingerprint(b) for b in itertools.islice(loader(), 40)]
    first = loader()
    iterator = iter(first)
    head = [fingerprint(next(iterator)) for _ in range(17)]
    state = first.state_dict()
    del iterator, first
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [fingerprint(b) for b in itertools.islice(resumed, 23)]
    assert head + tail == reference


def test_a_source_can_start_where_another_stream_stopped(small_corpus) -> None:
    manifest = ShardManifest.load(small_corpus.out_dir)
    plain = PackedTextStream(manifest, StreamConfig(seed=4))
    documents = plain.iter_documents(World())
    for _ in range(25):
        next(documents)
    position = {k: v for k, v in plain.state_dict().items() if k != "config"}
    expected = [d.row for d in itertools.islice(documents, 10)]
    mixed = MixedTextStream([MixSource(manifest, 1.0, start_positions={0: position})],
                            StreamConfig(seed=4))
    assert [d.row for _, d in itertools.islice(mixed.iter_documents(World()), 10)] == expected


def test_bad_mixes_are_refused(small_corpus) -> None:
    manifest = ShardManifest.load(small_corpus.out_dir)
    with pytest.raises(ValueError, match="at least one source"):
        MixedTextStream([])
    with pytest.raises(ValueError, match="proportions"):
        MixedTextStream([MixSource(manifest, -0.5), MixSource(manifest, 1.0)])
    with pytest.raises(ValueError, match="proportions"):
        MixedDataModule([str(small_corpus.out_dir)], proportions=[0.5, 0.5])


def test_finite_sources_end_the_mix_with_a_padded_remainder(aligned_corpus) -> None:
    manifest = ShardManifest.load(aligned_corpus.out_dir)
    config = StreamConfig(batch_size=2, seq_len=64, num_epochs=1, seed=2)
    stream = MixedTextStream([MixSource(manifest, 0.8), MixSource(manifest, 0.2)], config)
    batches = list(stream)  # ends: a finite source ran out
    rows = np.concatenate([b["token_rows"].ravel() for b in batches])
    # Every document of source 0 was read at most once, in one epoch.
    from_first = np.unique(rows[(rows >= 0) & (rows < manifest.num_rows)])
    assert 0 < len(from_first) <= manifest.num_rows
    assert (batches[-1]["labels"] == -100).any()  # the remainder, padded
