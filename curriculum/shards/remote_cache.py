"""A bounded local cache of whole remote shards, filled ahead of the reader.

Remote shards (any URL fsspec understands: ``https://``, ``s3://``, ``gs://``, ``hf://``, ...)
are fetched whole into a local directory and then read like local files, so the mmap reader and
seek-resume by byte offset work unchanged. Promises:

- **Never a truncated file.** A download goes to a temporary file in the cache directory; its
  length is checked against the size the back end reports (``Content-Length`` over HTTP) and
  only then renamed into place. A file under its final name is therefore always complete.
- **Bounded.** After each fetch the least recently used shards are removed until the cache holds
  at most ``max_bytes``. A shard used in the last ``eviction_grace_s`` seconds is never removed:
  it may be about to be opened by another worker. A shard already open stays readable after
  removal (POSIX keeps the data until the last handle closes).
- **Ahead of the reader.** :meth:`ShardCache.prefetch` starts background downloads of the next
  shards while the current one is read.
- **Retried, then named.** A failing fetch is retried with exponential backoff; after the last
  attempt a :class:`RemoteShardError` says, in one line, which URL failed and why.

Several DataLoader workers may share one cache directory: a per-shard lock file makes a shard be
downloaded once, and each process makes its own cache object (threads do not survive a fork).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ENV_DIRECTORY = "CURRICULUM_SHARD_CACHE"
ENV_MAX_BYTES = "CURRICULUM_SHARD_CACHE_BYTES"
ENV_PREFETCH = "CURRICULUM_SHARD_PREFETCH"
EVICTION_GRACE_S = 5.0
"""A shard touched this recently is kept even over the size limit (a reader may be opening it)."""
_PART = ".part"
_LOCK = ".lock"


class RemoteShardError(OSError):
    """A remote shard that could not be fetched; the message names the URL and the cause."""


@dataclass
class CacheConfig:
    """Where remote shards are cached and how they are fetched."""

    directory: Path = field(default_factory=lambda: Path(
        os.environ.get(ENV_DIRECTORY) or Path.home() / ".cache" / "curriculum-loader" / "shards"))
    """Local directory of the cache (``$CURRICULUM_SHARD_CACHE``)."""
    max_bytes: int = field(default_factory=lambda: int(float(os.environ.get(ENV_MAX_BYTES, 50e9))))
    """Size limit of the cache in bytes (``$CURRICULUM_SHARD_CACHE_BYTES``, default 50 GB)."""
    prefetch_shards: int = field(default_factory=lambda: int(os.environ.get(ENV_PREFETCH, 2)))
    """Shards fetched ahead of the one being read (``$CURRICULUM_SHARD_PREFETCH``)."""
    attempts: int = 4
    """Tries per shard before giving up."""
    backoff_s: float = 0.5
    """Wait before the second try; doubled before each further one."""
    eviction_grace_s: float = EVICTION_GRACE_S
    """Shards used this recently are not evicted."""


def cache_name(url: str) -> str:
    """File name of a URL in the cache: a hash of the whole URL (two back ends may hold equal base
    names) followed by the base name, for people looking into the directory."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    base = url.rstrip("/").rsplit("/", 1)[-1] or "shard"
    return f"{digest}-{base}"


def remote_size_bytes(url: str) -> int | None:
    """Size the back end reports for ``url`` (``None`` when it reports none)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    size = fs.info(path).get("size")
    return int(size) if size is not None else None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class ShardCache:
    """Fetches remote shards into ``config.directory`` and hands out local paths."""

    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.directory = Path(self.config.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.config.prefetch_shards),
                                        thread_name_prefix="shard-prefetch")
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future] = {}
        self._ahead: set[str] = set()  # prefetched, not yet read: kept by eviction
        self._current: Path | None = None  # the shard handed out last: kept by eviction
        self.fetched_bytes = 0
        """Bytes downloaded by this process (for benchmarks and logs)."""

    # -- public -------------------------------------------------------------------------------
    def local_path(self, url: str, upcoming: Iterable[str] = ()) -> str:
        """Local path of ``url``'s complete content, fetching it if needed (waiting for a
        prefetch already under way), and starting prefetches of the first shards of
        ``upcoming``. Raises :class:`RemoteShardError` when the shard cannot be fetched."""
        future = self._submit(url)
        self.prefetch(upcoming)
        path = future.result()
        os.utime(path)  # last use, for LRU eviction
        with self._lock:
            self._ahead.discard(url)
            self._current = Path(path)
        return str(path)

    def prefetch(self, urls: Iterable[str]) -> None:
        """Start background fetches of the first ``prefetch_shards`` of ``urls``."""
        count = self.config.prefetch_shards
        if count <= 0:
            return
        for index, url in enumerate(urls):
            if index >= count:
                break
            self._submit(url)
            with self._lock:
                self._ahead.add(url)

    def cached_path(self, url: str) -> Path:
        """Where ``url`` lives in the cache (whether or not it is there yet)."""
        return self.directory / cache_name(url)

    def cached_bytes(self) -> int:
        """Bytes of complete shards in the cache now."""
        return sum(size for _, _, size in self._entries())

    def close(self) -> None:
        """Stop the prefetch threads (downloads under way finish first)."""
        self._pool.shutdown(wait=True)

    # -- fetching -----------------------------------------------------------------------------
    def _submit(self, url: str) -> Future:
        with self._lock:
            future = self._in_flight.get(url)
            if future is not None and (not future.done() or (
                    future.exception() is None and Path(future.result()).is_file())):
                return future  # under way, or done and still cached (a failure is retried)
            if self.cached_path(url).is_file():
                future = Future()
                future.set_result(self.cached_path(url))
            else:
                future = self._pool.submit(self._fetch, url)
            self._in_flight[url] = future
            return future

    def _fetch(self, url: str) -> Path:
        final = self.cached_path(url)
        with self._file_lock(final.name + _LOCK):
            if final.is_file():  # another process fetched it while we waited for the lock
                return final
            error: BaseException | None = None
            for attempt in range(max(1, self.config.attempts)):
                if attempt:
                    time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
                try:
                    self._download(url, final)
                    break
                except FileNotFoundError as missing:  # retrying cannot make it appear
                    raise RemoteShardError(f"{url}: not found") from missing
                except Exception as failure:  # back ends raise many types; all are retried
                    error = failure
            else:
                assert error is not None
                raise RemoteShardError(f"{url}: fetch failed after {self.config.attempts} "
                                       f"attempts ({_one_line(error)})") from error
        self._evict(keep=final)
        return final

    def _download(self, url: str, final: Path) -> None:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url)
        expected = fs.info(path).get("size")
        part = final.with_name(f"{final.name}.{os.getpid()}.{threading.get_ident()}{_PART}")
        try:
            fs.get_file(path, str(part))
            got = part.stat().st_size
            if expected is not None and got != int(expected):
                raise OSError(f"truncated download: {got} of {int(expected)} bytes")
            os.replace(part, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        self.fetched_bytes += final.stat().st_size

    # -- eviction -----------------------------------------------------------------------------
    def _entries(self) -> Iterator[tuple[Path, float, int]]:
        for entry in os.scandir(self.directory):
            if entry.name.endswith((_PART, _LOCK)) or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                yield Path(entry.path), stat.st_mtime, stat.st_size

    def _evict(self, keep: Path) -> None:
        """Remove least recently used shards until the cache fits ``max_bytes``."""
        with self._file_lock(".evict" + _LOCK):
            entries = sorted(self._entries(), key=lambda e: e[1])
            total = sum(size for _, _, size in entries)
            recent = time.time() - self.config.eviction_grace_s
            with self._lock:
                pinned = {self.cached_path(url) for url in self._ahead} | {self._current}
            for path, used, size in entries:
                if total <= self.config.max_bytes:
                    break
                if path == keep or used >= recent or path in pinned:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    # Its lock goes too; a fetch racing on the old lock only downloads it twice.
                    path.with_name(path.name + _LOCK).unlink()
                total -= size
            with self._lock:  # forget evicted shards so that a later read fetches them again
                for url, future in list(self._in_flight.items()):
                    if future.done() and future.exception() is None and not Path(
                            future.result()).is_file():
                        del self._in_flight[url]

    @contextlib.contextmanager
    def _file_lock(self, name: str) -> Iterator[None]:
        with open(self.directory / name, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_caches: dict[tuple[int, str], ShardCache] = {}
_caches_lock = threading.Lock()


def shard_cache() -> ShardCache:
    """This process's cache for the configuration in the environment (one per process, made on
    first use: a forked DataLoader worker gets its own threads)."""
    config = CacheConfig()
    key = (os.getpid(), str(config.directory))
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = ShardCache(config)
        return cache


def configure_shard_cache(directory: str | Path | None = None, max_bytes: int | None = None,
                          prefetch_shards: int | None = None) -> None:
    """Set the cache used for remote shards, through the environment so that DataLoader workers
    (forked or spawned) use the same one."""
    if directory is not None:
        os.environ[ENV_DIRECTORY] = str(directory)
    if max_bytes is not None:
        os.environ[ENV_MAX_BYTES] = str(int(max_bytes))
    if prefetch_shards is not None:
        os.environ[ENV_PREFETCH] = str(int(prefetch_shards))
    with _caches_lock:
        for key in [k for k in _caches if k[0] == os.getpid()]:
            del _caches[key]
