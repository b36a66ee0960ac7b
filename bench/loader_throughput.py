"""Loader throughput: our streaming loader next to a bare webdataset pipeline, same shards,
same number of workers, measured in the same run (ratios matter, absolute rates are noisy).

    python bench/loader_throughput.py [--docs 20000] [--shards 8] [--workers 2] [--repeats 3]

Prints documents/s and tokens/s of each and the ratio ours / bare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.shards.manifest import ShardManifest  # noqa: E402
from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402
from loaders.curriculum_stream import CurriculumStream  # noqa: E402
from loaders.datamodule import stream_loader  # noqa: E402
from loaders.packing import keep_as_is  # noqa: E402
from loaders.policy_stage import CurriculumStreamConfig  # noqa: E402
from loaders.stream import PackedTextStream, StreamConfig  # noqa: E402


def bare_webdataset(urls: list[str], workers: int) -> tuple[int, int, float]:
    """webdataset reads, decodes and byte-tokenizes every document and hands the token arrays
    to the training process in batches of 5 documents (about the 2,048 tokens of one of our
    batches), so both pipelines deliver the same payload; no packing, no row ids."""

    def tokens(sample: dict) -> np.ndarray:
        return np.frombuffer(sample["txt"].encode("utf-8"), dtype=np.uint8).astype(np.int64)

    dataset = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node,
                              workersplitter=wds.split_by_worker, empty_check=False)
               .decode().map(tokens).batched(5, collation_fn=list, partial=True))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=keep_as_is)
    started = time.perf_counter()
    docs = total = 0
    for batch in loader:
        docs += len(batch)
        total += sum(len(t) for t in batch)
    return docs, total, time.perf_counter() - started


def ours(manifest: ShardManifest, workers: int) -> tuple[int, int, float]:
    """Our loader: manifest rows, decode with skip accounting, tokenize, pack into batches."""
    config = StreamConfig(batch_size=16, seq_len=128, num_epochs=1, shuffle_shards=False)
    loader = stream_loader(PackedTextStream(manifest, config),
                                num_workers=workers)
    started = time.perf_counter()
    total = 0
    for batch in loader:  # the consumer does as little as the baseline's
        total += batch["token_rows"].size
    # One epoch without a policy delivers every row exactly once (the tests prove it).
    return manifest.num_rows, total, time.perf_counter() - started


def ours_with_policy(manifest: ShardManifest, store: str, workers: int) -> tuple[int, int, float]:
    """Our loader with the values_first policy deciding every document from the store."""
    config = StreamConfig(batch_size=16, seq_len=128, num_epochs=1, shuffle_shards=False)
    curriculum = CurriculumStreamConfig(policy="values_first", store=store)
    loader = stream_loader(CurriculumStream(manifest, config, curriculum), num_workers=workers)
    started = time.perf_counter()
    total = decided = 0
    for batch in loader:
        fates = batch["fates"]
        decided += int((fates.row >= 0).sum())  # every fate: emitted, deferred, dropped, released
        total += batch["token_rows"].size
    return decided, total, time.perf_counter() - started


def main() -> None:
    """Run both pipelines interleaved and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_corpus(tmp, num_docs=args.docs, num_shards=args.shards, seed=0)
        manifest = ShardManifest.load(tmp)
        store = str(Path(tmp) / "store")
        build_store(tmp, Path(tmp) / "probes", store)
        results: dict[str, list[tuple[float, float]]] = {
            "bare webdataset": [], "ours": [], "ours+values_first": []}
        for _ in range(args.repeats):
            for name, run in (("bare webdataset", lambda: bare_webdataset(manifest.shard_paths,
                                                                          args.workers)),
                              ("ours", lambda: ours(manifest, args.workers)),
                              ("ours+values_first",
                               lambda: ours_with_policy(manifest, store, args.workers))):
                docs, tokens, seconds = run()
                results[name].append((docs / seconds, tokens / seconds))
    print(f"corpus: {args.docs} docs in {args.shards} shards; workers: {args.workers}; "
          f"repeats: {args.repeats} (medians)")
    medians = {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
               for name, runs in results.items()}
    for name, (docs_per_s, tokens_per_s) in medians.items():
        print(f"{name:>18}: {docs_per_s:10.0f} documents/s {tokens_per_s:12.0f} tokens/s")
    for name in ("ours", "ours+values_first"):
        ratio = medians[name][0] / medians["bare webdataset"][0]
        print(f"ratio {name} / bare webdataset (documents/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
