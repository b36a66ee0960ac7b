"""The remote-shard cache against a real HTTP server on localhost: complete files only, retries,
one-line errors naming the URL, LRU eviction within the size limit, background prefetch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from http_shards import serve_directory

from curriculum.shards.remote_cache import CacheConfig, RemoteShardError, ShardCache


def _shards(directory: Path, count: int, size_bytes: int = 200_000) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"shard-{index:06d}.tar"
        path.write_bytes(bytes([index % 251]) * size_bytes)
        paths.append(path)
    return paths


def _cache(tmp_path: Path, **settings) -> ShardCache:
    settings.setdefault("backoff_s", 0.01)
    return ShardCache(CacheConfig(directory=tmp_path / "cache", **settings))


def test_server_dying_mid_download_is_retried_and_never_leaves_a_partial_file(tmp_path) -> None:
    (original,) = _shards(tmp_path / "www", 1)
    with serve_directory(tmp_path / "www", truncate_gets=2) as (base, server):
        cache = _cache(tmp_path)
        local = cache.local_path(f"{base}/{original.name}")
        assert server.gets[f"/{original.name}"] == 3  # two cut downloads, then a whole one
    assert Path(local).read_bytes() == original.read_bytes()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith(".part")] == []


def test_a_short_download_fails_with_one_line_naming_the_url(tmp_path) -> None:
    (original,) = _shards(tmp_path / "www", 1)
    with serve_directory(tmp_path / "www", short_bodies=True) as (base, server):
        cache = _cache(tmp_path, attempts=3)
        url = f"{base}/{original.name}"
        with pytest.raises(RemoteShardError) as raised:
            cache.local_path(url)
        assert server.gets[f"/{original.name}"] == 3
    message = str(raised.value)
    assert message.startswith(url) and "\n" not in message and "truncated download" in message
    # The truncated bytes are nowhere under the shard's name: nothing can read them.
    assert not cache.cached_path(url).exists()
    assert [p for p in (tmp_path / "cache").iterdir() if p.suffix in (".tar", ".part")] == []


def test_a_missing_shard_is_not_retried(tmp_path) -> None:
    _shards(tmp_path / "www", 1)
    with serve_directory(tmp_path / "www") as (base, server):
        cache = _cache(tmp_path, attempts=4, backoff_s=5.0)
        with pytest.raises(RemoteShardError, match="not found"):
            cache.local_path(f"{base}/nope.tar")
        assert server.gets["/nope.tar"] == 1  # asked once: a 404 is final, never retried


def test_least_recently_used_shards_are_evicted_within_the_limit(tmp_path) -> None:
    shards = _shards(tmp_path / "www", 4, size_bytes=100_000)
    with serve_directory(tmp_path / "www") as (base, server):
        cache = _cache(tmp_path, max_bytes=250_000, eviction_grace_s=0.0, prefetch_shards=1)
        urls = [f"{base}/{p.name}" for p in shards]
        for url in urls[:2]:
            cache.local_path(url)
        cache.local_path(urls[0])  # used again: shard 1 is now the least recently used
        time.sleep(0.01)
        for url in urls[2:]:
            cache.local_path(url)
        assert cache.cached_bytes() <= 250_000
        assert not cache.cached_path(urls[1]).exists()
        assert cache.cached_path(urls[3]).exists()
        # An evicted shard is fetched again when it is needed.
        gets = server.gets[f"/{shards[1].name}"]
        assert Path(cache.local_path(urls[1])).read_bytes() == shards[1].read_bytes()
        assert server.gets[f"/{shards[1].name}"] == gets + 1


def test_the_next_shards_are_prefetched_in_the_background(tmp_path) -> None:
    shards = _shards(tmp_path / "www", 4)
    with serve_directory(tmp_path / "www") as (base, server):
        cache = _cache(tmp_path, prefetch_shards=2)
        urls = [f"{base}/{p.name}" for p in shards]
        cache.local_path(urls[0], upcoming=urls[1:])
        deadline = time.monotonic() + 10
        while not cache.cached_path(urls[2]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.cached_path(urls[1]).exists() and cache.cached_path(urls[2]).exists()
        assert not cache.cached_path(urls[3]).exists()  # only prefetch_shards ahead
        cache.local_path(urls[1])  # already there: no second download
        assert server.gets[f"/{shards[1].name}"] == 1
