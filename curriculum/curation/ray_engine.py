"""Curate with Ray: the ``ray`` engine of :func:`curriculum.curation.curate`.

The driver reads the input rows, writes the curated shards, the ledger, the records and the
response cache exactly as the local engine does; only the judging (assessment, decision,
revision, re-assessment of a chunk: :func:`~curriculum.curation.decide.decide_chunk`) runs in
Ray actors. Each actor builds its own judge from the :class:`~curriculum.curation.judge.JudgeSpec`
(a probe judge opens the store, an ``hf:`` judge loads the model, an ``openai:`` judge opens its
connections), once, and keeps it for the whole run. Chunks go to the actors in turn, a bounded
number in flight, and their outcomes are taken back in chunk order, so the output is the local
engine's, byte for byte.

Why actors and not tasks: a judge is expensive to build (a model, a store, a connection pool)
and must outlive a chunk; an actor is Ray's unit of long-lived state. The actors are *async*
actors, so one actor keeps several chunks at an ``openai:`` server at once, as the local
engine's event loop does.

Resumability holds as in the local engine: every actor starts from the cache as it was when the
run began and hands back, with each chunk's outcomes, the replies its judge received since; the
driver appends them to ``cache/responses.jsonl`` as they arrive. A killed run loses only the
replies of chunks still in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from curriculum.curation.assessor import CachedJudge, JudgeCounters
from curriculum.curation.cache import ResponseCache
from curriculum.curation.decide import InputDocument, Outcome, decide_chunk
from curriculum.curation.judge import JudgeReply, JudgeSpec
from curriculum.curation.principles import Principle
from curriculum.ray_cluster import cluster_cpus, connect, ray_module


class _SnapshotCache:
    """The driver's cache as of the run's start, plus what this actor's judge has received;
    :meth:`drain` hands the new replies over once (the driver persists them)."""

    def __init__(self, entries: dict[str, JudgeReply]) -> None:
        self._entries = entries
        self._fresh: list[tuple[str, JudgeReply]] = []

    def get(self, key: str) -> JudgeReply | None:
        return self._entries.get(key)

    def put(self, key: str, reply: JudgeReply) -> None:
        self._entries[key] = reply
        self._fresh.append((key, reply))

    def drain(self) -> list[tuple[str, JudgeReply]]:
        fresh, self._fresh = self._fresh, []
        return fresh


@dataclass
class ChunkResult:
    """What an actor returns for one chunk."""

    outcomes: list[Outcome]
    fresh_replies: list[tuple[str, JudgeReply]]
    """Replies the actor's judge received since its last result (for the driver's cache)."""
    counters: JudgeCounters
    """The actor's counters so far (cumulative)."""


class CurationWorker:
    """One judge, built from ``spec`` in the actor's process, deciding chunks (a Ray actor)."""

    def __init__(self, spec: JudgeSpec, principles: Sequence[Principle],
                 cached_replies: dict[str, JudgeReply]) -> None:
        self.spec = spec
        self.principles = tuple(principles)
        self.cached_replies = cached_replies

    def start(self) -> tuple[str, bool, int]:
        """Build the judge; its (identity, cacheable, batch size). Not done in ``__init__``: an
        error there reaches the driver without its cause (e.g. the JudgeError naming the
        server), an error in a method keeps it."""
        self.judge = self.spec.build()
        self.cache = _SnapshotCache(self.cached_replies) if self.judge.cacheable else None
        self.cached = CachedJudge(self.judge, self.cache)  # type: ignore[arg-type]
        return self.judge.identity, self.judge.cacheable, self.judge.batch_size

    def check_corpus(self, manifest: Any) -> None:
        """The judge's own check of the corpus (the probe judge refuses another store's rows)."""
        if hasattr(self.judge, "check_corpus"):
            self.judge.check_corpus(manifest)

    async def decide(self, chunk: list[InputDocument]) -> ChunkResult:
        """The outcomes of ``chunk``, in order (see :func:`decide_chunk`)."""
        outcomes = await decide_chunk(self.cached, self.principles, chunk)
        fresh = self.cache.drain() if self.cache is not None else []
        return ChunkResult(outcomes, fresh, self.cached.counters)

    async def close(self) -> None:
        """Release the judge's connections and models."""
        if hasattr(self, "judge"):
            await self.judge.aclose()


def _unwrapped(error: BaseException) -> BaseException:
    # A failure inside an actor reaches us as a RayTaskError carrying a remote traceback;
    # the cause is what the local engine would have raised (a JudgeError naming the server).
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


def _light(chunk: list[InputDocument]) -> list[InputDocument]:
    # The actors need texts and rows, not the samples' other members: those stay here and are
    # put back on the outcomes, which saves shipping every member twice.
    return [replace(d, members={}) for d in chunk]


class RayCuration:
    """The actors of one Ray curation run (a context manager: joins Ray, ends it if it started
    it). ``workers`` defaults to the cluster's CPUs; each actor takes ``cpus_per_worker``."""

    def __init__(self, spec: JudgeSpec, principles: Sequence[Principle],
                 cache: ResponseCache | None, *, address: str | None = None,
                 workers: int | None = None, cpus_per_worker: float = 1.0) -> None:
        self.ray = ray_module()
        self._started = connect(address)
        try:
            count = int(workers) if workers else max(1, int(cluster_cpus() // cpus_per_worker))
            if count < 1:
                raise ValueError(f"ray workers must be >= 1, got {workers}")
            entries = self.ray.put(cache.snapshot() if cache is not None else {})
            actor = self.ray.remote(num_cpus=cpus_per_worker)(CurationWorker)
            self.actors = [actor.remote(spec, tuple(principles), entries) for _ in range(count)]
            described = self._get([a.start.remote() for a in self.actors])
            self.identity, self.cacheable, self.batch_size = described[0]
        except BaseException:
            self._end()
            raise
        self.cache = cache if self.cacheable else None
        self._counters: dict[int, JudgeCounters] = {}

    def _get(self, ref: Any) -> Any:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as error:
            raise _unwrapped(error) from None

    def check_corpus(self, manifest: Any) -> None:
        """Run the judge's corpus check in one actor."""
        self._get(self.actors[0].check_corpus.remote(manifest))

    def outcomes(self, chunks: Iterable[list[InputDocument]],
                 chunks_in_flight: int) -> Iterator[list[Outcome]]:
        """Every chunk's outcomes in chunk order; at most ``chunks_in_flight`` chunks per actor
        are submitted and not yet taken back, so the driver holds a bounded amount."""
        limit = max(1, chunks_in_flight) * len(self.actors)
        window: deque[tuple[int, list[InputDocument], Any]] = deque()
        for turn, chunk in enumerate(chunks):
            slot = turn % len(self.actors)
            window.append((slot, chunk, self.actors[slot].decide.remote(_light(chunk))))
            if len(window) >= limit:
                yield self._take(window.popleft())
        while window:
            yield self._take(window.popleft())

    def _take(self, entry: tuple[int, list[InputDocument], Any]) -> list[Outcome]:
        slot, chunk, ref = entry
        result: ChunkResult = self._get(ref)
        if self.cache is not None:
            for key, reply in result.fresh_replies:
                self.cache.put(key, reply)
        self._counters[slot] = result.counters
        for outcome, document in zip(result.outcomes, chunk, strict=True):
            outcome.document = document
        return result.outcomes

    @property
    def counters(self) -> JudgeCounters:
        """The actors' counters summed; ``busy_s`` is the longest any one judge was busy."""
        total = JudgeCounters()
        for c in self._counters.values():
            total.requests += c.requests
            total.cached += c.cached
            total.prompt_tokens += c.prompt_tokens
            total.completion_tokens += c.completion_tokens
            total.busy_s = max(total.busy_s, c.busy_s)
        return total

    def _end(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def close(self) -> None:
        """Close the judges and end Ray if this run started it."""
        try:
            if getattr(self, "actors", None):
                self.ray.get([a.close.remote() for a in self.actors], timeout=60)
        except Exception:  # noqa: BLE001, S110 - closing must not hide the run's own error
            pass
        finally:
            for actor in getattr(self, "actors", []):
                self.ray.kill(actor)
            self._end()

    def __enter__(self) -> RayCuration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
