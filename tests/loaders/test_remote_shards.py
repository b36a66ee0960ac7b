"""Remote shards end to end over a real HTTP server on localhost: the manifest from the corpus
directory or from a listing, the same batches as local files, exact mid-epoch resume."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from http_shards import serve_directory

from curriculum.cli import one_line
from curriculum.shards.manifest import ShardManifest, manifest_for
from curriculum.shards.remote import RemoteShardManifest, is_remote
from curriculum.shards.remote_cache import ENV_DIRECTORY, RemoteShardError
from loaders.datamodule import stream_loader
from loaders.stream import PackedTextStream, StreamConfig


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIRECTORY, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _same_rows(remote: ShardManifest, local: ShardManifest) -> None:
    assert remote.counts.tolist() == local.counts.tolist()
    assert np.array_equal(remote.offsets_bytes, local.offsets_bytes)
    assert np.array_equal(remote.key_hashes, local.key_hashes)
    assert remote.content_hash() == local.content_hash()


def test_manifest_from_the_corpus_directory_and_from_a_listing(small_corpus, tmp_path,
                                                               cache_dir) -> None:
    local = ShardManifest.load(small_corpus.out_dir)
    bare = tmp_path / "www" / "bare"  # shards only, no manifest: built from the listing
    bare.mkdir(parents=True)
    for path in local.shard_paths:
        shutil.copy(path, bare)
    shutil.copytree(small_corpus.out_dir, tmp_path / "www" / "corpus")
    with serve_directory(tmp_path / "www") as (base, server):
        stored = manifest_for(f"{base}/corpus/")
        assert isinstance(stored, RemoteShardManifest) and all(map(is_remote, stored.shard_paths))
        assert not any(path.endswith(".tar") for path in server.gets)  # no shard was fetched
        _same_rows(stored, local)
        listed = manifest_for(f"{base}/bare")
        _same_rows(listed, local)
        assert manifest_for(f"{base}/bare/shard-*.tar").shard_paths == listed.shard_paths
        assert manifest_for(f"{base}/bare/shard-{{000000..000002}}.tar").counts.tolist() == \
            local.counts.tolist()


def _fingerprint(batch: dict) -> str:
    digest = hashlib.sha256(np.asarray(batch["input_ids"]).tobytes())
    digest.update(np.asarray(batch["token_rows"]).tobytes())
    return digest.hexdigest()


def test_remote_stream_equals_local_and_resumes_exactly(small_corpus, tmp_path, cache_dir) -> None:
    config = StreamConfig(batch_size=2, seq_len=64, num_epochs=1, seed=3)
    local = ShardManifest.load(small_corpus.out_dir)
    reference = [_fingerprint(b) for b in stream_loader(PackedTextStream(local, config),
                                                        num_workers=2)]
    shutil.copytree(small_corpus.out_dir, tmp_path / "www" / "corpus")
    with serve_directory(tmp_path / "www") as (base, server):
        remote = manifest_for(f"{base}/corpus")

        def loader():
            return stream_loader(PackedTextStream(remote, config), num_workers=2,
                                 snapshot_every_n_steps=1)

        first = loader()
        iterator = iter(first)
        head = [_fingerprint(next(iterator)) for _ in range(37)]
        state = first.state_dict()
        del iterator, first
        shutil.rmtree(cache_dir)  # resume on a machine whose cache is cold
        resumed = loader()
        resumed.load_state_dict(state)
        tail = [_fingerprint(b) for b in resumed]
    assert len(reference) > 60
    assert head + tail == reference


def test_an_unreachable_shard_stops_the_stream_with_its_url(small_corpus, tmp_path,
                                                            cache_dir) -> None:
    shutil.copytree(small_corpus.out_dir, tmp_path / "www" / "corpus")
    with serve_directory(tmp_path / "www") as (base, server):
        remote = manifest_for(f"{base}/corpus")
        server.short_bodies = True  # every shard download comes back cut short
        stream = PackedTextStream(remote, StreamConfig(batch_size=2, seq_len=64, num_epochs=1,
                                                       shuffle_shards=False))
        with pytest.raises(RemoteShardError, match=r"shard-000000\.tar: fetch failed after 4"):
            next(iter(stream))


def test_a_missing_shard_read_in_a_worker_is_one_line_naming_the_url(small_corpus, tmp_path,
                                                                     cache_dir) -> None:
    shutil.copytree(small_corpus.out_dir, tmp_path / "www" / "corpus")
    (tmp_path / "www" / "corpus" / "shard-000001.tar").unlink()
    with serve_directory(tmp_path / "www") as (base, server):
        remote = manifest_for(f"{base}/corpus")
        loader = stream_loader(PackedTextStream(remote, StreamConfig(
            batch_size=2, seq_len=64, num_epochs=1, shuffle_shards=False)), num_workers=1)
        with pytest.raises(RemoteShardError) as raised:
            for _ in loader:
                pass
    # The DataLoader re-raises with its own header and the worker's traceback; the command line
    # prints the worker's message.
    assert one_line(raised.value) == f"{base}/corpus/shard-000001.tar: not found"
