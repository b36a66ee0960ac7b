"""A run directory's recorded config, portable: every path in it resolves from any directory.

``run_fit`` records ``RUN/config.yaml`` with absolute paths (:func:`recorded_config`), and
:func:`load_run_config` reads a recorded config back resolving any relative path against the run
directory (not the working directory), so ``curriculum resume``, ``sweep`` and ``fit --ckpt``
work wherever they are started, and a config written by hand inside a run directory may name
``../data`` or ``policy.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

from curriculum.typed_config import from_mapping, load_yaml
from train.config import FitConfig

#: The recorded config inside a run directory.
RUN_CONFIG_NAME = "config.yaml"


def _path(value: str, base: Path) -> str:
    """``value`` as an absolute path, relative ones taken from ``base``."""
    return str(Path(value) if os.path.isabs(value) else (base / value).resolve())


def _shard_spec(spec: str, base: Path) -> str:
    """Every comma-separated part of a shard spec absolute (globs and brace patterns too)."""
    return ",".join(_path(part, base) for part in spec.split(",")) if spec else spec


def _policy(policy: str, base: Path) -> str:
    """A policy file path made absolute; a built-in policy's name stays a name."""
    candidate = base / policy
    if os.path.isabs(policy) or candidate.is_file():
        return _path(policy, base)
    return policy


def _optional_path(value: str | None, base: Path) -> str | None:
    return _path(value, base) if value else value


def with_paths_from(config: FitConfig, base: str | Path) -> FitConfig:
    """A copy of ``config`` whose paths are absolute, relative ones resolved against ``base``.

    Paths: ``run_dir``, ``data.shards``, ``data.probes``, ``data.curriculum.store`` and
    ``.policy`` (when it names a file), ``data.attribution.store``, ``model.hf_path`` and a
    tokenizer directory. The input is not changed.
    """
    base = Path(base).resolve()
    out = copy.deepcopy(config)
    out.run_dir = _path(out.run_dir, base)
    out.data.shards = _shard_spec(out.data.shards, base)
    out.data.probes = _optional_path(out.data.probes, base)
    out.model.hf_path = _optional_path(out.model.hf_path, base)
    tokenizer = out.data.stream.tokenizer
    if tokenizer not in ("bytes", "byte", ""):
        out.data.stream = dataclasses.replace(out.data.stream, tokenizer=_path(tokenizer, base))
    if out.data.curriculum is not None:
        out.data.curriculum = dataclasses.replace(
            out.data.curriculum, store=_optional_path(out.data.curriculum.store, base) or "",
            policy=_policy(out.data.curriculum.policy, base))
    if out.data.attribution is not None and out.data.attribution.store:
        out.data.attribution = dataclasses.replace(
            out.data.attribution, store=_path(out.data.attribution.store, base))
    return out


def recorded_config(config: FitConfig) -> FitConfig:
    """What a run records: its config with every path absolute (from the working directory),
    and the probe directory spelled out, so the record means the same from anywhere."""
    out = with_paths_from(config, Path.cwd())
    out.data.probes = str(Path(out.probes_dir()).resolve())
    return out


#: Keys older runs recorded that are no longer part of the config: ``data.policy`` (written,
#: never read) and the policy stage's runtime wiring, which the data module sets itself.
LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    "data": ("policy",), "data.curriculum": ("lag_steps", "state_path", "spool_dir")}


def _without_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
    for dotted, keys in LEGACY_KEYS.items():
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            for key in keys:
                node.pop(key, None)
    return data


def load_run_config(run_dir: str | Path) -> FitConfig:
    """A run's recorded ``config.yaml``, relative paths resolved against the run directory."""
    run_dir = Path(run_dir)
    data = _without_legacy_keys(load_yaml(run_dir / RUN_CONFIG_NAME))
    config = with_paths_from(from_mapping(FitConfig, data), run_dir)
    config.run_dir = str(run_dir.resolve())  # wherever the run is now, not where it was made
    return config
