"""Fit a model on a shard stream: the run directory, logger, checkpoints and probe losses."""

from __future__ import annotations

import csv
import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from curriculum.typed_config import to_mapping
from loaders.datamodule import CurriculumDataModule
from loaders.tokenize import make_tokenizer
from train.attribution_callback import AttributionCallback
from train.callbacks import ProbeLossCallback
from train.config import FitConfig
from train.curriculum_callback import CurriculumCallback
from train.early_checkpoints import EarlyCheckpointCallback
from train.loader_state import ExactLoaderStateCallback
from train.loggers import build_loggers
from train.module import CurriculumLM
from train.probes import load_probe_batches
from train.run_config import RUN_CONFIG_NAME, recorded_config
from train.selection_callback import SelectionCallback, selection_plan_for


def load_run_policy(run_dir: Path, curriculum: Any, resuming: bool) -> Any:
    """The run's policy, parsed once from ``RUN/policy.yaml`` (copied there first unless
    resuming): what the data module, the curriculum callback and selection all use."""
    from curriculum.store import StoreReader
    from loaders.datamodule import run_policy
    from policies import load_policy_text

    path, text = run_policy(run_dir, curriculum.policy, resuming)
    return load_policy_text(text, StoreReader(curriculum.store), source=str(path))


def build_trainer(config: FitConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """A ``lightning.Trainer`` writing ``metrics.csv`` and checkpoints into ``run_dir``."""
    trainer_config = config.trainer
    if trainer_config.checkpoint_every_n_steps > 0:
        callbacks = [*callbacks, ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="step-{step:06d}",
            every_n_train_steps=trainer_config.checkpoint_every_n_steps,
            save_top_k=-1, save_last=True, auto_insert_metric_name=False,
        )]
    if trainer_config.early_checkpoints is not None:
        callbacks = [*callbacks, EarlyCheckpointCallback(trainer_config.early_checkpoints)]
    return L.Trainer(
        default_root_dir=run_dir,
        max_steps=trainer_config.max_steps,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=trainer_config.strategy,
        precision=trainer_config.precision,
        logger=build_loggers(run_dir, trainer_config.tensorboard, trainer_config.loggers),
        callbacks=callbacks,
        log_every_n_steps=trainer_config.log_every_n_steps,
        gradient_clip_val=config.optim.grad_clip or None,
        # The stream splits data by rank itself; a DistributedSampler must not be injected.
        use_distributed_sampler=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def run_fit(config: FitConfig, ckpt_path: str | None = None, *,
            callbacks: Sequence[L.Callback] = (),
            datamodule: L.LightningDataModule | None = None) -> Path:
    """Train as ``config`` says and return the run directory.

    ``callbacks`` are added to the trainer's; ``datamodule`` replaces the one built from
    ``config.data`` (branches use both: see :mod:`train.branch`).

    The run directory receives ``config.yaml`` (the resolved config), ``metrics.csv`` (with
    ``probe_loss/<behavior>`` columns) and ``checkpoints/``.
    """
    if not config.data.shards:
        raise ValueError("data.shards is empty: name a corpus directory or shard pattern")
    run_dir = Path(config.run_dir)
    ckpt_path = resolve_checkpoint(run_dir, ckpt_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Recorded with absolute paths, so the run directory means the same from any directory.
    (run_dir / RUN_CONFIG_NAME).write_text(
        yaml.safe_dump(to_mapping(recorded_config(config)), sort_keys=False))
    L.seed_everything(config.seed, verbose=False)
    # The config given is never changed: what the run derives from it goes into copies.
    stream = config.data.stream
    stream = dataclasses.replace(stream, seed=config.seed if stream.seed == 0 else stream.seed)
    policy = None
    if config.data.curriculum is not None and datamodule is None:
        # Parsed once here, from the run's own copy; the data module and selection share it.
        policy = load_run_policy(run_dir, config.data.curriculum, ckpt_path is not None)
    selection = selection_plan_for(config.data.selection, config.data.curriculum, policy)
    if selection is not None and datamodule is None:
        # The loader delivers candidate batches; the select rule keeps a fraction of them.
        stream = dataclasses.replace(stream,
                                     batch_size=stream.batch_size * selection.candidate_factor)
    if datamodule is None:
        datamodule = CurriculumDataModule(config.data.shards, stream=stream,
                                          curriculum=config.data.curriculum,
                                          num_workers=config.data.num_workers, run_dir=str(run_dir),
                                          snapshot_every_n_steps=config.data.snapshot_every_n_steps,
                                          resuming=ckpt_path is not None,
                                          loaded_policy=policy)
    all_callbacks: list[L.Callback] = [ProbeLossCallback(config.trainer.probe_every_n_steps),
                                       ExactLoaderStateCallback(), *callbacks]
    if getattr(datamodule, "curriculum", None) is not None:
        # The data module copies the policy into RUN/policy.yaml (kept as it is on resume).
        all_callbacks.append(CurriculumCallback(str(run_dir)))
    if selection is not None:
        if config.data.attribution is not None:
            raise ValueError("data.attribution and a policy with 'select' rules: selection "
                             "already scores every step and writes the scores to the store "
                             "(tune it under data.selection); remove data.attribution")
        all_callbacks.append(SelectionCallback(str(run_dir), selection))
    if config.data.attribution is not None:
        settings = config.data.attribution
        if not settings.store and config.data.curriculum is not None:
            settings = dataclasses.replace(settings, store=config.data.curriculum.store)
        if not settings.store:
            raise ValueError("data.attribution needs a behavior store: set data.attribution.store "
                             "or data.curriculum.store")
        all_callbacks.append(AttributionCallback(settings))
    module = CurriculumLM(config.model, config.optim, config.trainer.max_steps)
    tokenizer = make_tokenizer(stream.tokenizer)
    module.probe_batches = load_probe_batches(config.probes_dir(), tokenizer, stream.seq_len,
                                              config.data.probe_docs)
    trainer = build_trainer(config, run_dir, all_callbacks)
    with warnings.catch_warnings():
        # config.yaml is ours; the logger only replaces its own metrics.csv.
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return run_dir


def resolve_checkpoint(run_dir: Path, ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from: a path as given, or ``"last"`` (as Lightning's
    ``ckpt_path="last"``): the run's newest checkpoint (:func:`latest_checkpoint`); ``"last"``
    in a run without checkpoints starts from scratch, with a warning."""
    if ckpt_path != "last":
        return ckpt_path
    found = latest_checkpoint(run_dir)
    if found is None:
        warnings.warn(f"{run_dir}: no checkpoint to resume from ('last'); training from scratch",
                      RuntimeWarning, stacklevel=3)
        return None
    return str(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run under ``RUN/checkpoints/`` (periodic, ``last.ckpt`` or
    early ones), by modification time; ``None`` when there is none."""
    found = sorted((p.stat().st_mtime_ns, p.name == "last.ckpt", str(p))
                   for p in (Path(run_dir) / "checkpoints").rglob("*.ckpt"))
    return Path(found[-1][2]) if found else None


def read_probe_losses(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{behavior: [(step, loss), ...]}`` from a run's ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    with (Path(run_dir) / "metrics.csv").open() as handle:
        for record in csv.DictReader(handle):
            for column, value in record.items():
                if column.startswith("probe_loss/") and value not in ("", None):
                    series.setdefault(column.split("/", 1)[1], []).append(
                        (int(record["step"]), float(value)))
    return series
