"""Indexing with Ray next to the local engine: the same corpus, the same store, timed in the
same run, Ray's start-up counted in its time (overhead measured, not hidden).

    python bench/ray_index.py [--docs 200000] [--shards 40] [--cpus 2] [--repeats 1]

Prints the local engine's time, the Ray engine's time split into start-up (``ray.init`` of a
local Ray with ``--cpus`` CPUs) and build, the ratio Ray / local (medians over ``--repeats``
pairs, the order alternating so that neither engine always runs first), and whether the two
stores' files are byte-identical.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402


def timed_build(corpus: Path, out: Path, **engine: object) -> float:
    """Seconds to build a store (opened and closed) from ``corpus`` into ``out``."""
    started = time.perf_counter()
    build_store(corpus, corpus / "probes", out, **engine).close()
    return time.perf_counter() - started


def same_files(first: Path, second: Path) -> bool:
    """Whether two store directories hold the same files with the same bytes."""
    names = sorted(p.name for p in first.iterdir() if p.is_file())
    if names != sorted(p.name for p in second.iterdir() if p.is_file()):
        return False
    return all((first / n).read_bytes() == (second / n).read_bytes() for n in names)


def main() -> None:
    """Build once with each engine and print times and the ratio."""
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        write_synthetic_corpus(corpus, num_docs=args.docs, num_shards=args.shards, seed=0)
        local_runs, startup_runs, build_runs = [], [], []
        for repeat in range(args.repeats):
            for engine in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                out = Path(tmp) / engine
                shutil.rmtree(out, ignore_errors=True)
                if engine == "local":
                    local_runs.append(timed_build(corpus, out))
                    continue
                started = time.perf_counter()
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
                startup_runs.append(time.perf_counter() - started)
                try:
                    build_runs.append(timed_build(corpus, out, engine="ray"))
                finally:
                    ray.shutdown()
        identical = same_files(Path(tmp) / "local", Path(tmp) / "ray")
    local_s, startup_s = statistics.median(local_runs), statistics.median(startup_runs)
    build_s = statistics.median(build_runs)
    ratios = [(a + b) / c for a, b, c in zip(startup_runs, build_runs, local_runs, strict=True)]
    ray_s = startup_s + build_s
    print(f"per pair, ray / local (start-up included): {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"corpus: {args.docs} docs in {args.shards} shards; Ray on {args.cpus} local CPUs")
    print(f"local engine: {local_s:7.1f} s ({args.docs / local_s:.0f} docs/s)")
    print(f"  ray engine: {ray_s:7.1f} s = start-up {startup_s:.1f} s + build {build_s:.1f} s "
          f"({args.docs / ray_s:.0f} docs/s)")
    print(f"ratio ray / local (time, start-up included): {ray_s / local_s:.2f}")
    print(f"stores byte-identical: {identical}")


if __name__ == "__main__":
    main()
