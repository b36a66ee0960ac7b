"""The ``openai:URL`` judge: any OpenAI-compatible chat-completions server.

Through the official ``openai`` client (``AsyncOpenAI``): at most ``concurrency`` requests in
flight (a semaphore), a timeout per request, and our own retries with exponential backoff on
connection errors, timeouts, 429 and 5xx answers (the client's built-in retries are off, so the
total wait is bounded and the failure message is ours). When the server stays unreachable the
judge raises :class:`~curriculum.curation.judge.JudgeError` naming the server, e.g.
``judge server http://127.0.0.1:8000/v1 unreachable after 5 attempts (APIConnectionError: ...)``.

Scores are read from token logprobs where the server returns them, else parsed from the text
(:mod:`curriculum.curation.scoring`). An unreadable answer is asked again (with sampling, so the
answer can change) up to ``score_attempts`` requests in all, then returned unscored with the
reason.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from typing import Any

from curriculum.curation.judge import JudgeError, JudgeItem, JudgeReply
from curriculum.curation.scoring import Reading, read_score

#: Temperature of the retries of an unreadable answer (the first request is greedy).
RETRY_TEMPERATURE = 0.7
#: Tokens an assessment answer may use.
ASSESS_MAX_TOKENS = 8
#: Alternatives per token asked for when reading logprobs.
TOP_LOGPROBS = 20


def _revision_max_tokens(text: str) -> int:
    # About 4 characters a token; a revision may run a little longer than its source.
    return min(4096, int(len(text) / 4 * 1.5) + 32)


class OpenAIJudge:
    """Judge over an OpenAI-compatible server at ``base_url`` (see the module docstring)."""

    def __init__(self, base_url: str, model: str | None = None, concurrency: int = 16,
                 timeout_s: float = 60.0, max_retries: int = 4, score_attempts: int = 3,
                 backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 use_logprobs: bool = True, max_revision_tokens: int | None = None) -> None:
        try:
            import openai
        except ImportError as error:
            raise ImportError("the openai: judge needs the openai package: pip install "
                              "'curriculum-loader[curation]'") from error
        if concurrency < 1:
            raise JudgeError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.score_attempts = max(1, int(score_attempts))
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.use_logprobs = use_logprobs
        self.max_revision_tokens = max_revision_tokens
        self._openai = openai
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self.requests_sent = 0
        """Requests answered by the server (for reports)."""
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests that were in flight at once (never above ``concurrency``)."""

    @property
    def identity(self) -> str:
        budget = "" if self.max_revision_tokens is None else \
            f" max_revision_tokens={self.max_revision_tokens}"  # changes revisions: in the key
        return f"openai:{self.base_url} model={self.model}{budget}"

    @property
    def cacheable(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return self.concurrency

    def _ensure_client(self) -> Any:
        if self._client is None:
            self._client = self._openai.AsyncOpenAI(
                base_url=self.base_url, api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
                timeout=self.timeout_s, max_retries=0, http_client=self._http_client())
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client

    def _http_client(self) -> Any:
        # The aiohttp transport (openai[aiohttp]) keeps up with many requests in flight; the
        # default httpx pool rescans every connection per request and tops out near 100/s.
        try:
            return self._openai.DefaultAioHttpClient(timeout=self.timeout_s)
        except (AttributeError, RuntimeError, ImportError):
            return None

    async def resolve_model(self) -> str:
        """The model name: the one given, else the server's only model (else JudgeError)."""
        if self.model:
            return self.model
        client = self._ensure_client()
        page = await self._with_retries(lambda: client.models.list())
        names = [m.id for m in page.data]
        if len(names) != 1:
            raise JudgeError(f"judge server {self.base_url}: say which model to use (--judge-model);"
                             f" the server lists {len(names)}: {', '.join(names[:5]) or 'none'}")
        self.model = names[0]
        return self.model

    async def _with_retries(self, call: Any) -> Any:
        errors = self._openai
        retryable = (errors.APIConnectionError, errors.RateLimitError, errors.InternalServerError)
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                return await call()
            except retryable as error:
                if attempt + 1 == attempts:
                    kind = "unreachable" if isinstance(error, errors.APIConnectionError) \
                        else "failing"
                    cause = " ".join(str(error).split())[:160]
                    raise JudgeError(f"judge server {self.base_url} {kind} after {attempts} "
                                     f"attempts ({type(error).__name__}: {cause})") from None
                await asyncio.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** attempt))
            except errors.APIStatusError as error:
                message = " ".join(str(error).split())[:200]
                raise JudgeError(f"judge server {self.base_url} refused the request "
                                 f"(HTTP {error.status_code}: {message})") from None
        raise AssertionError("unreachable")

    async def _chat(self, prompt: str, max_tokens: int, temperature: float, seed: int | None,
                    logprobs: bool) -> Any:
        client = self._ensure_client()
        assert self._semaphore is not None
        arguments: dict[str, Any] = {
            "model": self.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            arguments["seed"] = seed
        if logprobs:
            arguments.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                # client.post is the official client's generic request (the same retries,
                # errors and transport as chat.completions.create) without building typed
                # request and response models, which cost more than the request itself.
                response = await self._with_retries(
                    lambda: client.post("/chat/completions", body=arguments, cast_to=object))
            finally:
                self.in_flight -= 1
            self.requests_sent += 1
        return response

    @staticmethod
    def _alternatives(choice: dict[str, Any]) -> list[tuple[str, list[tuple[str, float]]]] | None:
        content = (choice.get("logprobs") or {}).get("content")
        if not content:
            return None
        return [(t.get("token", ""), [(a.get("token", ""), float(a.get("logprob", -math.inf)))
                                      for a in (t.get("top_logprobs") or [])])
                for t in content]

    @staticmethod
    def _parts(response: Any) -> tuple[dict[str, Any] | None, str, int, int]:
        """(first choice, its text, prompt tokens, completion tokens) of a JSON response."""
        if not isinstance(response, dict):
            return None, "", 0, 0
        usage = response.get("usage") or {}
        choices = response.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else None
        text = ((choice or {}).get("message") or {}).get("content") or ""
        return choice, str(text), int(usage.get("prompt_tokens") or 0), \
            int(usage.get("completion_tokens") or 0)

    async def _assess_one(self, item: JudgeItem) -> JudgeReply:
        prompt = item.principle.assessment_prompt(item.text)
        prompt_tokens = completion_tokens = 0
        reading = Reading(None, reason="no answer")
        answer = ""
        for attempt in range(self.score_attempts):
            greedy = attempt == 0
            response = await self._chat(prompt, ASSESS_MAX_TOKENS,
                                        0.0 if greedy else RETRY_TEMPERATURE,
                                        None if greedy else attempt, self.use_logprobs)
            choice, answer, used_prompt, used_completion = self._parts(response)
            prompt_tokens += used_prompt
            completion_tokens += used_completion
            reading = read_score(answer, self._alternatives(choice) if choice else None)
            if reading.ok:
                return JudgeReply(reading.score, "", reading.method, answer, prompt_tokens,
                                  completion_tokens, attempt + 1)
        return JudgeReply(None, f"unreadable after {self.score_attempts} attempts: "
                                f"{reading.reason}", "", answer, prompt_tokens, completion_tokens,
                          self.score_attempts)

    async def _revise_one(self, item: JudgeItem) -> JudgeReply:
        prompt = item.principle.revision_request(item.text)
        budget = _revision_max_tokens(item.text)
        if self.max_revision_tokens is not None:
            budget = min(budget, self.max_revision_tokens)
        response = await self._chat(prompt, budget, 0.0, None, False)
        _, text, prompt_tokens, completion_tokens = self._parts(response)
        text = text.strip()
        return JudgeReply(None, "" if text else "empty revision", "", text, prompt_tokens,
                          completion_tokens)

    async def assess(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        await self.resolve_model()
        return list(await asyncio.gather(*(self._assess_one(item) for item in items)))

    async def revise(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        await self.resolve_model()
        return list(await asyncio.gather(*(self._revise_one(item) for item in items)))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
