"""Resident memory of DataLoader workers over a long epoch with the values_first policy.

    python bench/worker_memory.py [--docs 40000] [--workers 2]

Samples each worker's RSS (from /proc) every 50 batches and prints the first and last samples
and the growth per 10,000 rows; flat memory means no per-row state accumulates in workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.shards.manifest import ShardManifest  # noqa: E402
from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402
from loaders.curriculum_stream import CurriculumStream  # noqa: E402
from loaders.datamodule import stream_loader  # noqa: E402
from loaders.policy_stage import CurriculumStreamConfig, StageWiring  # noqa: E402
from loaders.stream import StreamConfig  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_pids() -> list[int]:
    """Child processes of this process (the DataLoader workers)."""
    me = os.getpid()
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().split()[3]) == me:
                    children.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(children)


def main() -> None:
    """Stream one epoch and sample worker memory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_corpus(tmp, num_docs=args.docs, num_shards=8, seed=0)
        build_store(tmp, Path(tmp) / "probes", Path(tmp) / "store")
        manifest = ShardManifest.load(tmp)
        stream = CurriculumStream(manifest, StreamConfig(batch_size=16, seq_len=128, num_epochs=1),
                                  CurriculumStreamConfig(policy="values_first",
                                                         store=str(Path(tmp) / "store")),
                                  wiring=StageWiring(spool_dir=str(Path(tmp) / "spool")))
        samples: list[tuple[int, list[float]]] = []
        rows = 0
        for index, batch in enumerate(stream_loader(stream, num_workers=args.workers)):
            rows += len(batch["fates"])
            if index % 50 == 0:
                samples.append((rows, [rss_mb(p) for p in worker_pids()]))
    first_rows, first = samples[1] if len(samples) > 1 else samples[0]
    last_rows, last = samples[-1]
    print(f"corpus: {args.docs} docs; workers: {args.workers}; samples: {len(samples)}")
    print(f"worker RSS at {first_rows:>6} rows: " + ", ".join(f"{m:.1f} MB" for m in first))
    print(f"worker RSS at {last_rows:>6} rows: " + ", ".join(f"{m:.1f} MB" for m in last))
    growth = [(b - a) / max(1, last_rows - first_rows) * 1e4 for a, b in zip(first, last, strict=False)]
    print("growth per 10,000 rows: " + ", ".join(f"{g:+.2f} MB" for g in growth))


if __name__ == "__main__":
    main()
