"""Typed configuration of a training run; YAML maps onto it (LightningCLI-style sections)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from curriculum.typed_config import apply_overrides, from_mapping, load_yaml
from loaders.policy_stage import CurriculumStreamConfig
from loaders.stream import StreamConfig
from train.attribution_callback import AttributionSettings
from train.early_checkpoints import EarlyCheckpointConfig
from train.loggers import LoggerConfig
from train.model import GPTConfig
from train.selection_callback import SelectionSettings


@dataclass
class ModelConfig:
    """Which model to train."""

    gpt: GPTConfig = field(default_factory=GPTConfig)
    """Shape of the reference GPT (ignored when ``hf_path`` is set)."""
    hf_path: str | None = None
    """A local directory with a Hugging Face causal LM (``from_pretrained``, never a download)."""


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay, stepped per optimizer step."""

    lr: float = 3e-3
    """Peak learning rate."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (not on biases, norms or embeddings)."""
    beta1: float = 0.9
    """Adam first-moment decay."""
    beta2: float = 0.95
    """Adam second-moment decay."""
    eps: float = 1e-8
    """Adam epsilon."""
    warmup_steps: int = 30
    """Steps of linear warmup from 0 to ``lr``."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` at the end of the cosine."""
    decay_steps: int | None = None
    """Length of the cosine decay in steps; ``None`` uses ``trainer.max_steps``."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""


@dataclass
class DataConfig:
    """Where the training data and probe sets come from."""

    shards: str = ""
    """Corpus directory with a manifest, a glob, a brace pattern or a comma-separated list."""
    probes: str | None = None
    """Directory of ``<behavior>.jsonl`` probe sets (default: ``probes/`` beside the shards)."""
    num_workers: int = 1
    """DataLoader worker processes per rank."""
    stream: StreamConfig = field(default_factory=StreamConfig)
    """Tokenization and packing."""
    probe_docs: int = 32
    """Probe documents per behavior used for probe losses."""
    snapshot_every_n_steps: int = 16
    """Workers send their resumable state with one batch in this many (resuming in between
    replays the batches since the last snapshot)."""
    attribution: AttributionSettings | None = None
    """Online attribution written into the store during training; ``None`` turns it off."""
    curriculum: CurriculumStreamConfig | None = None
    """The curriculum policy and behavior store; ``None`` streams the data unchanged."""
    selection: SelectionSettings | None = None
    """In-batch selection settings, for policies with ``select`` rules (None: defaults)."""


@dataclass
class TrainerConfig:
    """Arguments passed to ``lightning.Trainer``."""

    max_steps: int = 300
    """Optimizer steps to train."""
    accelerator: str = "cpu"
    """``cpu``, ``gpu`` or ``auto``."""
    devices: int = 1
    """Devices (processes) per node."""
    num_nodes: int = 1
    """Nodes."""
    strategy: str = "auto"
    """Lightning strategy, e.g. ``ddp``."""
    precision: str = "32-true"
    """Lightning precision, e.g. ``bf16-mixed`` on GPUs."""
    log_every_n_steps: int = 10
    """How often training metrics are written."""
    checkpoint_every_n_steps: int = 100
    """How often a checkpoint is saved (0 disables)."""
    probe_every_n_steps: int = 25
    """How often probe losses are evaluated and logged."""
    early_checkpoints: EarlyCheckpointConfig | None = None
    """Dense-early checkpoints with sidecars for branching (``None`` disables; ``{}`` = defaults)."""
    tensorboard: bool = False
    """Also log to TensorBoard (event files in ``RUN/tensorboard``); needs the ``tensorboard``
    extra. The CSV logger (``metrics.csv``) is always on."""
    loggers: list[LoggerConfig] = field(default_factory=list)
    """More Lightning loggers by class path (``[{class_path: ..., init_args: {...}}]``)."""


@dataclass
class FitConfig:
    """A whole training run."""

    run_dir: str = "runs/demo"
    """Where checkpoints, ``metrics.csv`` and the resolved config go."""
    seed: int = 0
    """Seed of model initialisation and the data stream."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer and learning-rate schedule."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The trainer."""

    def probes_dir(self) -> Path:
        """The probe directory, defaulting to ``probes/`` next to the shards."""
        if self.data.probes:
            return Path(self.data.probes)
        base = Path(self.data.shards.split(",")[0])
        return (base if base.is_dir() else base.parent) / "probes"


def load_fit_config(path: str | Path | None, overrides: list[str] | None = None) -> FitConfig:
    """Read a fit config from YAML (or defaults), apply ``key=value`` overrides, validate."""
    data = load_yaml(path) if path else {}
    return from_mapping(FitConfig, apply_overrides(data, overrides or []))
