"""``curate``: input shards -> curated WebDataset shards, a curation ledger and per-row records.

Layout of the output directory ``OUT``:

- ``shards/``: the kept and revised documents (``<key>.txt`` plus the source's other members;
  a revised document also carries ``curation.json``: its source key and row, the judge, each
  principle's prompt hash and scores before and after) with their manifest, written by the
  project's shard writer;
- ``ledger/``: one fate per input row in the run ledger format (kept and revised = EMIT,
  filtered = DROP, unscored = SKIP, each with its reason), so ``curriculum ledger OUT --check``
  proves every row was accounted for once;
- ``curation/rows.npz``: per input row, its fate, deciding principle, and scores before and
  after revision; ``curation/revisions.jsonl``: the provenance of each revised document;
- ``curation.json``: counts per principle and in total, the judge, the principles' hashes;
- ``cache/responses.jsonl``: the judge's replies (kept across runs: what makes it resumable).

Resumable: a killed run leaves the cache; running it again rewrites the outputs from the start,
asking the judge only what the cache lacks, so it continues where it stopped and produces the
same documents, ledger and records.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from curriculum.curation.assessor import CachedJudge, JudgeCounters, JudgeLoop
from curriculum.curation.cache import ResponseCache
from curriculum.curation.decide import FATES, InputDocument, Outcome, decide_chunk
from curriculum.curation.inputs import chunked, iter_input_documents
from curriculum.curation.judge import Judge, JudgeSpec
from curriculum.curation.principles import Principle
from curriculum.curation.records import CurationCounts, RowRecords, write_summary
from curriculum.ledger import Fate, FateBatch, LedgerWriter, write_ledger_meta
from curriculum.shards.fast_writer import write_fast_shards
from curriculum.shards.manifest import ShardManifest, manifest_for

_EVENT = {"kept": Fate.EMIT, "revised": Fate.EMIT, "filtered": Fate.DROP, "unscored": Fate.SKIP}


@dataclass
class CurationResult:
    """What a curation run did."""

    out_dir: Path
    counts: CurationCounts
    output_docs: int
    shard_paths: list[Path]
    judge: JudgeCounters
    wall_s: float
    store_rows: int = 0
    """Rows whose assessments were written into a store (0 without ``store``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        """Input rows per second of wall-clock."""
        return self.counts.rows / self.wall_s if self.wall_s > 0 else float("inf")


def _clear_outputs(out: Path) -> None:
    # A rerun rewrites every output from the start (the cache makes that cheap).
    for name in ("shards", "ledger", "curation"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "curation.json").unlink(missing_ok=True)


class _Run:
    """The state of one run: judge, ledger, records, progress (the sample generator's owner)."""

    def __init__(self, identity: str, counters: Callable[[], JudgeCounters],
                 principles: Sequence[Principle], out: Path, num_rows: int, manifest_hash: str,
                 progress: tqdm) -> None:
        self.identity = identity
        self.counters = counters
        self.principles = tuple(principles)
        self.records = RowRecords(len(principles))
        self.counts = CurationCounts.empty(self.principles)
        write_ledger_meta(out, world_size=1, num_workers=0, num_rows=num_rows,
                          manifest=manifest_hash, num_epochs=1)
        self.ledger = LedgerWriter(out, rank=0)
        self.ledger.truncate(0)
        self.revisions_path = out / "curation" / "revisions.jsonl"
        self.revisions_path.parent.mkdir(parents=True, exist_ok=True)
        self._revisions = self.revisions_path.open("w", encoding="utf-8")
        self.progress = progress
        self.started = time.perf_counter()
        self.output_docs = 0

    def _provenance(self, outcome: Outcome) -> dict[str, Any]:
        document = outcome.document
        return {
            "source_key": document.key, "source_row": document.row,
            "judge": self.identity,
            "principles": {
                p.name: {"prompt_hash": p.prompt_hash(), "score_before": _json_score(before),
                         "score_after": _json_score(after)}
                for p, before, after in zip(self.principles, outcome.scores,
                                            outcome.revised_scores, strict=True)},
        }

    def record(self, outcomes: list[Outcome]) -> Iterator[dict[str, Any]]:
        """Account for a chunk's outcomes and yield the samples that go to the shards."""
        self.counts.add(self.principles, outcomes)
        self.records.add(outcomes, self.principles)
        fates = FateBatch.build([int(_EVENT[o.fate]) for o in outcomes],
                                [o.document.row for o in outcomes], 0, 0,
                                [1.0 if o.text is not None else 0.0 for o in outcomes],
                                [o.reason for o in outcomes])
        self.ledger.append(fates, step=0)
        for outcome in outcomes:
            if outcome.text is None:
                continue
            sample: dict[str, Any] = {k: v for k, v in outcome.document.members.items()
                                      if k not in ("txt", "curation.json")}
            sample["__key__"] = outcome.document.key
            sample["txt"] = outcome.text
            if outcome.fate == "revised":
                provenance = self._provenance(outcome)
                sample["curation.json"] = json.dumps(provenance, ensure_ascii=False).encode()
                self._revisions.write(json.dumps(provenance, ensure_ascii=False) + "\n")
            self.output_docs += 1
            yield sample
        self._update_progress(len(outcomes))

    def _update_progress(self, rows: int) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        counters = self.counters()
        tokens = counters.prompt_tokens + counters.completion_tokens
        self.progress.set_postfix_str(f"{tokens / elapsed:,.0f} tok/s", refresh=False)
        self.progress.update(rows)

    def finish(self) -> None:
        """Close the ledger with the epoch's end and flush the records."""
        self.ledger.append(FateBatch.build([int(Fate.EPOCH_END)], [-1], 0, 0), step=0)
        self.ledger.close()
        self._revisions.close()

    def abort(self) -> None:
        """Close files after a failure (the cache keeps what the judge answered)."""
        self.ledger.close()
        self._revisions.close()


def _json_score(value: float) -> float | None:
    return None if value != value else round(float(value), 4)


def _local_outcomes(judge: CachedJudge, principles: Sequence[Principle], loop: JudgeLoop,
                    chunks: Iterable[list[InputDocument]],
                    chunks_in_flight: int) -> Iterator[list[Outcome]]:
    """Each chunk's outcomes in order, keeping ``chunks_in_flight`` chunks at the judge."""
    window: deque[Future[list[Outcome]]] = deque()
    for chunk in chunks:
        window.append(loop.submit(decide_chunk(judge, principles, chunk)))
        if len(window) >= chunks_in_flight:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _samples(run: _Run, outcomes: Iterator[list[Outcome]]) -> Iterator[dict[str, Any]]:
    """Curated samples in row order."""
    for chunk in outcomes:
        yield from run.record(chunk)


def curate(shards: str | Path | Sequence[str] | ShardManifest, principles: Sequence[Principle],
           judge: Judge | JudgeSpec, out_dir: str | Path, *, store: str | Path | None = None,
           limit: int | None = None, chunk_docs: int | None = None, chunks_in_flight: int = 4,
           max_docs_per_shard: int = 10_000, show_progress: bool = False,
           text_field: str = "text", engine: str = "local", ray_address: str | None = None,
           ray_workers: int | None = None) -> CurationResult:
    """Curate the rows ``[0, limit)`` of ``shards`` against ``principles`` with ``judge`` into
    ``out_dir`` (layout in the module docstring); with ``store``, also write each principle's
    scores into it as ``assess.<principle>``. Raises JudgeError (naming the server) when the
    judge cannot be reached; the cache keeps every reply received, so a rerun resumes.

    ``engine="ray"`` judges the chunks in Ray actors (:mod:`curriculum.curation.ray_engine`;
    ``judge`` must then be a :class:`JudgeSpec`, which each actor builds; ``ray_address`` joins
    a cluster, ``ray_workers`` sets the number of actors, default the cluster's CPUs) and
    writes the same outputs as the local engine.
    """
    if not principles:
        raise ValueError("no principles to curate by")
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r} (local or ray)")
    if engine == "ray" and not isinstance(judge, JudgeSpec):
        raise ValueError("the ray engine builds a judge in every worker: pass a JudgeSpec")
    manifest = shards if isinstance(shards, ShardManifest) else manifest_for(shards)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_rows = manifest.num_rows if limit is None else min(int(limit), manifest.num_rows)
    started = time.perf_counter()
    if engine == "ray":
        return _curate_ray(manifest, principles, judge, out, store=store, num_rows=num_rows,
                           chunk_docs=chunk_docs, chunks_in_flight=chunks_in_flight,
                           max_docs_per_shard=max_docs_per_shard, show_progress=show_progress,
                           text_field=text_field, address=ray_address, workers=ray_workers,
                           started=started)
    judge = judge.build() if isinstance(judge, JudgeSpec) else judge
    if hasattr(judge, "check_corpus"):
        judge.check_corpus(manifest)
    _clear_outputs(out)
    cache = ResponseCache(out / "cache") if judge.cacheable else None
    cached = CachedJudge(judge, cache)
    chunks = chunked(iter_input_documents(manifest, num_rows, text_field),
                     chunk_docs or max(1, judge.batch_size))
    progress = tqdm(total=num_rows, desc="curate", unit="doc", disable=not show_progress)
    run = _Run(judge.identity, lambda: cached.counters, principles, out, num_rows,
               manifest.content_hash(), progress)
    try:
        with JudgeLoop() as loop:
            try:
                paths, _ = write_fast_shards(
                    _samples(run, _local_outcomes(cached, run.principles, loop, chunks,
                                                  chunks_in_flight)),
                    out / "shards", max_docs_per_shard=max_docs_per_shard)
            finally:
                loop.run(judge.aclose())
    except BaseException:
        run.abort()
        raise
    finally:
        progress.close()
        if cache is not None:
            cache.close()
    return _finish(run, out, paths, cached.counters, principles, manifest, store, started)


def _curate_ray(manifest: ShardManifest, principles: Sequence[Principle], spec: JudgeSpec,
                out: Path, *, store: str | Path | None, num_rows: int, chunk_docs: int | None,
                chunks_in_flight: int, max_docs_per_shard: int, show_progress: bool,
                text_field: str, address: str | None, workers: int | None,
                started: float) -> CurationResult:
    from curriculum.curation.ray_engine import RayCuration

    # The actors start from the cache, so it is opened before they exist; a judge that turns
    # out not to be cacheable leaves no cache behind, as in the local engine.
    cache_existed = (out / "cache").exists()
    cache = ResponseCache(out / "cache")
    try:
        with RayCuration(spec, principles, cache, address=address, workers=workers) as ray_run:
            ray_run.check_corpus(manifest)
            _clear_outputs(out)
            chunks = chunked(iter_input_documents(manifest, num_rows, text_field),
                             chunk_docs or max(1, ray_run.batch_size))
            progress = tqdm(total=num_rows, desc=f"curate (ray, {len(ray_run.actors)} workers)",
                            unit="doc", disable=not show_progress)
            run = _Run(ray_run.identity, lambda: ray_run.counters, principles, out, num_rows,
                       manifest.content_hash(), progress)
            try:
                paths, _ = write_fast_shards(
                    _samples(run, ray_run.outcomes(chunks, chunks_in_flight)),
                    out / "shards", max_docs_per_shard=max_docs_per_shard)
            except BaseException:
                run.abort()
                raise
            finally:
                progress.close()
            counters = ray_run.counters
    finally:
        cache.close()
        if not cache_existed and not len(cache):
            shutil.rmtree(out / "cache", ignore_errors=True)
    result = _finish(run, out, paths, counters, principles, manifest, store, started)
    result.extra["engine"] = f"ray ({len(ray_run.actors)} workers)"
    return result


def _finish(run: _Run, out: Path, paths: list[Path], counters: JudgeCounters,
            principles: Sequence[Principle], manifest: ShardManifest,
            store: str | Path | None, started: float) -> CurationResult:
    """Close the ledger, save the records, write the store's scores and the summary."""
    run.finish()
    run.records.save(out / "curation" / "rows.npz", principles)
    wall_s = time.perf_counter() - started
    result = CurationResult(out, run.counts, run.output_docs, paths, counters, wall_s)
    if store is not None:
        from curriculum.curation.store_scores import write_store_scores

        result.store_rows = write_store_scores(store, principles, run.records,
                                               manifest, run.identity)
    write_summary(out / "curation.json", result, principles, run.identity)
    return result


__all__ = ["FATES", "CurationResult", "curate"]
