"""A judge behind the response cache, with token and request counters, on its own event loop.

:class:`CachedJudge` answers from the cache what it can and asks the judge for the rest,
storing each final reply as it arrives (the cache key is a hash of the judge's identity, the
request kind, the principle's prompt hash and the document). :class:`JudgeLoop` runs the
asyncio event loop in a background thread, so requests stay in flight while the calling thread
reads shards and writes outputs; work is submitted with :meth:`JudgeLoop.submit` and collected
in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from curriculum.curation.cache import ResponseCache, request_key
from curriculum.curation.judge import Judge, JudgeItem, JudgeReply

T = TypeVar("T")


@dataclass
class JudgeCounters:
    """What the judge was asked and how much it read and wrote."""

    requests: int = 0
    """Items sent to the judge (cache misses)."""
    cached: int = 0
    """Items answered from the cache."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    busy_s: float = 0.0
    """Wall-clock seconds during which at least one judge call was in flight."""


class CachedJudge:
    """``judge`` answered through ``cache`` (None: no caching, e.g. the probe judge)."""

    def __init__(self, judge: Judge, cache: ResponseCache | None) -> None:
        self.judge = judge
        self.cache = cache if judge.cacheable else None
        self.counters = JudgeCounters()
        self._in_flight = 0
        self._busy_since = 0.0

    def _key(self, kind: str, item: JudgeItem) -> str:
        return request_key(self.judge.identity, kind, item.principle.prompt_hash(), item.text)

    async def _timed(self, call: Awaitable[list[JudgeReply]]) -> list[JudgeReply]:
        loop = asyncio.get_running_loop()
        if self._in_flight == 0:
            self._busy_since = loop.time()
        self._in_flight += 1
        try:
            return await call
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.counters.busy_s += loop.time() - self._busy_since

    async def _call(self, kind: str, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        replies: list[JudgeReply | None] = [None] * len(items)
        keys: list[str] = []
        missing: list[int] = []
        if self.cache is not None:
            keys = [self._key(kind, item) for item in items]
            for i, key in enumerate(keys):
                replies[i] = self.cache.get(key)
                if replies[i] is None:
                    missing.append(i)
        else:
            missing = list(range(len(items)))
        self.counters.cached += len(items) - len(missing)
        if missing:
            method = self.judge.assess if kind == "assess" else self.judge.revise
            fresh = await self._timed(method([items[i] for i in missing]))
            self.counters.requests += len(missing)
            for i, reply in zip(missing, fresh, strict=True):
                replies[i] = reply
                if self.cache is not None:
                    self.cache.put(keys[i], reply)
        out = [r for r in replies if r is not None]
        for reply in out:
            self.counters.prompt_tokens += reply.prompt_tokens
            self.counters.completion_tokens += reply.completion_tokens
        return out

    async def assess(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """Assessments of ``items`` (cached ones included), in order."""
        return await self._call("assess", items)

    async def revise(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """Revisions of ``items`` (cached ones included), in order."""
        return await self._call("revise", items)


class JudgeLoop:
    """An asyncio event loop in a daemon thread (a context manager; closes the judge at exit)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="judge-loop",
                                        daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coroutine`` on the loop; a future for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it."""
        return self.submit(coroutine).result()

    def close(self) -> None:
        """Cancel what is still running and stop the loop thread."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def __enter__(self) -> JudgeLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
