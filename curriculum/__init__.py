"""Curriculum-scheduled language-model pre-training driven by attributed behavior.

The public API: import from here, not from the implementation packages. Names are resolved
lazily (PEP 562), so ``import curriculum`` is cheap and the implementation packages, which use
``curriculum``'s own modules, never meet a half-initialised package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it: what the README's examples use. Everything else is
#: importable from its own module (e.g. ``from train.model import GPT``) but not promised here.
_EXPORTS: dict[str, str] = {
    # corpora and shards
    "write_synthetic_corpus": "curriculum.synth",
    "convert_to_shards": "curriculum.shards.writer",
    "manifest_for": "curriculum.shards.manifest",
    # behavior store
    "BehaviorStore": "curriculum.store",
    "build_store": "curriculum.store",
    # policies
    **{name: "policies" for name in (
        "BasePolicy", "CurriculumDriver", "CurriculumState", "Defer", "Drop", "Emit",
        "PolicyRunner", "load_policy", "preview_policy", "register_policy")},
    # the loader and training
    "CurriculumDataModule": "loaders.datamodule",
    "StreamConfig": "loaders.stream",
    "CurriculumLM": "train.module",
    "CurriculumCallback": "train.curriculum_callback",
    "ExactLoaderStateCallback": "train.loader_state",
    "ProbeLossCallback": "train.callbacks",
    "FitConfig": "train.config",
    "load_fit_config": "train.config",
    "run_fit": "train.fit",
    # ledger and attribution
    **{name: "curriculum.ledger" for name in ("Fate", "check_ledger", "read_ledger")},
    "InRunAttributor": "curriculum.attribution",
    # branching and synthetic data
    "list_early_checkpoints": "train.early_checkpoints",
    "run_branch": "train.branch",
    "LMGeneratorConfig": "curriculum.lm_generator",
    "write_lm_corpus": "curriculum.lm_generator",
    # the report, and loggers beside the CSV logger
    "build_report": "curriculum.report",
    "curate": "curriculum.curation",
    "LoggerConfig": "train.loggers",
}

if TYPE_CHECKING:  # what IDEs and type checkers resolve; at run time names load lazily
    from curriculum.attribution import InRunAttributor
    from curriculum.curation import curate
    from curriculum.ledger import Fate, check_ledger, read_ledger
    from curriculum.lm_generator import LMGeneratorConfig, write_lm_corpus
    from curriculum.report import build_report
    from curriculum.shards.manifest import manifest_for
    from curriculum.shards.writer import convert_to_shards
    from curriculum.store import BehaviorStore, build_store
    from curriculum.synth import write_synthetic_corpus
    from loaders.datamodule import CurriculumDataModule
    from loaders.stream import StreamConfig
    from policies import (
        BasePolicy,
        CurriculumDriver,
        CurriculumState,
        Defer,
        Drop,
        Emit,
        PolicyRunner,
        load_policy,
        preview_policy,
        register_policy,
    )
    from train.branch import run_branch
    from train.callbacks import ProbeLossCallback
    from train.config import FitConfig, load_fit_config
    from train.curriculum_callback import CurriculumCallback
    from train.early_checkpoints import list_early_checkpoints
    from train.fit import run_fit
    from train.loader_state import ExactLoaderStateCallback
    from train.loggers import LoggerConfig
    from train.module import CurriculumLM

__all__ = [  # the same names as _EXPORTS (a test checks), spelled out for tools
    "BasePolicy", "BehaviorStore", "CurriculumCallback", "CurriculumDataModule", "CurriculumDriver",
    "CurriculumLM", "CurriculumState", "Defer", "Drop", "Emit", "ExactLoaderStateCallback", "Fate",
    "FitConfig", "InRunAttributor", "LMGeneratorConfig", "LoggerConfig", "PolicyRunner",
    "ProbeLossCallback", "StreamConfig", "build_report", "build_store", "check_ledger",
    "convert_to_shards", "curate", "list_early_checkpoints", "load_fit_config", "load_policy",
    "manifest_for", "preview_policy", "read_ledger", "register_policy", "run_branch", "run_fit",
    "write_lm_corpus", "write_synthetic_corpus",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'curriculum' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
