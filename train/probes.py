"""Probe sets: held-out documents per behavior, and the mean token loss of a model on them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from curriculum.batch import IGNORE_INDEX
from loaders.stream import encode
from loaders.tokenize import Tokenizer

ProbeBatches = dict[str, dict[str, torch.Tensor]]


def read_probe_texts(probes_dir: str | Path, max_docs: int | None = None) -> dict[str, list[str]]:
    """``{behavior: [text, ...]}`` from ``<behavior>.jsonl`` files (one ``{"text": ...}`` a line)."""
    directory = Path(probes_dir)
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{directory}: no probe sets (<behavior>.jsonl) found")
    probes: dict[str, list[str]] = {}
    for path in files:
        texts = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                texts.append(str(record["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: expected {{\"text\": ...}} ({error})") from None
            if max_docs is not None and len(texts) >= max_docs:
                break
        if not texts:
            raise ValueError(f"{path}: probe set is empty")
        probes[path.stem] = texts
    return probes


def make_probe_batch(texts: list[str], tokenizer: Tokenizer, seq_len: int) -> dict[str, torch.Tensor]:
    """One padded batch, a document per row (truncated to ``seq_len`` predicted tokens)."""
    inputs = torch.full((len(texts), seq_len), tokenizer.eos_id, dtype=torch.long)
    labels = torch.full((len(texts), seq_len), IGNORE_INDEX, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = torch.from_numpy(encode(tokenizer, text))[: seq_len + 1]
        tokens = torch.cat([tokens, torch.tensor([tokenizer.eos_id])])[: seq_len + 1]
        length = len(tokens) - 1
        inputs[i, :length] = tokens[:-1]
        labels[i, :length] = tokens[1:]
    return {"input_ids": inputs, "labels": labels,
            "loss_weight": (labels != IGNORE_INDEX).float()}


def load_probe_batches(probes_dir: str | Path, tokenizer: Tokenizer, seq_len: int,
                       max_docs: int | None = None) -> ProbeBatches:
    """Every probe set as one padded batch."""
    return {behavior: make_probe_batch(texts, tokenizer, seq_len)
            for behavior, texts in read_probe_texts(probes_dir, max_docs).items()}


def mean_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the tokens whose label is not ignored."""
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
