"""Time to the first batch after resuming deep inside a large shard, against resuming at its start.

    python bench/resume_seek.py [--shard-mb 100] [--repeats 5]

Writes one shard of about ``--shard-mb`` megabytes, then times ``PackedTextStream`` from a loader
state positioned at 0% and at 90% of the shard (the reader seeks to the sample's byte offset from
the manifest), and, for reference, a reader that must scan from the start to find its place.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.shards.manifest import ShardManifest  # noqa: E402
from curriculum.shards.tar_samples import iter_raw_samples  # noqa: E402
from curriculum.shards.writer import write_shards  # noqa: E402
from curriculum.synth import generate_documents  # noqa: E402
from loaders.stream import PackedTextStream, StreamConfig  # noqa: E402


def first_batch_seconds(manifest: ShardManifest, ordinal: int) -> float:
    """Seconds from loading a state at ``ordinal`` to holding the first batch."""
    config = StreamConfig(batch_size=8, seq_len=128, num_epochs=1, shuffle_shards=False)
    stream = PackedTextStream(manifest, config)
    started = time.perf_counter()
    stream.load_state_dict({"epoch": 0, "cursor": 0, "ordinal": ordinal})
    next(iter(stream))
    return time.perf_counter() - started


def scan_seconds(manifest: ShardManifest, ordinal: int) -> float:
    """Seconds for a reader without offsets to reach ``ordinal`` by reading from the start."""
    started = time.perf_counter()
    for sample in iter_raw_samples(manifest.shard_paths[0]):
        if sample.ordinal >= ordinal:
            break
    return time.perf_counter() - started


def main() -> None:
    """Write the shard, time both positions, print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard-mb", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # About 3.8 kB per sample on disk: 2 kB of text plus the tar headers (ustar and pax).
        docs = generate_documents(int(args.shard_mb * 1e6 / 3800 * 5) + 5, seed=0)

        def samples():
            texts = []
            for doc in docs:
                texts.append(doc.text)
                if len(texts) == 5:  # about 2 kB per sample
                    yield {"__key__": doc.key, "txt": " ".join(texts)}
                    texts = []

        _, manifest = write_shards(samples(), tmp, max_docs_per_shard=10**9,
                                   max_bytes_per_shard=args.shard_mb * 2e6)
        size_mb = Path(manifest.shard_paths[0]).stat().st_size / 1e6
        deep = int(0.9 * manifest.num_rows)
        at_start = [first_batch_seconds(manifest, 0) for _ in range(args.repeats)]
        at_90 = [first_batch_seconds(manifest, deep) for _ in range(args.repeats)]
        scan = [scan_seconds(manifest, deep) for _ in range(max(1, args.repeats // 2))]
    start_s, deep_s = statistics.median(at_start), statistics.median(at_90)
    print(f"shard: {size_mb:.0f} MB, {manifest.num_rows} samples; repeats: {args.repeats} (medians)")
    print(f"first batch after resuming at  0%: {start_s * 1e3:8.1f} ms")
    print(f"first batch after resuming at 90%: {deep_s * 1e3:8.1f} ms  (seek to the recorded offset)")
    print(f"reaching 90% by scanning instead : {statistics.median(scan) * 1e3:8.1f} ms")
    print(f"ratio 90% / 0%: {deep_s / start_s:.2f}")


if __name__ == "__main__":
    main()
