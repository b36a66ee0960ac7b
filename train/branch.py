"""Branch a run: a new run that starts from a parent checkpoint's weights on a new data stream.

A branch has its own run directory; the parent's files are only ever read. ``lineage.json`` in
the branch records the parent run, the checkpoint (path and sha256), the step and tokens at the
branch point, and how the branch was made (data, mix, policy, learning-rate schedule, optimizer
state). Steps and tokens in the branch's ``metrics.csv`` count from the branch point; add
``branch_step`` for the parent's scale.

Learning-rate schedule on branching (``lr_schedule``):

- ``continue`` (default): the branch follows the parent's schedule from the branch step on, as if
  the parent had kept training (same peak, warmup and decay horizon). With the optimizer state
  also restored, the branch differs from the unbranched run in its data only, which is what a
  sweep compares against.
- ``restart-warmup``: a fresh warmup and cosine decay over the branch's own ``steps``. Use it with
  ``with_optimizer=False`` (fresh Adam moments and the parent's mid-schedule learning rate are a
  poor pair) or when the branch is a new training phase rather than a counterfactual.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import pickle
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from curriculum.shards.manifest import manifest_for
from curriculum.typed_config import apply_overrides, from_mapping, to_mapping
from loaders.mix import MixedDataModule, MixSource
from train.config import FitConfig
from train.early_checkpoints import list_early_checkpoints, sidecar_path
from train.fit import run_fit
from train.run_config import load_run_config

LR_SCHEDULES = ("continue", "restart-warmup")
DEFAULT_LR_SCHEDULE = "continue"
LINEAGE_NAME = "lineage.json"
PARENT_SOURCE = "parent"
"""Name of the parent run's own data in a mix (``--mix parent=0.3``)."""


class BranchError(ValueError):
    """A branch that cannot be made as asked (the message says why)."""


@dataclass
class BranchConfig:
    """How to branch: from which checkpoint, onto which data, for how long."""

    parent_checkpoint: str
    """A checkpoint of the parent run (``.ckpt``, inside the parent's run directory)."""
    data: str
    """Shard spec of the branch's data (a corpus directory, glob, brace pattern or list)."""
    steps: int = 100
    """Optimizer steps to train the branch."""
    run_dir: str | None = None
    """The branch's run directory (default: ``<parent run>-branch-<step>`` beside the parent)."""
    mix: list[tuple[str, float]] = field(default_factory=list)
    """Other sources and their shares, e.g. ``[("parent", 0.3)]``; ``data`` gets the rest."""
    policy: str | None = None
    """Curriculum policy for the branch's stream (a behavior store of the branch's data is built
    inside the branch directory); not combinable with ``mix``."""
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    """``continue`` or ``restart-warmup`` (see the module docstring)."""
    with_optimizer: bool = True
    """Restore the parent's optimizer state (Adam moments) as well as its weights."""
    seed: int | None = None
    """Seed of the branch (default: the parent's)."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides on the branch's fit config (e.g. ``trainer.probe_every_n_steps=10``)."""
    overwrite: bool = False
    """Replace an existing branch in ``run_dir`` (never the parent)."""

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise BranchError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                              f"got {self.lr_schedule!r}")
        if self.steps < 1:
            raise BranchError(f"steps must be >= 1, got {self.steps}")
        shares = [share for _, share in self.mix]
        if any(not 0 <= s < 1 for s in shares) or sum(shares) >= 1:
            raise BranchError(f"mix shares must be in [0, 1) and sum below 1 (the rest goes to "
                              f"--data), got {shares}")


# -- reading checkpoints ----------------------------------------------------------------------
def _numpy_globals() -> list[Any]:
    """What numpy arrays in a checkpoint (the loader's packer buffer) need to unpickle."""
    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return allowed


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a Lightning checkpoint on the CPU; returns it and how it was read.

    ``weights_only=True`` is tried first, with numpy's array reconstructors allowed (the data
    loader's state holds numpy arrays; they rebuild plain arrays and run no code). A checkpoint
    that still fails holds arbitrary Python objects (a custom callback's state, say), which only
    a full unpickle reads; that can run code, so it is done only with a warning, and lineage
    records it. The parent checkpoint comes from the user's own run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True), "weights_only"
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        warnings.warn(f"{path}: not loadable with weights_only=True ({reason}); loading it with a "
                      f"full unpickle because it is the parent run's own checkpoint",
                      RuntimeWarning, stacklevel=2)
        return (torch.load(path, map_location="cpu", weights_only=False),
                f"full unpickle ({reason})")


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_run_dir(checkpoint_path: str | Path) -> Path:
    """The run directory holding a checkpoint: the nearest parent directory with ``config.yaml``."""
    path = Path(checkpoint_path).resolve()
    for directory in path.parents:
        if (directory / "config.yaml").is_file():
            return directory
    raise BranchError(f"{checkpoint_path}: not inside a run directory (no config.yaml above it)")


def find_checkpoint(run_dir: str | Path, step: int) -> Path:
    """The checkpoint of ``run_dir`` at ``step``: an early checkpoint, else ``step-NNNNNN.ckpt``."""
    run_dir = Path(run_dir)
    try:
        for checkpoint in list_early_checkpoints(run_dir):
            if checkpoint.step == step:
                return Path(checkpoint.path)
    except FileNotFoundError:
        pass
    regular = run_dir / "checkpoints" / f"step-{step:06d}.ckpt"
    if regular.is_file():
        return regular
    available = sorted(available_checkpoint_steps(run_dir))
    raise BranchError(f"{run_dir}: no checkpoint at step {step} (available: "
                      f"{', '.join(map(str, available)) or 'none'})")


def available_checkpoint_steps(run_dir: str | Path) -> set[int]:
    """Steps of every early and regular checkpoint of a run."""
    run_dir = Path(run_dir)
    steps = set()
    with contextlib.suppress(FileNotFoundError):
        steps |= {c.step for c in list_early_checkpoints(run_dir)}
    for path in (run_dir / "checkpoints").glob("step-*.ckpt"):
        steps.add(int(path.stem.split("-")[1]))
    return steps


def parent_loader_positions(checkpoint: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Stream positions per DataLoader worker from a checkpoint's ``StatefulDataLoader`` state
    (rank 0's: Lightning saves the loader state of global rank zero)."""
    try:
        loaders = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    except (KeyError, TypeError):
        return {}
    if not loaders:
        return {}
    state = loaders[0]
    workers = state.get("_snapshot", {}).get("_worker_snapshots") if isinstance(state, dict) else None
    if workers:
        found = {int(name.split("_")[-1]): s.get("dataset_state") for name, s in workers.items()}
    else:
        found = {0: state.get("dataset_state") if isinstance(state, dict) else None}
    return {worker: {k: v for k, v in s.items() if k in ("epoch", "cursor", "ordinal", "config")}
            for worker, s in found.items() if isinstance(s, dict) and "epoch" in s}


# -- restoring into the branch ----------------------------------------------------------------
class BranchStartCallback(L.Callback):
    """At fit start, puts the parent's weights (and optimizer and schedule state) into the branch.

    ``on_fit_start`` runs after the strategy has built the optimizers and moved the model to its
    device, and before the first batch, on every rank.
    """

    def __init__(self, checkpoint: dict[str, Any], with_optimizer: bool, continue_schedule: bool) -> None:
        self.checkpoint: dict[str, Any] | None = checkpoint
        self.with_optimizer = with_optimizer
        self.continue_schedule = continue_schedule

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Load weights strictly, then optimizer and scheduler states as configured."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            return  # a second fit with the same callback starts from wherever it is
        pl_module.load_state_dict(checkpoint["state_dict"], strict=True)
        if self.with_optimizer:
            states = checkpoint.get("optimizer_states") or []
            if len(states) != len(trainer.optimizers):
                raise BranchError(f"parent checkpoint has {len(states)} optimizer states, the branch "
                                  f"{len(trainer.optimizers)} optimizers")
            for optimizer, state in zip(trainer.optimizers, states, strict=True):
                optimizer.load_state_dict(state)
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs]
        if self.continue_schedule:
            saved = checkpoint.get("lr_schedulers") or []
            if len(saved) != len(schedulers):
                raise BranchError(f"parent checkpoint has {len(saved)} lr schedulers, the branch "
                                  f"{len(schedulers)}")
            for scheduler, state in zip(schedulers, saved, strict=True):
                scheduler.load_state_dict(state)  # its step count: the schedule goes on from there
        for scheduler in schedulers:
            _apply_current_lr(scheduler)
        self.checkpoint = None  # free the parent's tensors


def _apply_current_lr(scheduler: Any) -> None:
    """Set each group's learning rate to the scheduler's value at its current step (loading an
    optimizer state brings the parent's learning rate, which the branch may not want)."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is None:
        return
    optimizer = scheduler.optimizer
    for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, lambdas, strict=True):
        group["initial_lr"] = base
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


# -- making a branch --------------------------------------------------------------------------
def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"parent=0.3,data/other=0.1"`` -> ``[("parent", 0.3), ("data/other", 0.1)]``.

    A source may itself contain commas (a comma-separated shard list): everything up to ``=`` is
    the source, the number after it ends the entry.
    """
    entries: list[tuple[str, float]] = []
    remaining = text.strip()
    while remaining:
        source, equals, rest = remaining.partition("=")
        if not equals or not source.strip():
            raise BranchError(f"--mix {text!r}: expected SOURCE=SHARE[,SOURCE=SHARE...]")
        number, comma, remaining = rest.partition(",")
        try:
            share = float(number)
        except ValueError:
            raise BranchError(f"--mix {text!r}: {number!r} is not a number") from None
        entries.append((source.strip(), share))
        remaining = remaining.strip() if comma else ""
    return entries


def default_branch_dir(parent_run: Path, step: int) -> Path:
    """``runs/demo`` at step 50 -> ``runs/demo-branch-000050``."""
    return parent_run.parent / f"{parent_run.name}-branch-{step:06d}"


def read_lineage(run_dir: str | Path) -> dict[str, Any]:
    """A branch's ``lineage.json``."""
    path = Path(run_dir) / LINEAGE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a branch (no {LINEAGE_NAME})")
    return json.loads(path.read_text())


def _parent_config(parent_run: Path) -> FitConfig:
    # Paths in it resolve against the parent run directory, so this works from any directory.
    return load_run_config(parent_run)


def _check_output(branch_dir: Path, parent_run: Path, overwrite: bool) -> None:
    resolved = branch_dir.resolve()
    if resolved == parent_run or parent_run in resolved.parents:
        raise BranchError(f"{branch_dir}: a branch may not live inside its parent run {parent_run}")
    if (resolved / LINEAGE_NAME).exists() and not overwrite:
        raise BranchError(f"{branch_dir}: a branch already exists there (choose another --out)")
    if resolved.is_dir() and any(resolved.iterdir()) and not (resolved / LINEAGE_NAME).exists():
        raise BranchError(f"{branch_dir}: directory exists and is not a branch")


@dataclass
class PreparedBranch:
    """Everything :func:`run_branch` needs to train (exposed for tests and custom loops)."""

    config: FitConfig
    """The branch's fit config (also written to its ``config.yaml``)."""
    lineage: dict[str, Any]
    """What ``lineage.json`` holds."""
    callbacks: list[L.Callback]
    """The :class:`BranchStartCallback` (and nothing else)."""
    datamodule: L.LightningDataModule | None
    """A mixed data module, or ``None`` for the plain one built from ``config.data``."""


def prepare_branch(branch: BranchConfig) -> PreparedBranch:
    """Read the parent, build the branch's config, callbacks and data, without training."""
    checkpoint_path = Path(branch.parent_checkpoint).resolve()
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"{branch.parent_checkpoint}: checkpoint not found")
    parent_run = find_run_dir(checkpoint_path)
    parent = _parent_config(parent_run)
    checkpoint, how_loaded = load_checkpoint(checkpoint_path)
    step = int(checkpoint.get("global_step", 0))
    branch_dir = Path(branch.run_dir) if branch.run_dir else default_branch_dir(parent_run, step)
    _check_output(branch_dir, parent_run, branch.overwrite)

    config = copy.deepcopy(parent)
    config.run_dir = str(branch_dir)
    config.seed = parent.seed if branch.seed is None else branch.seed
    config.data.shards = branch.data
    config.data.probes = str(parent.probes_dir().resolve())  # comparable probe losses
    # The parent's curriculum (policy + behavior store) describes the parent's rows, not the
    # branch's data; a branch streams its data unchanged unless given its own curriculum.
    if hasattr(config.data, "curriculum"):
        config.data.curriculum = None
    config.trainer.max_steps = branch.steps
    config.trainer.early_checkpoints = None
    if branch.lr_schedule == "continue":
        config.optim.decay_steps = parent.optim.decay_steps or parent.trainer.max_steps
    else:
        config.optim.decay_steps = None  # warmup, then decay over the branch's own steps
    if branch.overrides:
        config = from_mapping(FitConfig, apply_overrides(to_mapping(config), branch.overrides))
    if branch.policy:
        if branch.mix:
            raise BranchError("--policy with --mix is not supported: a policy decides the rows "
                              "of one corpus and its behavior store")
        # A policy reads the store of the branch's own corpus: index it with the parent's probe
        # sets (so the behaviors match), once, inside the branch directory.
        from curriculum.store import build_store
        from loaders.policy_stage import CurriculumStreamConfig

        store_dir = branch_dir / "store"
        if not store_dir.exists():
            branch_dir.mkdir(parents=True, exist_ok=True)
            build_store(config.data.shards, config.data.probes, store_dir)
        config.data.curriculum = CurriculumStreamConfig(policy=branch.policy, store=str(store_dir))

    parent_world = parent.trainer.devices * parent.trainer.num_nodes
    branch_world = config.trainer.devices * config.trainer.num_nodes
    sources: list[MixSource] = []
    if branch.mix:
        share_of_data = 1.0 - sum(share for _, share in branch.mix)
        sources.append(MixSource(manifest_for(branch.data), share_of_data, name=branch.data))
        for name, share in branch.mix:
            if name != PARENT_SOURCE:
                sources.append(MixSource(manifest_for(name), share, name=name))
                continue
            positions = parent_loader_positions(checkpoint)
            seeds = {p.get("config", {}).get("seed") for p in positions.values()} - {None}
            if parent_world != 1 or branch_world != 1 or \
                    parent.data.num_workers != config.data.num_workers:
                warnings.warn("the parent's stream restarts from its beginning in the mix: its "
                              "checkpointed position is only reusable with one process and the "
                              "same num_workers", RuntimeWarning, stacklevel=2)
                positions = {}
            sources.append(MixSource(manifest_for(parent.data.shards), share, name=PARENT_SOURCE,
                                     seed=seeds.pop() if len(seeds) == 1 else None,
                                     start_positions=positions or None))

    sidecar = sidecar_path(checkpoint_path)
    parent_losses = json.loads(sidecar.read_text()).get("probe_losses") if sidecar.is_file() else None
    lineage = {
        "parent_run": str(parent_run),
        "parent_checkpoint": str(checkpoint_path),
        "parent_checkpoint_sha256": sha256_file(checkpoint_path),
        "checkpoint_load": how_loaded,
        "branch_step": step,
        "branch_tokens_seen": int(checkpoint.get("tokens_seen", 0)) * parent_world,
        "parent_probe_losses_at_branch": parent_losses,
        "data": branch.data,
        "mix": [{"source": s.name, "share": float(s.proportion)} for s in sources] or None,
        "policy": branch.policy,
        "lr_schedule": branch.lr_schedule,
        "with_optimizer": branch.with_optimizer,
        "steps": branch.steps,
        "seed": config.seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    datamodule = None
    if sources:
        stream = config.data.stream
        stream.seed = config.seed if stream.seed == 0 else stream.seed
        datamodule = MixedDataModule(sources, stream=stream, num_workers=config.data.num_workers)
    callbacks: list[L.Callback] = [BranchStartCallback(
        checkpoint, branch.with_optimizer, continue_schedule=branch.lr_schedule == "continue")]
    return PreparedBranch(config, lineage, callbacks, datamodule)


def run_branch(branch: BranchConfig, callbacks: Sequence[L.Callback] = ()) -> Path:
    """Make the branch, write ``lineage.json``, train it; returns the branch's run directory."""
    prepared = prepare_branch(branch)
    run_dir = Path(prepared.config.run_dir)
    if branch.overwrite and (run_dir / LINEAGE_NAME).is_file():
        shutil.rmtree(run_dir)  # an earlier branch (checked by prepare_branch), never a parent
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LINEAGE_NAME).write_text(json.dumps(prepared.lineage, indent=1))
    return run_fit(prepared.config, callbacks=[*prepared.callbacks, *callbacks],
                   datamodule=prepared.datamodule)


def lineage_summary(lineage: dict[str, Any]) -> str:
    """One line: parent, step, data and schedule of a branch."""
    mix = ", ".join(f"{m['source']}={m['share']:.2f}" for m in lineage.get("mix") or [])
    return (f"branch of {lineage['parent_run']} at step {lineage['branch_step']} "
            f"({lineage['branch_tokens_seen']} tokens) onto {lineage['data']}"
            f"{' mixed ' + mix if mix else ''}; lr schedule {lineage['lr_schedule']}, "
            f"optimizer state {'restored' if lineage['with_optimizer'] else 'fresh'}")

