"""``grad:CKPT``: a behavior-store embedder on gradient features of a training checkpoint.

Documents are embedded by what they would do to the model rather than by what they say: the
LoGra-style projected gradient of each document's own mean token loss at an (early) checkpoint
of the reference GPT (:mod:`curriculum.attribution.grad_features`), centred on the corpus mean
gradient feature (fitted on the documents the store builder shows :meth:`fit`: every document
shares the "learn the language" direction, which would otherwise make all cosines alike), then
unit-normalised. FAISS neighbours and the store's kNN attribution estimates then group documents
by their effect on the model: a trap that reads as values text but pushes situational awareness
lands among the documents that push situational awareness.

Lives in ``train`` (it loads model checkpoints) and registers itself with the core's embedder
registry on import; ``curriculum index --embedder grad:CKPT`` imports it::

    curriculum index --shards data/corpus --probes data/corpus/probes --out data/grad-store \\
        --embedder grad:runs/demo/values_first/checkpoints/step-000050.ckpt
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from curriculum.attribution.grad_features import GradientFeatureEmbedder
from curriculum.store.embedders import register_embedder
from curriculum.store.errors import StoreError

#: Documents the corpus mean feature is estimated from, at most.
FIT_DOCUMENTS = 512


def load_checkpoint_gpt(checkpoint: str, n_head: int | None = None) -> Any:
    """The reference GPT of a Lightning checkpoint (``model.``-prefixed state dict) or of a
    ``{"config", "state_dict"}`` file, in eval mode. Without a config in the file the shape is
    read off the weights; the head count cannot be, so ``n_head`` gives it (default: one head
    per 32 channels, the demo's layout)."""
    import torch

    from train.model import GPT, GPTConfig

    try:
        record = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any unreadable file gets the same one-liner
        raise StoreError(f"{checkpoint}: cannot load checkpoint ({error})") from error
    if not isinstance(record, dict):
        raise StoreError(f"{checkpoint}: not a checkpoint dictionary")
    state = record.get("state_dict", record)
    hyper = record.get("hyper_parameters") or {}
    config = record.get("config") or hyper.get("model", {}).get("gpt") or hyper.get("config")
    weights = {k.removeprefix("model."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if config is None:  # infer the shape from the weights
        config = _config_from_weights(weights, n_head)
    fields = set(GPTConfig.__dataclass_fields__)
    model = GPT(GPTConfig(**{k: v for k, v in dict(config).items() if k in fields}))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing:
        raise StoreError(f"{checkpoint}: checkpoint lacks GPT weights {missing[:3]}...")
    return model.eval()


def _config_from_weights(weights: Mapping[str, Any], n_head: int | None) -> dict[str, int]:
    if "wte.weight" not in weights:
        raise StoreError("checkpoint holds no reference-GPT weights (wte.weight)")
    vocab, width = weights["wte.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    heads = n_head or max(1, width // 32)
    tied = "lm_head.weight" not in weights
    return {"vocab_size": int(vocab), "block_size": int(weights["wpe.weight"].shape[0]),
            "n_layer": layers, "n_head": heads, "n_embd": int(width), "tie_weights": tied}


class CheckpointGradientEmbedder(GradientFeatureEmbedder):
    """Centred, unit-normalised gradient features of a training checkpoint (see module docs)."""

    name = "grad"
    spec_argument = "checkpoint"

    def __init__(self, checkpoint: str | None = None, rank: int = 8, seed: int = 0,
                 seq_len: int = 128, batch_size: int = 32, model_seed: int = 0,
                 n_head: int | None = None, model: Any = None) -> None:
        if model is None and checkpoint is not None:
            model = load_checkpoint_gpt(checkpoint, n_head)
        super().__init__(checkpoint=checkpoint, model_seed=model_seed, rank=rank, seed=seed,
                         seq_len=seq_len, batch_size=batch_size, model=model)
        self.n_head = n_head
        self.mean = np.zeros(self.dim, np.float64)

    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serializable."""
        return {**super().params(), "n_head": self.n_head}

    def fit(self, texts: Sequence[str | bytes]) -> None:
        """The corpus mean feature, from the first :data:`FIT_DOCUMENTS` texts."""
        sample = list(texts[:FIT_DOCUMENTS])
        if sample:
            features = self.projector.features(_batch(sample, self.seq_len))
            self.mean = features.detach().double().mean(0).cpu().numpy()

    def embed(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """float32 (len(texts), dim) unit rows of centred features (zeros for an empty text)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self.projector.features(_batch(texts, self.seq_len)).detach().double()
        array = features.cpu().numpy()
        empty = ~np.any(array != 0, axis=1)
        return _unit(np.where(empty[:, None], 0.0, array - self.mean))

    def behavior_direction(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """float32 (dim,): the centred mean-loss gradient feature of a probe set."""
        feature = self.projector.probe_features(_batch(texts, self.seq_len)).detach().double()
        return _unit((feature.cpu().numpy() - self.mean)[None])[0]

    def state(self) -> dict[str, np.ndarray]:
        """The fitted corpus mean feature."""
        return {"mean": self.mean.astype(np.float64)}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state`."""
        if "mean" in state:
            self.mean = np.asarray(state["mean"], np.float64)


def _batch(texts: Sequence[str | bytes], seq_len: int) -> Any:
    from curriculum.attribution.grad_features import byte_document_batch

    return byte_document_batch(texts, seq_len)


def _unit(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.where(norms > 0, norms, 1.0)).astype(np.float32)


register_embedder(CheckpointGradientEmbedder)
