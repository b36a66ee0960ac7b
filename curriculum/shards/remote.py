"""Shard specs that are URLs: list them remotely, get their manifest, read them through the cache.

A remote spec is any fsspec URL whose scheme is not ``file``: ``https://host/corpus/`` (a corpus
directory: its ``manifest.json`` when it has one, else its ``*.tar`` listing),
``s3://bucket/corpus/shard-*.tar`` (a glob), ``https://host/c/shard-{000000..000009}.tar`` (a
brace pattern), a comma-separated list, or a list of these. Cloud back ends need their fsspec
package (``pip install curriculum-loader[s3]``, ``[gcs]``; ``hf://`` comes with ``[hf]``).

The manifest keeps the URLs as shard paths; :func:`local_shard` turns one into a complete local
copy (see :mod:`curriculum.shards.remote_cache`) at the moment it is opened, so rows, byte offsets and
seek-resume are exactly those of the same shards read locally.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from curriculum.shards.manifest import MANIFEST_NAME, ROWS_NAME, ManifestError, ShardManifest
from curriculum.shards.remote_cache import RemoteShardError, remote_size_bytes, shard_cache

_GLOB = "*?["


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a non-local fsspec back end (``file://`` counts as local)."""
    scheme, separator, _ = str(path).partition("://")
    return bool(separator) and scheme not in ("", "file") and "/" not in scheme


def is_remote_spec(spec: object) -> bool:
    """Whether a shard spec (a string or a list of strings) names remote shards."""
    if isinstance(spec, str):
        return is_remote(spec)
    if isinstance(spec, (list, tuple)):
        return any(isinstance(item, str) and is_remote(item) for item in spec)
    return False


def local_shard(path: str, upcoming: Iterable[str] = ()) -> str:
    """A local path holding ``path``'s complete content: ``path`` itself when it is local, else
    its copy in the shard cache (fetched now if needed; the first shards of ``upcoming`` are
    prefetched in the background). Raises :class:`RemoteShardError` naming the URL on failure."""
    if not is_remote(path):
        return path
    return shard_cache().local_path(path, (u for u in upcoming if is_remote(u)))


def _base_name(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


@dataclass
class RemoteShardManifest(ShardManifest):
    """A manifest whose shard paths are URLs; sizes come from the back end, not ``os.stat``."""

    sizes_bytes: list[int] | None = None
    """Size of each shard (asked of the back end on first use when not known)."""

    def content_hash(self) -> str:
        """Same hash as :meth:`ShardManifest.content_hash` of the same shards stored locally, so a
        store built from local copies accepts the remote shards and the other way round."""
        if self.sizes_bytes is None:
            self.sizes_bytes = shard_sizes(self.shard_paths)
        digest = hashlib.sha256()
        for url, size, count in zip(self.shard_paths, self.sizes_bytes, self.counts.tolist(),
                                    strict=True):
            digest.update(f"{_base_name(url)}:{size}:{count}\n".encode())
        return digest.hexdigest()[:16]

    def save(self, directory: object) -> None:  # type: ignore[override]
        """Refused: a manifest of URLs is read from its corpus directory, not written locally."""
        raise ManifestError(f"{directory}: a manifest of remote shards cannot be saved locally")


def shard_sizes(urls: Sequence[str]) -> list[int]:
    """Sizes of remote shards: from one detailed listing per directory where the back end gives
    sizes there (object stores do), else asked per shard, 16 at a time."""
    import fsspec

    known: dict[str, int] = {}
    for directory in sorted({url.rsplit("/", 1)[0] for url in urls}):
        fs, path = fsspec.core.url_to_fs(directory)
        try:
            entries = fs.ls(path, detail=True)
        except Exception:  # a listing is only a shortcut; the per-shard requests below decide
            continue
        for entry in entries:
            name, size = str(entry.get("name", "")), entry.get("size")
            if size is not None and name.endswith(".tar"):
                known[name if is_remote(name) else fs.unstrip_protocol(name)] = int(size)
    missing = [url for url in urls if url not in known]
    with ThreadPoolExecutor(max_workers=16) as pool:
        known.update(zip(missing, pool.map(_size_or_fail, missing), strict=True))
    return [known[url] for url in urls]


def _size_or_fail(url: str) -> int:
    try:
        size = remote_size_bytes(url)
    except Exception as error:
        raise RemoteShardError(f"{url}: cannot read its size ({type(error).__name__}: {error})") \
            from error
    if size is None:
        raise RemoteShardError(f"{url}: the server reports no size")
    return size


def _is_directory_spec(part: str) -> bool:
    return not part.endswith(".tar") and not any(c in part for c in _GLOB)


def expand_remote_spec(spec: str | Sequence[str]) -> list[str]:
    """Shard URLs of a remote spec, in order: globs and directory listings are sorted.

    A part ending in ``.tar`` is taken as it is (its existence is checked when it is fetched);
    a part with ``* ? [`` is globbed; any other part is a directory whose ``*.tar`` are listed.
    """
    import fsspec
    from webdataset.shardlists import expand_urls

    urls: list[str] = []
    for item in [spec] if isinstance(spec, str) else list(spec):
        for part in expand_urls(item) if "{" in item else item.split(","):
            if part.endswith(".tar") and not any(c in part for c in _GLOB):
                urls.append(part)
                continue
            fs, path = fsspec.core.url_to_fs(part)
            try:
                found = fs.glob(path) if not _is_directory_spec(part) else fs.ls(path, detail=False)
            except FileNotFoundError as error:
                raise ManifestError(f"{part}: not found") from error
            except Exception as error:
                raise RemoteShardError(f"{part}: listing failed ({type(error).__name__}: {error})") \
                    from error
            urls.extend(sorted(fs.unstrip_protocol(f) if not is_remote(f) else f
                               for f in found if str(f).endswith(".tar")))
    if not urls:
        raise ManifestError(f"{spec}: no shards match")
    return urls


def _fetch_manifest(directory_url: str) -> RemoteShardManifest | None:
    """The manifest stored in a remote corpus directory, or ``None`` when it has none."""
    import fsspec

    base = directory_url.rstrip("/")
    fs, path = fsspec.core.url_to_fs(base + "/" + MANIFEST_NAME)
    try:
        record = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except Exception as error:
        raise RemoteShardError(f"{base}/{MANIFEST_NAME}: fetch failed ({type(error).__name__}: "
                               f"{error})") from error
    rows_url = base + "/" + ROWS_NAME
    try:
        rows_fs, rows_path = fsspec.core.url_to_fs(rows_url)
        with np.load(io.BytesIO(rows_fs.cat_file(rows_path))) as rows:
            offsets, hashes = rows["offsets_bytes"], rows["key_hashes"]
        shards = record["shards"]
    except (OSError, ValueError, KeyError) as error:
        raise ManifestError(f"{base}/{MANIFEST_NAME}: unreadable manifest ({error})") from error
    paths = [base + "/" + str(s["path"]).replace("\\", "/") for s in shards]
    manifest = RemoteShardManifest.from_record(paths, shards, offsets, hashes, rows_url)
    assert isinstance(manifest, RemoteShardManifest)
    return manifest


def remote_manifest(spec: str | Sequence[str], show_progress: bool = False) -> RemoteShardManifest:
    """The manifest of remote shards: the corpus directory's own ``manifest.json`` when the spec
    is one directory that has it, otherwise built by fetching every listed shard into the cache
    (prefetching ahead) and scanning it."""
    from tqdm import tqdm

    if isinstance(spec, str) and "," not in spec and "{" not in spec and _is_directory_spec(spec):
        stored = _fetch_manifest(spec)
        if stored is not None:
            return stored
    urls = expand_remote_spec(spec)
    cache = shard_cache()
    parts: list[ShardManifest] = []
    sizes: list[int] = []
    for index, url in enumerate(tqdm(urls, desc="fetch and scan shards", unit="shard",
                                     disable=not show_progress)):
        # Scanned right after its fetch: a cache smaller than the corpus may evict it later.
        local = cache.local_path(url, urls[index + 1:index + 1 + cache.config.prefetch_shards])
        parts.append(ShardManifest.build([local]))
        sizes.append(os.path.getsize(local))
    counts = np.concatenate([p.counts for p in parts])
    return RemoteShardManifest(
        urls, np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts,
        np.concatenate([p.offsets_bytes for p in parts]),
        np.concatenate([p.key_hashes for p in parts]), sizes)
