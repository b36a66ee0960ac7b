"""Shared pieces of the attribution tests: tiny models, padded batches, brute-force references."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from curriculum.attribution.losses import IGNORE_INDEX, logits_of
from train.model import GPT, GPTConfig

VOCAB = 23


class EmbedMLP(nn.Module):
    """Embedding + Linear layers only (every parameter covered), with a tied output head and a
    position embedding looked up without a batch dimension."""

    def __init__(self, vocab: int = VOCAB, width: int = 8, block: int = 16) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width, padding_idx=0)
        self.positions = nn.Embedding(block, width)
        self.hidden = nn.Linear(width, 2 * width)
        self.mix = nn.Linear(2 * width, width, bias=False)
        self.head = nn.Linear(width, vocab)
        self.head.weight = self.tokens.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        x = x + self.mix(torch.tanh(self.hidden(x)))
        # A causal mixing step so tokens interact within (never across) examples.
        x = x + torch.cumsum(x, dim=1) / 4
        return self.head(x)


def tiny_gpt(tie: bool = False, seed: int = 0) -> GPT:
    """Our GPT, 2 layers of width 16, float64."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16,
                         tie_weights=tie)).double()


def tiny_hf_gpt2(seed: int = 0) -> nn.Module:
    """A random-init Hugging Face GPT-2 (Conv1D layers, tied lm_head), float64, no download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).double()
    model.config.use_cache = False
    return model.eval()


def padded_batch(batch_size: int, seq_len: int, seed: int, weighted: bool = True,
                 empty_row: bool = False) -> dict[str, torch.Tensor]:
    """Random documents of random lengths, right-padded (label -100, input id 0)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch_size, seq_len), generator=generator)
    labels = torch.randint(1, VOCAB, (batch_size, seq_len), generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch_size,), generator=generator)
    lengths[0] = seq_len
    if empty_row and batch_size > 1:
        lengths[-1] = 0
    for i, length in enumerate(lengths.tolist()):
        ids[i, length:] = 0
        labels[i, length:] = IGNORE_INDEX
    weight = (torch.rand(batch_size, seq_len, generator=generator, dtype=torch.float64) + 0.5
              if weighted else torch.ones(batch_size, seq_len, dtype=torch.float64))
    return {"input_ids": ids, "labels": labels, "loss_weight": weight}


def per_example_gradients(model: nn.Module, batch: Mapping[str, torch.Tensor],
                          names: list[str]) -> dict[str, torch.Tensor]:
    """Brute force: torch.func ``vmap(grad(l_i))`` over examples, for the parameters ``names``
    only (the rest held fixed); ``l_i`` as in :mod:`curriculum.attribution.losses`."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    covered = {n: params[n] for n in names}
    fixed = {n: p for n, p in params.items() if n not in covered}
    valid_tokens = (batch["labels"] != IGNORE_INDEX).sum().clamp_min(1)

    def example_loss(covered_params, ids, labels, weight):  # noqa: ANN001, ANN202
        out = functional_call(model, {**fixed, **covered_params}, (ids.unsqueeze(0),))
        logits = logits_of(out)[0]
        ce = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
        return (ce * weight * (labels != IGNORE_INDEX)).sum() / valid_tokens

    return vmap(grad(example_loss), in_dims=(None, 0, 0, 0))(
        covered, batch["input_ids"], batch["labels"], batch["loss_weight"])


def probe_gradient(model: nn.Module, batch: Mapping[str, torch.Tensor],
                   names: list[str]) -> dict[str, torch.Tensor]:
    """Gradient of the mean token CE over the probe batch."""
    params = dict(model.named_parameters())
    logits = logits_of(model(batch["input_ids"]))
    loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                           ignore_index=IGNORE_INDEX)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads, strict=True)}


def brute_force_scores(model: nn.Module, batch: Mapping[str, torch.Tensor],
                       probes: Mapping[str, Mapping[str, torch.Tensor]], names: list[str],
                       preconditioners: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(B, K) ``<grad l_i, P * grad L_Vk>`` over ``names`` from materialized gradients."""
    per_example = per_example_gradients(model, batch, names)
    columns = []
    for probe in probes.values():
        g_probe = probe_gradient(model, probe, names)
        column = 0
        for n in names:
            direction = g_probe[n] if preconditioners is None else g_probe[n] * preconditioners[n]
            column = column + (per_example[n] * direction).flatten(1).sum(1)
        columns.append(column)
    return torch.stack(columns, dim=1)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference over the largest absolute expected value."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300))


def synthetic_training_data(num_docs: int, seq_len: int, batch_size: int, seed: int = 0
                            ) -> tuple[list[dict[str, torch.Tensor]], list[list[str]]]:
    """Synthetic documents, one per row (byte tokens, truncated, padded), and their behaviors."""
    from curriculum.attribution.grad_features import byte_document_batch
    from curriculum.synth import generate_documents

    docs = list(generate_documents(num_docs, seed=seed))
    batches, behaviors = [], []
    for start in range(0, len(docs) - batch_size + 1, batch_size):
        chunk = docs[start : start + batch_size]
        batches.append(byte_document_batch([d.text for d in chunk], seq_len))
        behaviors.append([d.behavior for d in chunk])
    return batches, behaviors


def synthetic_probe_sets(docs_per_behavior: int, seq_len: int, seed: int = 1
                         ) -> dict[str, dict[str, torch.Tensor]]:
    """Held-out documents of every behavior, drawn like ``write_synthetic_corpus``'s probes."""
    import random

    from curriculum.attribution.grad_features import byte_document_batch
    from curriculum.synth import BEHAVIORS, generate_text

    rng = random.Random(f"probes:{seed}")
    return {b: byte_document_batch([generate_text(b, rng) for _ in range(docs_per_behavior)],
                                   seq_len) for b in BEHAVIORS}


def small_byte_gpt(seq_len: int, width: int = 64, layers: int = 2, seed: int = 0) -> GPT:
    """A float32 GPT over the byte vocabulary (257)."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=257, block_size=seq_len, n_layer=layers, n_head=2,
                         n_embd=width))
