"""Early checkpoints: dense at the start of training, sparse later, each with a JSON sidecar.

Branching experiments ask "what if the data changed from step N on?", and the interesting N are
early, so checkpoints are kept every ``dense_every_n_steps`` up to ``dense_until_step`` and every
``sparse_every_n_steps`` after that. Each checkpoint is a full Lightning checkpoint (weights,
optimizer, schedulers, loop progress, callback states and the ``StatefulDataLoader`` state, which
Lightning stores under ``loops.fit_loop.state_dict.combined_loader``) plus a sidecar
``step-000050.json`` with what a user picks a branch point by: step, tokens seen, curriculum stage
and probe losses at that step. ``index.json`` lists every sidecar of the directory and is
rewritten (atomically) after each save, so it always matches the sidecars on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

EARLY_DIRNAME = "early"
"""Sub-directory of ``<run_dir>/checkpoints`` holding early checkpoints."""
INDEX_NAME = "index.json"


@dataclass
class EarlyCheckpointConfig:
    """When early checkpoints are kept (steps count optimizer steps, like ``trainer.global_step``)."""

    dense_every_n_steps: int = 50
    """Spacing of checkpoints up to ``dense_until_step``."""
    dense_until_step: int = 500
    """Last step of the dense part of the schedule (inclusive)."""
    sparse_every_n_steps: int = 1000
    """Spacing after ``dense_until_step`` (0: no checkpoints after the dense part)."""
    dirpath: str | None = None
    """Directory for checkpoints and sidecars (default ``<run_dir>/checkpoints/early``)."""

    def __post_init__(self) -> None:
        if self.dense_every_n_steps < 1:
            raise ValueError(f"dense_every_n_steps must be >= 1, got {self.dense_every_n_steps}")
        if self.dense_until_step < 0 or self.sparse_every_n_steps < 0:
            raise ValueError("dense_until_step and sparse_every_n_steps must be >= 0")

    def is_checkpoint_step(self, step: int) -> bool:
        """Whether the schedule keeps a checkpoint after optimizer step ``step`` (step 0 never)."""
        if step <= 0:
            return False
        if step <= self.dense_until_step:
            return step % self.dense_every_n_steps == 0
        return self.sparse_every_n_steps > 0 and step % self.sparse_every_n_steps == 0

    def steps_until(self, max_steps: int) -> list[int]:
        """Every checkpoint step in ``1..max_steps``."""
        return [s for s in range(1, max_steps + 1) if self.is_checkpoint_step(s)]


@dataclass
class EarlyCheckpoint:
    """One early checkpoint, as its sidecar describes it."""

    step: int
    """Optimizer steps done when it was saved."""
    tokens_seen: int
    """Tokens trained on by then, over all ranks (per-rank count x world size)."""
    stage: int | str | None
    """Curriculum stage at that step, ``None`` when the run has no curriculum stages."""
    probe_losses: dict[str, float]
    """Mean token loss per behavior probe set at that step."""
    path: str
    """The checkpoint file."""
    epoch: int = 0
    """Lightning epoch (one epoch of the stream; usually 0 for streaming runs)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the sidecar holds (reserved for later fields)."""


def sidecar_path(checkpoint_path: str | Path) -> Path:
    """``step-000050.ckpt`` -> ``step-000050.json``."""
    return Path(checkpoint_path).with_suffix(".json")


def current_stage(trainer: L.Trainer, pl_module: L.LightningModule) -> int | str | None:
    """The curriculum stage, if anything in the run reports one.

    Looked up in order: a ``stage`` attribute of the module, of a callback, then a logged
    ``stage`` metric. ``None`` when the run has no stages (a plain fit).
    """
    candidates = [getattr(pl_module, "stage", None)]
    candidates += [getattr(callback, "stage", None) for callback in trainer.callbacks]
    candidates.append(trainer.callback_metrics.get("stage"))
    for value in candidates:
        if value is None or callable(value):
            continue
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, (int, str)):
            return value
    return None


class EarlyCheckpointCallback(L.Callback):
    """Saves a full checkpoint plus a JSON sidecar at every step of an :class:`EarlyCheckpointConfig`.

    Every rank takes part in ``trainer.save_checkpoint`` (the strategy decides who writes); only
    global rank zero writes sidecars and the index.
    """

    def __init__(self, config: EarlyCheckpointConfig | None = None) -> None:
        self.config = config or EarlyCheckpointConfig()
        self._saved_steps: set[int] = set()

    def directory(self, trainer: L.Trainer) -> Path:
        """Where checkpoints go for this trainer."""
        if self.config.dirpath:
            return Path(self.config.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints" / EARLY_DIRNAME

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """After the optimizer step that completes a scheduled step, save (once per step)."""
        step = trainer.global_step
        if not self.config.is_checkpoint_step(step) or step in self._saved_steps:
            return  # gradient accumulation calls this several times per optimizer step
        self._saved_steps.add(step)
        directory = self.directory(trainer)
        path = directory / f"step-{step:06d}.ckpt"
        # Probe losses first: the same weights the checkpoint holds (no step happens in between).
        losses = pl_module.probe_losses() if hasattr(pl_module, "probe_losses") else {}
        trainer.save_checkpoint(path)
        if not trainer.is_global_zero:
            return
        record = EarlyCheckpoint(
            step=step,
            tokens_seen=int(getattr(pl_module, "tokens_seen", 0)) * trainer.world_size,
            stage=current_stage(trainer, pl_module),
            probe_losses={k: float(v) for k, v in losses.items()},
            path=path.name,
            epoch=trainer.current_epoch,
        )
        _write_json(sidecar_path(path), asdict(record))
        _write_json(directory / INDEX_NAME,
                    [asdict(c) for c in _read_sidecars(directory, join_paths=False)])

    def state_dict(self) -> dict[str, Any]:
        """Steps saved so far, so a resumed run does not save them again."""
        return {"saved_steps": sorted(self._saved_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._saved_steps = set(state_dict.get("saved_steps", []))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def _read_sidecars(directory: Path, join_paths: bool = True) -> list[EarlyCheckpoint]:
    checkpoints = []
    for sidecar in sorted(directory.glob("step-*.json")):
        record = json.loads(sidecar.read_text())
        known = {k: record.pop(k) for k in list(record) if k in EarlyCheckpoint.__dataclass_fields__}
        checkpoint = EarlyCheckpoint(**known)
        checkpoint.extra.update(record)
        if join_paths:
            checkpoint.path = str(directory / checkpoint.path)
        checkpoints.append(checkpoint)
    return sorted(checkpoints, key=lambda c: c.step)


def early_checkpoint_dir(run_or_dir: str | Path) -> Path:
    """The early-checkpoint directory of a run directory (or the directory itself)."""
    path = Path(run_or_dir)
    for candidate in (path / "checkpoints" / EARLY_DIRNAME, path):
        if (candidate / INDEX_NAME).is_file() or any(candidate.glob("step-*.json")):
            return candidate
    raise FileNotFoundError(f"{path}: no early checkpoints (expected checkpoints/{EARLY_DIRNAME}/"
                            f"{INDEX_NAME}; enable trainer.early_checkpoints in the fit config)")


def list_early_checkpoints(run_or_dir: str | Path) -> list[EarlyCheckpoint]:
    """Early checkpoints of a run, by step, read from their sidecars (``path`` joined to the
    checkpoint directory). Sidecars whose checkpoint file is gone are left out."""
    directory = early_checkpoint_dir(run_or_dir)
    return [c for c in _read_sidecars(directory) if Path(c.path).is_file()]


def format_early_checkpoints(checkpoints: list[EarlyCheckpoint]) -> str:
    """A plain-text table: step, tokens seen, stage and one column per probe behavior."""
    behaviors = sorted({b for c in checkpoints for b in c.probe_losses})
    header = ["step", "tokens_seen", "stage", *behaviors]
    rows = [[str(c.step), str(c.tokens_seen), "-" if c.stage is None else str(c.stage),
             *(f"{c.probe_losses[b]:.4f}" if b in c.probe_losses else "-" for b in behaviors)]
            for c in checkpoints]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
