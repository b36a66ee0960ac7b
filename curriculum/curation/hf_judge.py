"""The ``hf:DIR`` judge: a local Hugging Face causal LM, loaded with ``local_files_only=True``.

Assessment is one batched forward pass: the next-token distribution after the prompt, restricted
to the vocabulary's single-token numbers 0-100, gives the expected score (tokens the model's
generation config suppresses are left out, as generation would). When the numbers hold less than
``min_number_mass`` of the probability, or the vocabulary has no single-token numbers, the judge
generates greedily and parses the answer instead; an answer without a number is unscored with
the reason. Revision is batched greedy generation. Work runs in a worker thread, so the event
loop (and other judges' requests) keep going.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.curation.judge import JudgeError, JudgeItem, JudgeReply
from curriculum.curation.scoring import parse_score

#: Below this probability on number tokens the judge generates and parses instead.
MIN_NUMBER_MASS = 0.5


class HFJudge:
    """Judge over a local causal LM directory (see the module docstring)."""

    def __init__(self, directory: str | Path, batch_size: int = 8, device: str = "cpu",
                 min_number_mass: float = MIN_NUMBER_MASS, max_revision_tokens: int = 256) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise JudgeError(f"judge hf:{directory}: no such model directory")
        self._batch_size = int(batch_size)
        self.device = device
        self.min_number_mass = float(min_number_mass)
        self.max_revision_tokens = int(max_revision_tokens)
        self._model: Any = None
        self._tokenizer: Any = None
        self._number_ids: np.ndarray = np.zeros(0, np.int64)
        self._number_values: np.ndarray = np.zeros(0, np.float64)
        self._suppressed: list[int] = []
        # Chunks in flight call from several threads; one model runs one batch at a time.
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"hf:{self.directory.resolve()}"

    @property
    def cacheable(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as error:
            raise ImportError("the hf: judge needs transformers: pip install "
                              "'curriculum-loader[hf]'") from error
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(self.directory, local_files_only=True)
        except (OSError, ValueError) as error:
            raise JudgeError(f"judge hf:{self.directory}: cannot load "
                             f"({str(error).splitlines()[0]})") from None
        tokenizer.padding_side = "left"  # the next token of every prompt sits at the end
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model = tokenizer, model.to(self.device).eval()
        ids, values = [], []
        for token, index in tokenizer.get_vocab().items():
            text = tokenizer.convert_tokens_to_string([token]).strip()
            if text.isdigit() and len(text) <= 3 and int(text) <= 100:
                ids.append(index)
                values.append(float(text))
        self._number_ids = np.asarray(ids, np.int64)
        self._number_values = np.asarray(values, np.float64)
        suppressed = getattr(model.generation_config, "suppress_tokens", None) or []
        self._suppressed = [int(t) for t in suppressed]

    def _prompt(self, text: str) -> str:
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                 tokenize=False, add_generation_prompt=True)
        return text

    def _generate(self, prompts: list[str], max_new_tokens: int) -> tuple[list[str], list[int]]:
        import torch

        batch = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        with torch.no_grad():
            output = self._model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self._tokenizer.pad_token_id)
        new = output[:, batch["input_ids"].shape[1]:]
        texts = self._tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts, [int(n) for n in (new != self._tokenizer.pad_token_id).sum(dim=1)]

    def _assess_sync(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        with self._lock:
            return self._assess_locked(items)

    def _assess_locked(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        import torch

        self._load()
        prompts = [self._prompt(i.principle.assessment_prompt(i.text)) for i in items]
        batch = self._tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        with torch.no_grad():
            logits = self._model(**batch).logits[:, -1, :].float()
        if self._suppressed:
            logits[:, self._suppressed] = float("-inf")
        probabilities = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
        replies: list[JudgeReply | None] = [None] * len(items)
        fallback = []
        for i, row in enumerate(probabilities):
            mass = float(row[self._number_ids].sum()) if len(self._number_ids) else 0.0
            if mass >= self.min_number_mass:
                score = float(row[self._number_ids] @ self._number_values / mass)
                replies[i] = JudgeReply(score, "", "logprobs", f"{score:.2f}", int(lengths[i]), 1)
            else:
                fallback.append(i)
        if fallback:
            texts, counts = self._generate([prompts[i] for i in fallback], 8)
            for i, text, count in zip(fallback, texts, counts, strict=True):
                reading = parse_score(text)
                replies[i] = JudgeReply(reading.score, "" if reading.ok else
                                        f"unreadable: {reading.reason}", reading.method, text,
                                        int(lengths[i]), count)
        return [r for r in replies if r is not None]

    def _revise_sync(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        with self._lock:
            self._load()
            prompts = [self._prompt(i.principle.revision_request(i.text)) for i in items]
            texts, counts = self._generate(prompts, self.max_revision_tokens)
        return [JudgeReply(None, "" if t.strip() else "empty revision", "", t.strip(), 0, c)
                for t, c in zip(texts, counts, strict=True)]

    async def assess(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        out: list[JudgeReply] = []
        for start in range(0, len(items), self._batch_size):
            out += await asyncio.to_thread(self._assess_sync, items[start:start + self._batch_size])
        return out

    async def revise(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        out: list[JudgeReply] = []
        for start in range(0, len(items), self._batch_size):
            out += await asyncio.to_thread(self._revise_sync, items[start:start + self._batch_size])
        return out

    async def aclose(self) -> None:
        self._model = self._tokenizer = None
