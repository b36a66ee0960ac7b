"""Scale on paper, checked by simulation: the numbers of ``docs/scale.md`` for a 1B-document
corpus on 64 GPUs, from the store's and ledger's byte layouts, with the per-row costs measured
here on synthetic stores and extrapolated.

    python bench/scale_check.py                   # measure (a few minutes on 2 cores), print
    python bench/scale_check.py --quick           # small sizes

Measured here, in one run:

1. per-row read latency of ``.affinity`` + ``.attribution`` (256 random rows) in a spawned
   worker, on a synthetic store of ``--rows`` rows (10M) and of a tenth of it: pages resident,
   and cold (the table files' pages dropped from the page cache with ``posix_fadvise``), so the
   extrapolation says what happens when the tables do not fit a node's memory;
2. memory of ``--workers`` workers that each read the whole table (PSS, RSS, anonymous);
3. the kNN search cost per query of an IVF-PQ index at a fixed number of vectors per list, at
   two index sizes: the cost follows the vectors scanned (nprobe x list length), not the total;
4. the bytes that ``all_gather_object`` moves per rank for one step's attribution scores (the
   pickled ``(rows, scores)`` tuple of the attribution callback);
5. ledger bytes per record (the on-disk dtype).

Then the paper numbers for ``--docs`` documents on ``--gpus`` GPUs are printed from them.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning (set before FAISS loads OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.ledger.records import RECORD_DTYPE  # noqa: E402
from curriculum.store import StoreReader  # noqa: E402
from curriculum.store.attribution import FILES as ATTRIBUTION_FILES  # noqa: E402
from curriculum.store.meta import AFFINITY_FILE  # noqa: E402


def _store_bench():
    """bench/store_bench.py as a module (its synthetic table store and memory probe); importable
    by name so that spawned workers find its functions too."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return importlib.import_module("store_bench")


def drop_from_page_cache(store: Path) -> None:
    """Evict the table files' pages (only theirs: other processes' caches are left alone)."""
    for name in (AFFINITY_FILE, *ATTRIBUTION_FILES):
        fd = os.open(store / name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _latency_worker(reader: StoreReader, batches: int, queue: multiprocessing.Queue) -> None:
    rng = np.random.default_rng()
    timings = []
    for _ in range(batches):
        rows = rng.integers(0, reader.num_rows, size=256)
        started = time.perf_counter()
        reader.affinity(rows)
        reader.attribution(rows)
        timings.append((time.perf_counter() - started) / 256 * 1e6)
    queue.put((float(np.median(timings)), float(np.percentile(timings, 99))))


def read_latency(store: Path, batches: int, cold: bool) -> tuple[float, float]:
    """(median, p99) microseconds per row, in a spawned worker; ``cold``: pages dropped first."""
    if cold:
        drop_from_page_cache(store)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_latency_worker, args=(StoreReader(store), batches, queue))
    worker.start()
    result = queue.get(timeout=900)
    worker.join()
    return result


def knn_cost(total_vectors: int, per_list: int, dim: int, nprobe: int, queries: int) -> float:
    """Microseconds per query of an IVF-PQ search (coarse lists given, as the store keeps them)
    over ``total_vectors`` with about ``per_list`` vectors in each list."""
    import faiss

    from curriculum.store.estimate import KnnEstimator

    rng = np.random.default_rng(0)
    nlist = max(1, total_vectors // per_list)
    centres = rng.standard_normal((nlist, dim)).astype(np.float32)

    def vectors(count: int, seed: int) -> np.ndarray:
        local = np.random.default_rng(seed)
        points = centres[local.integers(0, nlist, count)] + 0.3 * local.standard_normal(
            (count, dim)).astype(np.float32)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    # 4-bit fast-scan PQ: FAISS's fastest CPU IVF-PQ; one core, so the cost is per core.
    factory = f"IVF{nlist},PQ{dim // 2}x4fs"
    faiss.omp_set_num_threads(1)
    estimator = KnnEstimator(dim, factory, nprobe=nprobe)
    estimator.train(vectors(max(40 * nlist, 20_000), 1))
    for start in range(0, total_vectors, 500_000):
        count = min(500_000, total_vectors - start)
        estimator.add(np.arange(start, start + count), vectors(count, 100 + start))
    probe = vectors(queries, 7)
    _, lists = estimator.coarse_lists(probe, nprobe)
    best = float("inf")
    for _ in range(3):  # the fastest of three: interference on a shared machine only adds time
        started = time.perf_counter()
        estimator.search(probe, 10, lists)
        best = min(best, time.perf_counter() - started)
    return best / queries * 1e6


def gather_bytes(rows_per_rank: int, behaviors: int) -> int:
    """Pickled size of one rank's ``(rows, scores)``, what ``all_gather_object`` sends."""
    rows = np.arange(rows_per_rank, dtype=np.int64) * 1_000_003
    scores = np.random.default_rng(0).standard_normal((rows_per_rank, behaviors)).astype(np.float32)
    return len(pickle.dumps((rows, scores)))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Everything measured here (see the module docstring)."""
    bench = _store_bench()
    results: dict[str, float] = {"pss_over_table": float("nan"), "anonymous_mib": float("nan")}
    for rows in (args.rows // 10, args.rows) if "read" in args.sections else ():
        store = workdir / f"store-{rows}"
        table_bytes = bench.make_table_store(store, rows)
        results[f"table_bytes_{rows}"] = table_bytes
        for cold in (False, True):
            median, p99 = read_latency(store, args.read_batches, cold)
            label = "cold" if cold else "warm"
            results[f"read_us_{label}_{rows}"] = median
            results[f"read_us_p99_{label}_{rows}"] = p99
            print(f"[read] {rows:>11,} rows, {label}: {median:6.2f} us/row median, "
                  f"{p99:7.2f} p99", flush=True)
        if rows == args.rows:
            memory_args = argparse.Namespace(workers=args.workers, table_rows=rows)
            results.update(bench.bench_memory(store, table_bytes, memory_args))
        shutil.rmtree(store, ignore_errors=True)
    for total in (args.knn_rows // 4, args.knn_rows) if "knn" in args.sections else ():
        cost = knn_cost(total, args.per_list, args.knn_dim, args.nprobe, args.knn_queries)
        results[f"knn_us_per_query_{total}"] = cost
        print(f"[knn] IVF-PQ fast-scan, dim {args.knn_dim}, {total:>10,} vectors, "
              f"~{args.per_list} per list, nprobe "
              f"{args.nprobe}: {cost:7.1f} us/query on one core", flush=True)
    results["gather_bytes_per_rank"] = gather_bytes(args.rows_per_rank_step, args.behaviors)
    results["ledger_bytes_per_record"] = RECORD_DTYPE.itemsize
    return results


def paper(args: argparse.Namespace, measured: dict[str, float]) -> None:
    """The 1B-document, 64-GPU numbers from the byte layouts and the measured costs."""
    n, k, dim, gib = args.docs, args.behaviors, args.dim, 2**30
    nodes = args.gpus // args.gpus_per_node
    sizes = {
        "embeddings (float16)": n * dim * 2,
        "IVF-PQ index (PQ32 codes + int64 ids)": n * (32 + 8),
        "coarse lists (4 x int32)": n * 16,
        "affinity (float32 x K)": n * 4 * k,
        "attribution (sum f64, count u32, estimate f32 x K, seq u64)": n * (16 * k + 8),
        "key lookup + manifest rows (4 x 8 B)": n * 32,
    }
    print(f"\n{n:,} documents, K={k} behaviors, dim {dim}, {args.gpus} GPUs on {nodes} nodes")
    for name, size in sizes.items():
        print(f"  {name:<62}{size / gib:10,.0f} GiB")
    print(f"  {'total':<62}{sum(sizes.values()) / gib:10,.0f} GiB")
    hot = sizes["affinity (float32 x K)"] + sizes[
        "attribution (sum f64, count u32, estimate f32 x K, seq u64)"]
    workers = args.gpus_per_node * args.workers_per_gpu
    ratio = measured.get("table_bytes_" + str(args.rows), float("nan")) / args.rows
    print(f"  tables read by workers per node (page cache, shared): {hot / gib:,.0f} GiB "
          f"(check: {ratio:.0f} B/row measured layout); per worker PSS "
          f"{hot / workers / gib:,.1f} GiB of {workers} workers (measured PSS/table: "
          f"{measured['pss_over_table']:.2f}), private {measured['anonymous_mib']:.0f} MiB")
    print(f"  per worker, the manifest's row arrays (offsets + key hashes, 16 B/row, copied to "
          f"each spawned worker): {n * 16 / gib:,.0f} GiB")
    tokens_per_record = args.tokens_per_doc / (1 + 2 * args.deferred_fraction)
    print(f"  ledger: {measured['ledger_bytes_per_record']} B/record; "
          f"{1e9 / tokens_per_record * measured['ledger_bytes_per_record'] / 1e6:,.0f} MB per "
          f"billion tokens at {args.tokens_per_doc} tokens/doc, {args.deferred_fraction:.0%} "
          f"deferred (defer + release + emit)")
    sent = measured["gather_bytes_per_rank"]
    print(f"  all_gather of attribution per step: {sent:,} B sent per rank "
          f"({args.rows_per_rank_step} rows), {sent * args.gpus / 1024:,.0f} KiB received per "
          f"rank, {sent * args.gpus * args.gpus / 2**20:,.0f} MiB over the job")
    per_query = measured.get(f"knn_us_per_query_{args.knn_rows}", float("nan"))
    full = n * per_query / 1e6 / 3600
    window = args.gpus * args.rows_per_rank_step * args.refresh_every_steps
    print(f"  kNN refresh: {per_query:.0f} us/query/core at ~{args.per_list} vectors per list "
          f"(nlist {n // args.per_list:,}); all {n:,} rows: {full:,.0f} core-hours; the rows "
          f"read in the next {args.refresh_every_steps} steps ({window:,}): "
          f"{window * per_query / 1e6:,.1f} core-seconds per refresh")


def main() -> None:
    """Measure, then print the paper numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default="read,knn", help="what to measure: read, knn")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--read-batches", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--knn-rows", type=int, default=2_000_000)
    parser.add_argument("--knn-dim", type=int, default=128,
                        help="dimension of the kNN vectors (codes: dim / 2 x 4 bits = 32 B at 128)")
    parser.add_argument("--knn-queries", type=int, default=2000)
    parser.add_argument("--per-list", type=int, default=4000)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--docs", type=int, default=1_000_000_000)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--workers-per-gpu", type=int, default=4)
    parser.add_argument("--behaviors", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--tokens-per-doc", type=int, default=1000)
    parser.add_argument("--deferred-fraction", type=float, default=0.1)
    parser.add_argument("--rows-per-rank-step", type=int, default=24,
                        help="documents in one rank's batch (8 x 2048 tokens, ~1000 per doc)")
    parser.add_argument("--refresh-every-steps", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.read_batches, args.knn_rows, args.knn_queries = 200_000, 200, 200_000, 500
    with tempfile.TemporaryDirectory(prefix="scale-check-") as tmp:
        measured = measure(args, Path(tmp))
    paper(args, measured)


if __name__ == "__main__":
    main()
