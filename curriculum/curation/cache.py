"""The response cache that makes curation resumable.

Every reply of a cacheable judge is appended to ``responses.jsonl`` as soon as it arrives, keyed
by a SHA-256 of (judge identity, request kind, full prompt, document). A job killed at any point
loses at most the replies in flight; running it again reads the cache first and asks the judge
only for what is missing, so it continues where it stopped and, the judge's answers being the
same, produces the same output. A torn last line (a kill mid-write) is ignored and cut.

Only final replies are stored: a score, or an answer that stayed unreadable after its retries.
A server that could not be reached leaves nothing behind, so it is asked again next time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from curriculum.curation.judge import JudgeReply

CACHE_FILE = "responses.jsonl"


def request_key(judge_identity: str, kind: str, prompt: str, document: str) -> str:
    """Hex SHA-256 of what decides a reply: the judge, ``assess``/``revise``, prompt, document."""
    digest = hashlib.sha256()
    for part in (judge_identity, kind, prompt, document):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguous joins
        digest.update(data)
    return digest.hexdigest()


class ResponseCache:
    """Append-only JSONL cache of judge replies in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self._entries: dict[str, JudgeReply] = {}
        self.torn_lines_cut = 0
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.hits = 0
        self.misses = 0

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.split(b"\n")[:-1]:
            try:
                record = json.loads(line)
                self._entries[record["key"]] = JudgeReply.from_record(record)
            except (ValueError, KeyError, TypeError):
                break  # a damaged line: keep what came before it
            good += len(line) + 1
        if good != len(data):
            self.torn_lines_cut = 1
            with self.path.open("r+b") as handle:
                handle.truncate(good)

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self) -> dict[str, JudgeReply]:
        """A copy of every cached reply by key (what the Ray engine's workers start from)."""
        return dict(self._entries)

    def get(self, key: str) -> JudgeReply | None:
        """The cached reply for ``key``, if any (counts hits and misses)."""
        reply = self._entries.get(key)
        if reply is None:
            self.misses += 1
        else:
            self.hits += 1
        return reply

    def put(self, key: str, reply: JudgeReply) -> None:
        """Store ``reply``; the line reaches the operating system before this returns."""
        self._entries[key] = reply
        line = json.dumps({"key": key, **reply.to_record()}, ensure_ascii=False) + "\n"
        data = line.encode("utf-8", "surrogatepass")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def close(self) -> None:
        """Force the cache to disk and close it (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.fsync(fd)
            os.close(fd)

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
