"""Embedders backed by models: mean-pooled hidden states of our GPT or of a local Hugging Face
model, and a local sentence-transformers model. torch, transformers and sentence-transformers are
imported only when one of these is built, never when this module is imported.

They live with the models (``train``), not in the store, so the core never imports ``train``; the
store finds them by name through the ``curriculum.embedders`` entry points (``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curriculum.store.embedders import l2_normalize
from curriculum.store.errors import StoreError

Texts = Sequence[str | bytes]


def _as_text(text: str | bytes) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else text


class _Pretrained:
    """Shared pieces of the model embedders: no fitting, no state."""

    def fit(self, texts: Texts) -> None:
        """Nothing to fit: the model is pretrained."""

    def state(self) -> dict[str, np.ndarray]:
        """No fitted state."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """No fitted state."""


class GPTHiddenStateEmbedder(_Pretrained):
    """Mean-pooled final hidden states (after the last LayerNorm) of our reference GPT.

    ``checkpoint`` is a ``torch.save`` file holding ``{"config": {GPTConfig fields}, "state_dict":
    ...}``, or a Lightning checkpoint whose ``state_dict`` keys start with ``model.`` and whose
    ``hyper_parameters`` hold the GPTConfig fields (under ``config`` or at the top level). Without
    a checkpoint, a GPT with random weights from ``seed`` is used (tests and smoke runs only).
    Texts are byte-tokenized and cut to the model's ``block_size`` tokens.
    """

    name = "gpt"
    spec_argument = "checkpoint"

    def __init__(
        self, checkpoint: str | None = None, seed: int = 0, batch_size: int = 64, model: Any = None
    ) -> None:
        import torch

        from train.model import GPT, GPTConfig

        self.checkpoint = checkpoint
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        if model is None:
            if checkpoint is None:
                torch.manual_seed(self.seed)
                model = GPT(GPTConfig())
            else:
                model = _load_gpt(checkpoint, GPT, GPTConfig)
        self.model = model.eval()
        self.dim = int(model.config.n_embd)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (the checkpoint path, or the seed of random weights)."""
        return {"checkpoint": self.checkpoint, "seed": self.seed, "batch_size": self.batch_size}

    def embed(self, texts: Texts) -> np.ndarray:
        """Unit-norm mean-pooled hidden states."""
        import torch

        block = self.model.config.block_size
        device = next(self.model.parameters()).device
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            encoded = [
                (t if isinstance(t, (bytes, bytearray)) else t.encode("utf-8"))[:block] or b" "
                for t in chunk
            ]
            width = max(len(e) for e in encoded)
            ids = torch.zeros((len(encoded), width), dtype=torch.long)
            mask = torch.zeros((len(encoded), width, 1), dtype=torch.float32)
            for i, e in enumerate(encoded):
                ids[i, : len(e)] = torch.frombuffer(bytearray(e), dtype=torch.uint8).long()
                mask[i, : len(e)] = 1.0
            with torch.no_grad():
                hidden = _gpt_hidden_states(self.model, ids.to(device)).float().cpu()
            # Causal attention: right padding never changes the hidden states of real tokens.
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out[start : start + len(chunk)] = pooled.numpy()
        return l2_normalize(out)


def _gpt_hidden_states(model: Any, ids: Any) -> Any:
    positions = ids.new_tensor(range(ids.shape[1]))
    x = model.wte(ids) + model.wpe(positions)
    for block in model.blocks:
        x = block(x)
    return model.ln_f(x)


def _load_gpt(path: str, gpt_class: Any, config_class: Any) -> Any:
    import dataclasses

    import torch

    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError) as error:
        raise StoreError(f"{path}: cannot load GPT checkpoint ({error})") from error
    state = record.get("state_dict", record.get("model")) if isinstance(record, dict) else None
    hyper = record.get("hyper_parameters", {}) if isinstance(record, dict) else {}
    config = record.get("config") if isinstance(record, dict) else None
    config = config or hyper.get("config") or hyper
    if state is None or not config:
        raise StoreError(f"{path}: expected a dict with 'config' and 'state_dict' (GPT checkpoint)")
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    names = {f.name for f in dataclasses.fields(config_class)}
    model = gpt_class(config_class(**{k: v for k, v in dict(config).items() if k in names}))
    prefixes = ("model.", "module.")
    state = {next((k[len(p) :] for p in prefixes if k.startswith(p)), k): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise StoreError(f"{path}: state_dict does not fit the GPT config ({error})") from error
    return model


class HFHiddenStateEmbedder(_Pretrained):
    """Mean-pooled last hidden states of a local Hugging Face model (``local_files_only``)."""

    name = "hf"
    spec_argument = "path"

    def __init__(self, path: str, max_tokens: int = 256, batch_size: int = 32) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise ImportError(
                "the hf embedder needs transformers: pip install 'curriculum-loader[hf]'"
            ) from error
        self.path = path
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: cannot load a local Hugging Face model ({error})") from error
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        self.dim = int(self._model.config.hidden_size)

    def params(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"path": self.path, "max_tokens": self.max_tokens, "batch_size": self.batch_size}

    def embed(self, texts: Texts) -> np.ndarray:
        """Unit-norm mean-pooled hidden states (padding masked out)."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = [_as_text(t) or " " for t in texts[start : start + self.batch_size]]
            batch = self._tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_tokens,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[start : start + len(chunk)] = pooled.numpy()
        return l2_normalize(out)


class SentenceTransformerEmbedder(_Pretrained):
    """A local sentence-transformers model directory (the package is imported only here)."""

    name = "sentence-transformers"
    spec_argument = "path"

    def __init__(self, path: str, batch_size: int = 64) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError(
                "the sentence-transformers embedder needs the sentence-transformers package: "
                "pip install sentence-transformers"
            ) from error
        self.path = path
        self.batch_size = int(batch_size)
        try:
            self._model = SentenceTransformer(path, local_files_only=True)
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: cannot load a sentence-transformers model ({error})") from error
        self.dim = int(self._model.get_sentence_embedding_dimension())

    def params(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"path": self.path, "batch_size": self.batch_size}

    def embed(self, texts: Texts) -> np.ndarray:
        """Unit-norm sentence embeddings."""
        vectors = self._model.encode(
            [_as_text(t) for t in texts], batch_size=self.batch_size, convert_to_numpy=True
        )
        return l2_normalize(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim))
