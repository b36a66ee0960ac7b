"""Remote shards: documents/s streamed from a local HTTP server, cache cold and warm, next to the
same shards read as local files, measured in the same run (ratios matter, rates are noisy).

    python bench/remote_shards.py [--docs 100000] [--shards 20] [--workers 2] [--repeats 3]

The server is Python's ``http.server`` in its own process, bound to 127.0.0.1. *Cold*: an empty
cache directory for each run, so every shard is downloaded while the stream runs (the first one
before anything can be read, the next ones prefetched in the background). *Warm*: the cache
already holds every shard. The manifest (``manifest.json`` and its row table, fetched from the
server) is loaded before the clock starts in both; its fetch time is printed on its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.shards.manifest import ShardManifest, manifest_for  # noqa: E402
from curriculum.shards.remote_cache import ENV_DIRECTORY, ENV_MAX_BYTES, cache_name  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402
from loaders.datamodule import stream_loader  # noqa: E402
from loaders.stream import PackedTextStream, StreamConfig  # noqa: E402


def stream(manifest: ShardManifest, workers: int) -> tuple[int, float]:
    """Stream one epoch of packed batches; (documents, seconds)."""
    config = StreamConfig(batch_size=16, seq_len=128, num_epochs=1, shuffle_shards=False)
    loader = stream_loader(PackedTextStream(manifest, config), num_workers=workers)
    started = time.perf_counter()
    tokens = 0
    for batch in loader:
        tokens += batch["token_rows"].size
    return manifest.num_rows, time.perf_counter() - started


def cold(manifest: ShardManifest, cache: Path, workers: int) -> tuple[int, float]:
    """Stream with an empty cache."""
    shutil.rmtree(cache, ignore_errors=True)
    return stream(manifest, workers)


def warm(manifest: ShardManifest, cache: Path, workers: int) -> tuple[int, float]:
    """Stream with every shard already cached (filled, untimed, when it is not)."""
    if not all((cache / cache_name(url)).is_file() for url in manifest.shard_paths):
        stream(manifest, workers)
    return stream(manifest, workers)


def start_server(directory: str) -> tuple[subprocess.Popen, str]:
    """``python -m http.server`` on a free localhost port; waits until it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
         directory], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/manifest.json", timeout=1).read()
            return server, base
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the HTTP server did not start")


def main() -> None:
    """Interleave local, cold and warm runs; print medians and the ratios to local."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_synthetic_corpus(corpus, num_docs=args.docs, num_shards=args.shards, seed=0)
        local = ShardManifest.load(corpus)
        corpus_bytes = sum(os.path.getsize(p) for p in local.shard_paths)
        server, base = start_server(str(corpus))
        cache = Path(tmp) / "cache"
        os.environ[ENV_DIRECTORY] = str(cache)
        os.environ[ENV_MAX_BYTES] = str(2 * corpus_bytes)
        try:
            started = time.perf_counter()
            remote = manifest_for(base + "/")
            manifest_s = time.perf_counter() - started
            rates: dict[str, list[float]] = {"local files": [], "remote, cold cache": [],
                                             "remote, warm cache": []}
            runs = {"local files": lambda: stream(local, args.workers),
                    "remote, cold cache": lambda: cold(remote, cache, args.workers),
                    "remote, warm cache": lambda: warm(remote, cache, args.workers)}
            rates: dict[str, list[float]] = {name: [] for name in runs}
            for repeat in range(args.repeats):
                names = list(runs)
                # The order turns each repeat, so no configuration always runs first.
                for name in names[repeat % 3:] + names[:repeat % 3]:
                    docs, seconds = runs[name]()
                    rates[name].append(docs / seconds)
        finally:
            server.kill()
            server.wait()
    print(f"corpus: {args.docs} docs in {args.shards} shards ({corpus_bytes / 1e6:.1f} MB); "
          f"workers: {args.workers}; repeats: {args.repeats} (medians); manifest fetch "
          f"{manifest_s * 1e3:.0f} ms")
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        print(f"{name:>20}: {rate:10.0f} documents/s (runs {spread})")
    for name in ("remote, cold cache", "remote, warm cache"):
        print(f"ratio {name} / local files: {medians[name] / medians['local files']:.2f}")


if __name__ == "__main__":
    main()
