"""The run's Lightning loggers: the CSV logger (always: ``metrics.csv`` is part of the run
directory's contract), TensorBoard on a switch, and any Lightning logger named by class path.

Everything the run logs goes to every logger: probe losses (``probe_loss/<behavior>``, written
to ``trainer.loggers`` at the exact step), the stage in effect (``stage``), and attribution
summaries (``attribution/mean_score``, ``attribution/measured_fraction``,
``attribution/probe_loss/<behavior>``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

TENSORBOARD_DIR = "tensorboard"


@dataclass
class LoggerConfig:
    """One more Lightning logger, LightningCLI-style."""

    class_path: str = ""
    """Import path of a ``lightning.pytorch.loggers.Logger`` subclass, e.g.
    ``lightning.pytorch.loggers.WandbLogger``; only Logger subclasses are accepted."""
    init_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of its constructor (YAML values only; nothing is evaluated)."""


def _logger_class(class_path: str) -> type[Logger]:
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ValueError(f"trainer.loggers: class_path {class_path!r} is not a dotted import path")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"trainer.loggers: cannot import {class_path} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ValueError(f"trainer.loggers: {class_path} is not a lightning Logger subclass")
    return cls


def tensorboard_logger(run_dir: Path) -> Logger:
    """Lightning's TensorBoard logger writing event files into ``RUN/tensorboard``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    try:
        return TensorBoardLogger(save_dir=str(run_dir), name=TENSORBOARD_DIR, version="",
                                 default_hp_metric=False)
    except ModuleNotFoundError as error:
        raise ImportError("trainer.tensorboard needs the tensorboard package: pip install "
                          "'curriculum-loader[tensorboard]'") from error


def build_loggers(run_dir: Path, tensorboard: bool = False,
                  extra: list[LoggerConfig] | None = None) -> list[Logger]:
    """The CSV logger first (``RUN/metrics.csv``), then TensorBoard if asked, then ``extra``."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    if tensorboard:
        loggers.append(tensorboard_logger(run_dir))
    for config in extra or []:
        loggers.append(_logger_class(config.class_path)(**config.init_args))
    return loggers
