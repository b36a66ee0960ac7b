"""Our loader next to its peers on the same documents and the same per-document work.

    python bench/peer_loaders.py [--docs 40000] [--shards 8] [--workers 2] [--rounds 5]
                                 [--only ours,litdata,...]

Systems (every one reads the same synthesized corpus, byte-tokenizes each document and packs the
tokens into 16 x 128 batches with :class:`loaders.packing.Packer` inside its DataLoader workers):

- ``ours``: :class:`~loaders.stream.PackedTextStream` through :func:`~loaders.datamodule.stream_loader`;
- ``ours+values_first``: :class:`~loaders.curriculum_stream.CurriculumStream` deciding every
  document from a FAISS store (fates recorded and carried with the batches);
- ``webdataset``: a bare ``webdataset`` pipeline (decode, tokenize, pack) on the same tar shards;
- ``litdata``: chunks written by ``litdata.optimize``, read by ``StreamingDataset`` in a
  ``StreamingDataLoader``;
- ``mosaic``: MDS shards written by ``streaming.MDSWriter``, read by Mosaic's
  ``StreamingDataset`` (predownload raised to 64 samples per worker).

Conversions to LitData and MDS are timed separately and not counted against them. Each round
runs every system once (the order rotates per round); medians over rounds are printed with
docs/s, tokens/s, CPU seconds per epoch (main process and workers, user + system), and the
workers' proportional set size (PSS, from ``/proc/<pid>/smaps_rollup``: shared pages are split
among the processes sharing them), its peak and its value near the end of the epoch (flat memory
means first and last samples agree). Ratios are to ``ours``. On a loaded machine read the ratios,
not the rates.

The peers are dev-only (``pip install -e ".[peers]"``; Mosaic's ``mosaicml-streaming`` pins
``numpy<2.2`` and ``transformers<5``, so install it with ``--no-deps`` next to its small codec
packages, see README). A system whose package is missing is reported and left out.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.shards.documents import iter_documents  # noqa: E402
from curriculum.shards.manifest import ShardManifest  # noqa: E402
from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402
from loaders.curriculum_stream import CurriculumStream  # noqa: E402
from loaders.datamodule import stream_loader  # noqa: E402
from loaders.packing import Packer, keep_as_is  # noqa: E402
from loaders.policy_stage import CurriculumStreamConfig  # noqa: E402
from loaders.stream import PackedTextStream, StreamConfig  # noqa: E402

BATCH, SEQ, EOS = 16, 128, 256


# -- the per-document work every peer does -----------------------------------------------------
def pack_texts(texts: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Byte-tokenize texts and pack them into 16 x 128 batches (our packer, so the same work);
    the remainder goes out as one padded batch, as ours does. Each batch carries its doc count."""
    packer = Packer(BATCH, SEQ, EOS)
    docs = 0
    for index, text in enumerate(texts):
        packer.add(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64), index)
        docs += 1
        while packer.ready():
            batch = packer.pop()
            batch["docs"] = docs
            docs = 0
            yield batch
    if packer.has_tokens():
        batch = packer.pop_partial()
        batch["docs"] = docs
        yield batch


def first_of_one(items: list[Any]) -> Any:
    """``collate_fn`` for loaders that insist on a batch size: the one packed batch, as is."""
    return items[0]


# -- measuring --------------------------------------------------------------------------------
def pss_mb(pid: int) -> float | None:
    """Proportional set size of a process in MB (``None`` once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_pids() -> list[int]:
    """Processes whose parent is this one (the DataLoader workers)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


class PssSampler:
    """Samples every worker's PSS every ``interval_s`` while an epoch runs (a thread)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.samples: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for pid in child_pids():
                value = pss_mb(pid)
                if value is not None:
                    self.samples.setdefault(pid, []).append(value)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> tuple[float, float, float]:
        """Mean over workers of (peak, sample at 20 % of the epoch, last sample), in MB."""
        tracks = [s for s in self.samples.values() if len(s) >= 2] or list(self.samples.values())
        if not tracks:
            return float("nan"), float("nan"), float("nan")
        return (statistics.mean(max(s) for s in tracks),
                statistics.mean(s[len(s) // 5] for s in tracks),
                statistics.mean(s[-1] for s in tracks))


@dataclass
class Run:
    """One epoch of one system."""

    docs: int
    tokens: int
    seconds: float
    cpu_seconds: float
    pss: tuple[float, float, float]


def cpu_seconds() -> float:
    """User + system seconds of this process and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(batches: Callable[[], Iterable[dict[str, Any]]], docs_of: Callable[[dict], int]) -> Run:
    """Run one epoch of a loader, counting documents and tokens, timing it, sampling PSS."""
    cpu = cpu_seconds()
    with PssSampler() as sampler:
        started = time.perf_counter()
        docs = tokens = 0
        for batch in batches():
            docs += docs_of(batch)
            tokens += batch["token_rows"].size
        seconds = time.perf_counter() - started
    return Run(docs, tokens, seconds, cpu_seconds() - cpu, sampler.summary())


# -- the systems ------------------------------------------------------------------------------
@dataclass
class Corpus:
    """The documents in each system's format."""

    root: Path
    manifest: ShardManifest
    store: str
    workers: int
    litdata_dir: str | None = None
    mds_dir: str | None = None
    conversions: dict[str, float] = field(default_factory=dict)


def shard_texts(path: str, manifest: ShardManifest) -> Iterator[str]:
    """The texts of one shard as our reader decodes them (for the conversions)."""
    shard = manifest.shard_paths.index(path)
    first, count = int(manifest.first_rows[shard]), int(manifest.counts[shard])
    for item in iter_documents(path, first, count):
        text = getattr(item, "text", None)
        if text is not None:
            yield text


def ours(corpus: Corpus) -> Run:
    config = StreamConfig(batch_size=BATCH, seq_len=SEQ, num_epochs=1, shuffle_shards=False)
    stream = PackedTextStream(corpus.manifest, config)
    # One epoch without a policy delivers every row exactly once (the tests prove it).
    run = measure(lambda: stream_loader(stream, num_workers=corpus.workers), lambda b: 0)
    run.docs = corpus.manifest.num_rows
    return run


def ours_values_first(corpus: Corpus) -> Run:
    config = StreamConfig(batch_size=BATCH, seq_len=SEQ, num_epochs=1, shuffle_shards=False)
    curriculum = CurriculumStreamConfig(policy="values_first", store=corpus.store)
    stream = CurriculumStream(corpus.manifest, config, curriculum)
    # Every fate counts as a decided document: emitted, deferred, dropped, released.
    return measure(lambda: stream_loader(stream, num_workers=corpus.workers),
                   lambda b: int((b["fates"].row >= 0).sum()))


class _WdsPack:
    """``compose`` stage of the webdataset pipeline (a class so workers can pickle it)."""

    def __call__(self, samples: Iterable[dict]) -> Iterator[dict[str, Any]]:
        return pack_texts(s["txt"] for s in samples)


def webdataset(corpus: Corpus) -> Run:
    import webdataset as wds

    dataset = (wds.WebDataset(corpus.manifest.shard_paths, shardshuffle=False,
                              workersplitter=wds.split_by_worker, empty_check=False)
               .decode().compose(_WdsPack()))
    return measure(lambda: DataLoader(dataset, batch_size=None, num_workers=corpus.workers,
                                      collate_fn=keep_as_is), lambda b: b["docs"])


def _litdata_fn(path: str, manifest_dir: str = "") -> Iterator[str]:
    yield from shard_texts(path, ShardManifest.load(manifest_dir))


def convert_litdata(corpus: Corpus) -> None:
    import functools

    import litdata

    out = corpus.root / "litdata"
    started = time.perf_counter()
    litdata.optimize(fn=functools.partial(_litdata_fn, manifest_dir=str(corpus.root)),
                     inputs=list(corpus.manifest.shard_paths), output_dir=str(out),
                     chunk_bytes="64MB", num_workers=1, verbose=False)
    corpus.conversions["litdata.optimize"] = time.perf_counter() - started
    corpus.litdata_dir = str(out)


try:  # module level: LitData's loader starts its workers with spawn, which pickles by name
    import litdata as _ld

    class PackedLitData(_ld.StreamingDataset):
        """LitData's dataset with our packing after its own iterator."""

        def __iter__(self) -> Iterator[dict[str, Any]]:
            _ld.StreamingDataset.__iter__(self)

            def texts() -> Iterator[str]:
                while True:
                    try:
                        yield _ld.StreamingDataset.__next__(self)
                    except StopIteration:
                        return
            return pack_texts(texts())
except ImportError:
    _ld = None


def litdata(corpus: Corpus) -> Run:
    dataset = PackedLitData(corpus.litdata_dir, shuffle=False)
    return measure(lambda: _ld.StreamingDataLoader(dataset, batch_size=1, num_workers=corpus.workers,
                                                   collate_fn=first_of_one), lambda b: b["docs"])


def _import_mosaic() -> Any:
    """Mosaic's package imports its torchvision datasets at import time; only its text path is
    used here, so where torchvision is absent (or a CUDA build without its libraries) a stand-in
    of the two names it imports lets ``streaming`` load."""
    import importlib.machinery
    import types

    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        modules = {name: types.ModuleType(name) for name in (
            "torchvision", "torchvision.datasets", "torchvision.transforms",
            "torchvision.transforms.functional")}
        modules["torchvision.datasets"].VisionDataset = type("VisionDataset", (), {})
        modules["torchvision.datasets"].CIFAR10 = None
        modules["torchvision.transforms.functional"].to_tensor = lambda x: x
        for name, module in modules.items():
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
    import streaming

    return streaming


def convert_mds(corpus: Corpus) -> None:
    streaming = _import_mosaic()
    out = corpus.root / "mds"
    started = time.perf_counter()
    with streaming.MDSWriter(out=str(out), columns={"text": "str"}, size_limit=1 << 26) as writer:
        for path in corpus.manifest.shard_paths:
            for text in shard_texts(path, corpus.manifest):
                writer.write({"text": text})
    corpus.conversions["MDSWriter"] = time.perf_counter() - started
    corpus.mds_dir = str(out)


_PACKED_MDS: list[type] = []


def _packed_mds_class(streaming: Any) -> type:
    """Mosaic's dataset with our packing after its own iterator (made once, kept by name)."""
    if not _PACKED_MDS:
        class PackedMDS(streaming.StreamingDataset):
            def __iter__(self) -> Iterator[dict[str, Any]]:
                return pack_texts(s["text"] for s in super().__iter__())

        PackedMDS.__qualname__ = "PackedMDS"
        globals()["PackedMDS"] = PackedMDS
        _PACKED_MDS.append(PackedMDS)
    return _PACKED_MDS[0]


def mosaic(corpus: Corpus) -> Run:
    streaming = _import_mosaic()
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    dataset = _packed_mds_class(streaming)(local=corpus.mds_dir, shuffle=False, batch_size=1,
                                           predownload=64)
    return measure(lambda: DataLoader(dataset, batch_size=None, num_workers=corpus.workers,
                                      collate_fn=keep_as_is), lambda b: b["docs"])


SYSTEMS: dict[str, tuple[Callable[[Corpus], Run], Callable[[Corpus], None] | None, str]] = {
    "ours": (ours, None, ""),
    "ours+values_first": (ours_values_first, None, ""),
    "webdataset": (webdataset, None, "webdataset"),
    "litdata": (litdata, convert_litdata, "litdata"),
    "mosaic": (mosaic, convert_mds, "streaming"),
}


def available(names: list[str]) -> list[str]:
    """The systems whose packages import here (the others are reported and left out)."""
    keep = []
    for name in names:
        module = SYSTEMS[name][2]
        try:
            if module == "streaming":
                _import_mosaic()
            elif module:
                __import__(module)
            keep.append(name)
        except ImportError as error:
            print(f"{name}: left out ({error})")
    return keep


def report(results: dict[str, list[Run]], rounds: int) -> None:
    """Medians per system and ratios to ours."""
    rows = {}
    for name, runs in results.items():
        rows[name] = (statistics.median(r.docs / r.seconds for r in runs),
                      statistics.median(r.tokens / r.seconds for r in runs),
                      statistics.median(r.cpu_seconds for r in runs),
                      statistics.median(r.pss[0] for r in runs),
                      statistics.median(r.pss[1] for r in runs),
                      statistics.median(r.pss[2] for r in runs))
    base = rows.get("ours")
    print(f"\nmedians over {rounds} rounds (ratios to ours; the machine may be loaded: read ratios)")
    print(f"{'system':>18} {'docs/s':>9} {'x ours':>7} {'tokens/s':>10} {'CPU s':>7} {'x ours':>7} "
          f"{'PSS peak':>9} {'x ours':>7} {'PSS@20%':>8} {'PSS end':>8}")
    for name, (docs_s, tokens_s, cpu, peak, early, last) in rows.items():
        rel = (docs_s / base[0], cpu / base[2], peak / base[3]) if base else (float("nan"),) * 3
        print(f"{name:>18} {docs_s:9.0f} {rel[0]:7.2f} {tokens_s:10.0f} {cpu:7.2f} {rel[1]:7.2f} "
              f"{peak:8.1f}M {rel[2]:7.2f} {early:7.1f}M {last:7.1f}M")
    for a, b in (("ours", "litdata"), ("ours+values_first", "litdata"), ("ours", "webdataset")):
        if a in rows and b in rows:
            print(f"{a} / {b}: docs/s {rows[a][0] / rows[b][0]:.2f}, "
                  f"PSS peak {rows[a][3] / rows[b][3]:.2f}")


def main() -> None:
    """Write the corpus, convert it for the peers, run the systems interleaved, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems")
    args = parser.parse_args()
    names = available([n for n in args.only.split(",") if n])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_synthetic_corpus(root, num_docs=args.docs, num_shards=args.shards, seed=0)
        store = str(root / "store")
        if "ours+values_first" in names:
            build_store(root, root / "probes", store)
        corpus = Corpus(root, ShardManifest.load(root), store, args.workers)
        for name in names:
            convert = SYSTEMS[name][1]
            if convert is not None:
                convert(corpus)
        # litdata.optimize switches the process to spawn; every system's workers start the way
        # Linux starts them by default (fork), so none pays for re-importing torch per epoch.
        multiprocessing.set_start_method("fork", force=True)
        print(f"corpus: {args.docs} docs in {args.shards} shards; workers: {args.workers}; "
              f"batches {BATCH} x {SEQ}; conversions (not counted): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in corpus.conversions.items()))
        results: dict[str, list[Run]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            turn = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in turn:
                run = SYSTEMS[name][0](corpus)
                results[name].append(run)
                print(f"round {round_index + 1} {name:>18}: {run.docs / run.seconds:8.0f} docs/s "
                      f"{run.seconds:6.2f} s  CPU {run.cpu_seconds:6.2f} s  PSS peak "
                      f"{run.pss[0]:6.1f} MB", flush=True)
        report(results, args.rounds)


if __name__ == "__main__":
    main()
