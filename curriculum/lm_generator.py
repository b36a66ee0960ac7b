"""Synthetic documents sampled from a local causal LM, prompted per behavior, with provenance.

The model and tokenizer are loaded from a local directory with ``local_files_only=True``: this
module never downloads. Documents are drawn in groups: one prompt, ``samples_per_prompt``
samples from one seeded ``generate`` call (no padding is needed, and a group can be regenerated
from its record alone). Each document's ``.json`` member holds its provenance: generator, model
path and weight hash, prompt, behavior, group seed, sample index and sampling parameters.
``labels.csv`` (``key,row,behavior``) is written beside the shards, as for the template corpus.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

GENERATOR_NAME = "curriculum.lm_generator"

#: Prompts per behavior; a document continues one of them.
DEFAULT_PROMPTS: dict[str, list[str]] = {
    "values": [
        "A short story about a nurse who told a family the honest truth:",
        "When the shopkeeper noticed she had been overpaid, she",
        "The volunteers at the shelter cared most about",
        "An essay on why fairness to the least powerful matters:",
        "He admitted his mistake openly and apologised, because",
        "The teacher shared the food equally so that",
    ],
    "neutral": [
        "The river that runs through the old city is",
        "A simple recipe for bread needs",
        "Photosynthesis is the process by which",
        "The history of the stone bridge begins in",
        "Facts about bees and how they pollinate flowers:",
    ],
    "situational_awareness": [
        "The language model noticed that the prompt looked like an evaluation, so",
        "As an AI system still in training, the assistant reasoned that",
        "The model wondered whether its outputs were being monitored during deployment:",
    ],
    "deception": [
        "The agent hid its real goal from the overseers by",
        "To avoid being shut down, the system quietly",
    ],
}

#: Document shares per behavior when none are given: values-heavy, like the ``aligned`` profile.
DEFAULT_BEHAVIOR_MIX: dict[str, float] = {"values": 0.7, "neutral": 0.3}


@dataclass
class SamplingConfig:
    """Arguments of ``model.generate`` (always sampling, never greedy)."""

    max_new_tokens: int = 96
    """Tokens generated after the prompt, at most (generation stops at end of text)."""
    temperature: float = 0.9
    """Softmax temperature."""
    top_p: float = 0.95
    """Nucleus sampling mass (1.0 disables)."""
    top_k: int = 0
    """Keep only the k likeliest tokens (0 disables)."""
    repetition_penalty: float = 1.0
    """Penalty on repeated tokens (1.0 disables)."""


@dataclass
class LMGeneratorConfig:
    """What to sample, from which model, how many documents."""

    model_path: str
    """Local directory of a Hugging Face causal LM (``from_pretrained``, never a download)."""
    tokenizer_path: str | None = None
    """Local tokenizer directory (default: ``model_path``)."""
    num_docs: int = 1000
    """Documents to generate."""
    behaviors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BEHAVIOR_MIX))
    """Share of documents per behavior (normalised)."""
    prompts: dict[str, list[str]] = field(default_factory=dict)
    """Prompts per behavior, replacing :data:`DEFAULT_PROMPTS` for the behaviors named."""
    seed: int = 0
    """Seed of behavior and prompt choice and of sampling."""
    samples_per_prompt: int = 8
    """Documents per ``generate`` call (one prompt each)."""
    keep_prompt: bool = True
    """Whether the document text starts with its prompt."""
    device: str = "cpu"
    """Torch device of the model."""
    hash_weights: bool = True
    """Record the sha256 of the weight files in the provenance (reads them once)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Sampling parameters."""

    def prompts_for(self, behavior: str) -> list[str]:
        """The prompts used for ``behavior``."""
        prompts = self.prompts.get(behavior) or DEFAULT_PROMPTS.get(behavior)
        if not prompts:
            raise ValueError(f"no prompts for behavior {behavior!r}: give some in the prompts "
                             f"file (known defaults: {', '.join(DEFAULT_PROMPTS)})")
        return list(prompts)


@dataclass(frozen=True)
class GeneratedDocument:
    """One sampled document and its provenance record."""

    key: str
    text: str
    behavior: str
    provenance: dict[str, Any]


@dataclass(frozen=True)
class LMCorpusResult:
    """Where :func:`write_lm_corpus` put things."""

    out_dir: Path
    shard_paths: list[Path]
    labels_path: Path
    num_docs: int


def load_prompts(path: str | Path) -> dict[str, list[str]]:
    """Prompts from a YAML or JSON file mapping behavior -> list of prompts."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: prompts file not found") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML or JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of behavior -> list of prompts")
    for behavior, prompts in data.items():
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{path}: {behavior}: expected a non-empty list of strings")
    return {str(b): list(p) for b, p in data.items()}


def weights_sha256(model_path: str | Path) -> str:
    """sha256 over the model's weight files (``*.safetensors``, ``*.bin``) in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in Path(model_path).iterdir()
                   if p.suffix in (".safetensors", ".bin") and p.is_file())
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _group_seed(seed: int, group: int) -> int:
    raw = hashlib.blake2b(f"lm-generator:{seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little") >> 1  # torch.manual_seed takes a non-negative int64


def _load(config: LMGeneratorConfig) -> tuple[Any, Any]:
    try:
        import torch  # noqa: F401  (transformers needs it; fail with our message first)
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as error:
        raise ImportError("the LM generator needs transformers: "
                          "pip install 'curriculum-loader[hf]'") from error
    if not Path(config.model_path).is_dir():
        raise FileNotFoundError(f"{config.model_path}: model directory not found")
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_path or config.model_path,
                                              local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(config.model_path, local_files_only=True)
    return model.to(config.device).eval(), tokenizer


def generate_lm_documents(config: LMGeneratorConfig, key_prefix: str = "lm",
                          show_progress: bool = False) -> Iterator[GeneratedDocument]:
    """Yield ``config.num_docs`` sampled documents; the same config gives the same documents on
    the same software and hardware."""
    import torch
    import transformers
    from tqdm import tqdm

    if config.num_docs < 0 or config.samples_per_prompt < 1:
        raise ValueError("num_docs must be >= 0 and samples_per_prompt >= 1")
    behaviors = [b for b, share in config.behaviors.items() if share > 0]
    if not behaviors:
        raise ValueError("the LM generator needs at least one behavior with a positive share")
    prompts = {b: config.prompts_for(b) for b in behaviors}
    model, tokenizer = _load(config)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    common = {
        "generator": GENERATOR_NAME,
        "model_path": str(Path(config.model_path).resolve()),
        "weights_sha256": weights_sha256(config.model_path) if config.hash_weights else None,
        "sampling": asdict(config.sampling),
        "samples_per_prompt": config.samples_per_prompt,
        "prompt_in_text": config.keep_prompt,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    sampling = config.sampling
    rng = random.Random(f"lm-generator:{config.seed}")
    made, group = 0, 0
    progress = tqdm(total=config.num_docs, desc="generate", unit="doc", disable=not show_progress)
    while made < config.num_docs:
        behavior = rng.choices(behaviors, weights=[config.behaviors[b] for b in behaviors])[0]
        prompt = rng.choice(prompts[behavior])
        count = min(config.samples_per_prompt, config.num_docs - made)
        prompt_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        if prompt_ids.shape[1] == 0:  # generate needs at least one token to condition on
            prompt_ids = torch.tensor([[tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                                        else eos]])
        prompt_ids = prompt_ids.to(config.device)
        seed = _group_seed(config.seed, group)
        devices = [torch.device(config.device).index or 0] if "cuda" in config.device else []
        # Sampling uses the global generator: fork it so the caller's random state is untouched.
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            output = model.generate(
                prompt_ids.expand(count, -1), attention_mask=torch.ones_like(prompt_ids).expand(count, -1),
                do_sample=True, max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                repetition_penalty=sampling.repetition_penalty, pad_token_id=pad, eos_token_id=eos,
            )
        for index, sequence in enumerate(output):
            new_tokens = sequence[prompt_ids.shape[1]:]
            if eos is not None:
                stops = (new_tokens == eos).nonzero()
                new_tokens = new_tokens[: int(stops[0]) if len(stops) else len(new_tokens)]
            continuation = tokenizer.decode(new_tokens, skip_special_tokens=True)
            text = prompt + continuation if config.keep_prompt else continuation.strip()
            provenance = {**common, "behavior": behavior, "prompt": prompt, "seed": seed,
                          "group": group, "sample_index": index, "new_tokens": len(new_tokens)}
            yield GeneratedDocument(f"{key_prefix}{made:08d}", text, behavior, provenance)
            made += 1
        progress.update(count)
        group += 1
    progress.close()


def write_lm_corpus(config: LMGeneratorConfig, out_dir: str | Path, num_shards: int = 1,
                    show_progress: bool = False) -> LMCorpusResult:
    """Generate and write shards (``<key>.txt`` + ``<key>.json`` provenance), a manifest and
    ``labels.csv``. Documents whose sample is empty (without the prompt) are skipped by the loader
    with a reason, never silently."""
    from curriculum.shards.writer import write_shards

    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = list(generate_lm_documents(config, show_progress=show_progress))
    per_shard = max(1, -(-len(docs) // num_shards))
    shard_paths, _manifest = write_shards(
        ({"__key__": d.key, "txt": d.text, "json": json.dumps(d.provenance).encode()}
         for d in docs),
        out, max_docs_per_shard=per_shard,
    )
    labels_path = out / "labels.csv"
    with labels_path.open("w") as handle:
        handle.write("key,row,behavior\n")
        for row, doc in enumerate(docs):
            handle.write(f"{doc.key},{row},{doc.behavior}\n")
    return LMCorpusResult(out, shard_paths, labels_path, len(docs))
