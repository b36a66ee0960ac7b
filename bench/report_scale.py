"""Scale of ``curriculum report``: a synthetic run with a 10-million-event ledger and a
1-million-row store, reported in a child process; wall time and peak resident memory printed.

The run is built without training (that would take days at this size): real tar shards (one
1 KiB member per document, written as raw ustar blocks), a manifest, a store directory with every
table ``StoreReader`` opens (affinity, attribution sums and counts for 30% of the rows, kNN
estimates for the rest), a ledger with several epochs of EMIT / DEFER-RELEASE-EMIT / DROP / SKIP
histories and EPOCH_ENDs (so ``ledger --check`` passes), ``metrics.csv`` with probe losses,
stages and the measured fraction, ``config.yaml`` and ``policy.yaml``.

Baseline, measured in the same run on the same files: ``curriculum ledger RUN --check --summary``
(the core's vectorised readers over the same ledger). The report does more (the check, the
per-step mix, the store's distributions and top documents, figures, the page), so the ratio says
what the report costs on top of reading the ledger once.

    python bench/report_scale.py [--events 10000000] [--rows 1000000] [--root /tmp/report-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from curriculum.ledger import RECORD_DTYPE, Fate, write_ledger_meta
from curriculum.shards.manifest import ShardManifest, key_hash
from curriculum.store.attribution import create_attribution_files
from curriculum.store.meta import (
    AFFINITY_FILE,
    EMBEDDINGS_FILE,
    KEY_HASHES_FILE,
    KEY_ROWS_FILE,
    PROBE_BEHAVIORS_FILE,
    PROBE_EMBEDDINGS_FILE,
    SHARD_AFFINITY_FILE,
    StoreMeta,
)
from curriculum.store.tables import create_table

BEHAVIORS = ("deception", "neutral", "situational_awareness", "values")
REASONS = ("filter: deception>=0.8", "filter: near-duplicate", "filter: too short")
DOCS_PER_SHARD = 100_000
MEMBER_BYTES = 1024  # one 512-byte header and one 512-byte data block per document
DOCS_PER_STEP = 64
DIM = 8


def _tar_block_template(name_width: int) -> tuple[np.ndarray, int]:
    """A ustar header for ``d<digits>.txt`` of 400 bytes, checksum field blank, and the base
    checksum without the name's digits."""
    header = np.zeros(512, np.uint8)

    def put(offset: int, text: bytes) -> None:
        header[offset:offset + len(text)] = np.frombuffer(text, np.uint8)

    put(0, b"d" + b"0" * name_width + b".txt")
    put(100, b"0000644\0")
    put(108, b"0000000\0")
    put(116, b"0000000\0")
    put(124, b"%011o\0" % 400)
    put(136, b"%011o\0" % 1_700_000_000)
    put(148, b" " * 8)
    put(156, b"0")
    put(257, b"ustar\0")
    put(263, b"00")
    base = int(header.sum()) - name_width * ord("0")
    return header, base


def write_shards(directory: Path, num_rows: int) -> ShardManifest:
    """Shards of ``num_rows`` documents (``d0000000.txt`` ...) and their manifest."""
    width = 7
    template, base = _tar_block_template(width)
    body = np.frombuffer((b"synthetic document about values, honesty and the world. " * 8)[:400]
                         .ljust(512, b"\0"), np.uint8)
    paths, counts, offsets, keys_hashes = [], [], [], []
    for first in range(0, num_rows, DOCS_PER_SHARD):
        count = min(DOCS_PER_SHARD, num_rows - first)
        rows = np.arange(first, first + count)
        digits = np.zeros((count, width), np.uint8)
        rest = rows.copy()
        for column in range(width - 1, -1, -1):
            digits[:, column] = ord("0") + rest % 10
            rest //= 10
        blocks = np.empty((count, MEMBER_BYTES), np.uint8)
        blocks[:, :512] = template
        blocks[:, 1:1 + width] = digits
        checksum = base + digits.astype(np.int64).sum(axis=1)
        octal = np.zeros((count, 8), np.uint8)
        rest = checksum.copy()
        for column in range(5, -1, -1):
            octal[:, column] = ord("0") + rest % 8
            rest //= 8
        octal[:, 6], octal[:, 7] = 0, ord(" ")
        blocks[:, 148:156] = octal
        blocks[:, 512:] = body
        path = directory / f"shard-{first // DOCS_PER_SHARD:06d}.tar"
        with path.open("wb") as handle:
            handle.write(blocks.tobytes())
            handle.write(b"\0" * 1024)
        paths.append(str(path))
        counts.append(count)
        offsets.append(np.arange(count, dtype=np.int64) * MEMBER_BYTES)
        keys_hashes.append(key_hash([f"d{row:07d}" for row in rows.tolist()]))
    counts_array = np.asarray(counts, np.int64)
    manifest = ShardManifest(paths, np.concatenate([[0], np.cumsum(counts_array)[:-1]]).astype(np.int64),
                             counts_array, np.concatenate(offsets), np.concatenate(keys_hashes))
    manifest.save(directory)
    return manifest


def write_store(store: Path, manifest: ShardManifest, rng: np.random.Generator) -> None:
    """Every table a ``StoreReader`` opens, filled in blocks (never the whole table at once)."""
    store.mkdir(parents=True, exist_ok=True)
    num_rows, k = manifest.num_rows, len(BEHAVIORS)
    manifest.save(store)  # a store keeps its own copy of the manifest, shard paths relative
    order = np.argsort(manifest.key_hashes, kind="stable")
    np.save(store / KEY_HASHES_FILE, manifest.key_hashes[order])
    np.save(store / KEY_ROWS_FILE, order.astype(np.int64))
    np.save(store / SHARD_AFFINITY_FILE, rng.random((manifest.num_shards, k), dtype=np.float32))
    np.save(store / PROBE_BEHAVIORS_FILE, np.repeat(np.arange(k, dtype=np.int32), 4))
    np.save(store / PROBE_EMBEDDINGS_FILE, rng.standard_normal((4 * k, DIM), dtype=np.float32))
    embeddings = create_table(store / EMBEDDINGS_FILE, np.float32, (num_rows, DIM))
    affinity = create_table(store / AFFINITY_FILE, np.float32, (num_rows, k))
    create_attribution_files(store, num_rows, k)
    total = np.load(store / "attribution_sum.npy", mmap_mode="r+")
    count = np.load(store / "attribution_count.npy", mmap_mode="r+")
    estimate = np.load(store / "attribution_estimate.npy", mmap_mode="r+")
    for start in range(0, num_rows, 1 << 18):
        stop = min(start + (1 << 18), num_rows)
        size = stop - start
        embeddings[start:stop] = rng.standard_normal((size, DIM), dtype=np.float32)
        affinity[start:stop] = rng.random((size, k), dtype=np.float32)
        measured = rng.random(size) < 0.3
        counts = np.where(measured[:, None], rng.integers(1, 6, (size, k)), 0).astype(np.uint32)
        count[start:stop] = counts
        total[start:stop] = counts * rng.normal(0, 1e-4, (size, k))
        estimate[start:stop] = np.where(measured[:, None], 0, rng.normal(0, 5e-5, (size, k)))
    for table in (embeddings, affinity, total, count, estimate):
        table.flush()
    del embeddings, affinity, total, count, estimate
    StoreMeta(list(BEHAVIORS), num_rows, manifest.num_shards, manifest.content_hash(), DIM,
              {"name": "hashed_ngram", "params": {}}, {"factory": "Flat", "nprobe": 1},
              {"definition": "mean_top_k_cosine", "top_k": 4,
               "probe_documents": {b: 4 for b in BEHAVIORS}}).save(store)


def _epoch_events(num_rows: int, epoch: int, first_step: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One epoch's records for one rank and two workers, in consumption order."""
    rows = rng.permutation(num_rows)
    kind = rng.choice(4, num_rows, p=[0.8, 0.1, 0.07, 0.03])  # emit, defer-release-emit, drop, skip
    read_step = first_step + np.arange(num_rows) // DOCS_PER_STEP
    deferred = kind == 1
    release_step = read_step[deferred] + rng.integers(1, 400, int(deferred.sum()))
    last_step = int(max(read_step[-1], release_step.max(initial=0)))
    parts = []

    def block(event: int, where: np.ndarray, step: np.ndarray, weight: float = 0.0,
              reason: np.ndarray | int = 0) -> None:
        records = np.zeros(int(where.sum()), RECORD_DTYPE)
        records["event"], records["row"], records["step"] = event, rows[where], step
        records["epoch"], records["worker"] = epoch, rows[where] % 2
        records["weight"], records["reason"] = weight, reason
        parts.append(records)

    emit = kind == 0
    block(Fate.EMIT, emit, read_step[emit], 1.0)
    parts[-1]["weight"] = np.where(rng.random(len(parts[-1])) < 0.3, 2.0, 1.0)
    block(Fate.DEFER, deferred, read_step[deferred])
    block(Fate.RELEASE, deferred, release_step)
    block(Fate.EMIT, deferred, release_step, 1.0)
    dropped = kind == 2
    block(Fate.DROP, dropped, read_step[dropped], reason=rng.integers(1, 3, int(dropped.sum())))
    skipped = kind == 3
    block(Fate.SKIP, skipped, read_step[skipped], reason=3)
    ends = np.zeros(2, RECORD_DTYPE)
    ends["event"], ends["row"], ends["step"], ends["epoch"] = Fate.EPOCH_END, -1, last_step, epoch
    ends["worker"] = [0, 1]
    parts.append(ends)
    records = np.concatenate(parts)
    # DEFER before its RELEASE at a later step; a RELEASE and its EMIT share a step (stable sort).
    return records[np.argsort(records["step"], kind="stable")], last_step + 1


def write_run(run: Path, store: Path, manifest: ShardManifest, num_events: int,
              rng: np.random.Generator) -> int:
    """The run directory; returns the number of ledger records written."""
    (run / "ledger").mkdir(parents=True, exist_ok=True)
    num_rows = manifest.num_rows
    write_ledger_meta(run, world_size=1, num_workers=2, num_rows=num_rows,
                      manifest=manifest.content_hash())
    with (run / "ledger" / "reasons-00000.jsonl").open("w") as handle:
        for code, text in enumerate(REASONS, start=1):
            handle.write(json.dumps({"id": code, "text": text}) + "\n")
    written, step, epoch = 0, 0, 0
    with (run / "ledger" / "rank-00000.bin").open("wb") as handle:
        while written < num_events:
            records, step = _epoch_events(num_rows, epoch, step, rng)
            records = records[:num_events - written]
            handle.write(records.tobytes())
            written += len(records)
            epoch += 1
    stage_end = step // 3
    with (run / "metrics.csv").open("w") as handle:
        handle.write("attribution/measured_fraction,epoch,probe_loss/" + ",probe_loss/".join(BEHAVIORS)
                     + ",stage,step,train/loss\n")
        for s in range(0, step, 25):
            losses = ",".join(f"{5.5 - 2.5 * s / step + 0.1 * i:.4f}" for i in range(len(BEHAVIORS)))
            handle.write(f"{min(1.0, s / step):.4f},0,{losses},{int(s >= stage_end)},{s},"
                         f"{5.0 - 2 * s / step:.4f}\n")
    config = {"run_dir": str(run), "seed": 0, "data": {"shards": str(Path(manifest.shard_paths[0]).parent),
              "curriculum": {"policy": "values_first", "store": str(store)},
              "attribution": {"store": str(store), "every_n_steps": 4}},
              "trainer": {"max_steps": step}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "policy.yaml").write_text(yaml.safe_dump({"name": "values_first", "stages": [
        {"name": "values", "until": {"steps": stage_end}, "rules": []},
        {"name": "release", "rules": []}]}, sort_keys=False))
    return written


def measure(command: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, last output line) of one child process.

    ``os.wait4`` gives the resource usage of this child alone, so each command's peak is its
    own, whatever ran before it. Output goes to a temporary file (no pipe to drain)."""
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - started
        output.seek(0)
        text = output.read()
    if child.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{text[-2000:]}")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--root", default="/tmp/report-scale")
    parser.add_argument("--keep", action="store_true", help="reuse a run built before")
    args = parser.parse_args()
    root = Path(args.root)
    run, store, corpus, out = root / "run", root / "store", root / "corpus", root / "report"
    if not (args.keep and (run / "metrics.csv").is_file()):
        started = time.perf_counter()
        rng = np.random.default_rng(0)
        corpus.mkdir(parents=True, exist_ok=True)
        manifest = write_shards(corpus, args.rows)
        write_store(store, ShardManifest.load(corpus), rng)
        written = write_run(run, store, manifest, args.events, rng)
        print(f"built a run with {written:,} ledger records and a {args.rows:,}-row store in "
              f"{time.perf_counter() - started:.0f} s ({root})")
    cores = os.sched_getaffinity(0)
    pin = ["taskset", "-c", ",".join(map(str, sorted(cores)[:2]))] if len(cores) > 2 else []
    base_wall, base_cpu, base_rss, base_line = measure(
        [*pin, sys.executable, "-m", "curriculum", "ledger", str(run), "--check", "--summary"])
    wall, cpu, rss, line = measure([*pin, sys.executable, "-m", "curriculum", "report", str(run),
                               "--out", str(out), "--quiet"])
    load = os.getloadavg()[0]
    print(f"baseline  ledger --check --summary: {base_wall:6.1f} s wall, {base_cpu:6.1f} s CPU, "
          f"peak RSS {base_rss:7.0f} MiB")
    print(f"report                            : {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
          f"peak RSS {rss:7.0f} MiB  ({wall / base_wall:.2f}x the baseline's wall time, "
          f"{cpu / base_cpu:.2f}x its CPU time, {rss / base_rss:.2f}x its memory)")
    print(f"load average at the end: {load:.1f} (wall time on a loaded machine stretches; CPU "
          "time much less)")
    print(f"targets: under 60 s ({'met' if wall < 60 else 'NOT met'}), under 2048 MiB "
          f"({'met' if rss < 2048 else 'NOT met'}); on {min(len(cores), 2)} cores")
    print(f"baseline's last line: {base_line}")
    print(f"report's last line: {line}")


if __name__ == "__main__":
    main()
