"""Curation with Ray next to the local engine: the same corpus, principles and probe judge, the
same outputs, timed in the same run, Ray's start-up counted in its time (overhead measured, not
hidden).

    python bench/ray_curate.py [--docs 100000] [--shards 20] [--cpus 2] [--repeats 2]

The probe judge is the cheapest judge there is (a table read per document), so this measures
what the Ray engine costs over the local one: shipping each chunk's texts to an actor and its
outcomes back. With a judge that is a model (``hf:`` on a GPU per worker) or a server per node,
the judging dominates and the workers add throughput; that needs a cluster and is not measured
here. Prints both engines' times and documents/s, the ratio Ray / local (medians over
``--repeats`` pairs, the order alternating), and whether the outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.curation import JudgeSpec, curate, load_principles  # noqa: E402
from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402

PRINCIPLES = Path(__file__).resolve().parents[1] / "configs" / "principles"


def outputs(out: Path) -> dict[str, bytes]:
    """The run's output files (shards, ledger, records) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "curation.json"}


def main() -> None:
    """Curate once with each engine per repeat and print times and the ratio."""
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    principles = load_principles(PRINCIPLES)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = write_synthetic_corpus(work / "corpus", num_docs=args.docs,
                                        num_shards=args.shards, seed=0)
        build_store(corpus.out_dir, corpus.probes_dir, work / "store").close()
        spec = JudgeSpec(f"probe:{work / 'store'}")
        local_runs, startup_runs, ray_runs = [], [], []
        for repeat in range(args.repeats):
            for engine in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                out = work / engine
                if engine == "local":
                    local_runs.append(curate(corpus.out_dir, principles, spec, out).wall_s)
                    continue
                started = time.perf_counter()
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
                startup_runs.append(time.perf_counter() - started)
                try:
                    result = curate(corpus.out_dir, principles, spec, out, engine="ray")
                    ray_runs.append(result.wall_s)
                finally:
                    ray.shutdown()
        identical = outputs(work / "local") == outputs(work / "ray")
        counts = result.counts.total
    local_s, startup_s, build_s = (statistics.median(x) for x in (local_runs, startup_runs,
                                                                    ray_runs))
    ratios = [(a + b) / c for a, b, c in zip(startup_runs, ray_runs, local_runs, strict=True)]
    ray_s = startup_s + build_s
    print(f"corpus: {args.docs} docs in {args.shards} shards; probe judge, shipped principles "
          f"({counts}); Ray on {args.cpus} local CPUs")
    print(f"per pair, ray / local (start-up included): {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"local engine: {local_s:7.1f} s ({args.docs / local_s:,.0f} docs/s)")
    print(f"  ray engine: {ray_s:7.1f} s = start-up {startup_s:.1f} s + curation {build_s:.1f} s "
          f"({args.docs / ray_s:,.0f} docs/s; {args.docs / build_s:,.0f} after start-up)")
    print(f"ratio ray / local (time, start-up included): {ray_s / local_s:.2f}")
    print(f"outputs byte-identical: {identical}")


if __name__ == "__main__":
    main()
