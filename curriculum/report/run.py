"""What a run directory holds, as far as the report is concerned.

A run directory (see the design's contract) has ``metrics.csv``, and, depending on how it was
trained, ``ledger/`` (a curriculum policy was on), ``config.yaml`` and ``policy.yaml`` (copies of
what it trained under), ``lineage.json`` (a branch). The behavior store is found through the
config (``data.attribution.store``, else ``data.curriculum.store``). Anything optional that is
absent is recorded as absent, so the page can say what is missing instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curriculum.report.errors import ReportError

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
POLICY_FILE = "policy.yaml"
LINEAGE_FILE = "lineage.json"
LEDGER_META = Path("ledger") / "meta.json"


@dataclass
class RunInfo:
    """One run directory, with its small files read and its large ones located."""

    path: Path
    """The run directory (resolved)."""
    name: str
    """Short label used in legends and headings (unique within one report)."""
    config_text: str | None = None
    """``config.yaml`` as written; None when absent."""
    config: dict[str, Any] = field(default_factory=dict)
    """``config.yaml`` parsed (``yaml.safe_load``); empty when absent."""
    policy_text: str | None = None
    """``policy.yaml`` as written; None when the run had no curriculum policy."""
    policy: dict[str, Any] = field(default_factory=dict)
    """``policy.yaml`` parsed; empty when absent."""
    lineage: dict[str, Any] | None = None
    """``lineage.json`` of a branch; None for a run trained from scratch."""
    store_path: Path | None = None
    """The behavior store the run read or wrote, when its config names one that exists."""
    store_note: str = ""
    """Why there is no store (empty when there is one)."""

    @property
    def metrics_path(self) -> Path:
        """``RUN/metrics.csv``."""
        return self.path / METRICS_FILE

    @property
    def has_ledger(self) -> bool:
        """The run wrote a ledger (it trained under a curriculum policy)."""
        return (self.path / LEDGER_META).is_file()

    @property
    def attribution_on(self) -> bool:
        """The config turned online attribution on."""
        return bool((self.config.get("data") or {}).get("attribution"))

    def stage_names(self) -> dict[int, str]:
        """Stage index -> name from the policy (empty without a policy)."""
        stages = self.policy.get("stages") if isinstance(self.policy, dict) else None
        if not isinstance(stages, list):
            return {}
        return {i: str(s.get("name", i)) if isinstance(s, dict) else str(i)
                for i, s in enumerate(stages)}


def _read_yaml(path: Path) -> tuple[str | None, dict[str, Any]]:
    if not path.is_file():
        return None, {}
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReportError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return text, data if isinstance(data, dict) else {}


def _find_store(run_dir: Path, config: dict[str, Any]) -> tuple[Path | None, str]:
    data = config.get("data") or {}
    candidates = [((data.get("attribution") or {}).get("store")),
                  ((data.get("curriculum") or {}).get("store"))]
    named = [str(c) for c in candidates if c]
    if not named:
        return None, "the run's config names no behavior store"
    for name in named:
        path = Path(name)
        path = path if path.is_absolute() else (run_dir / path if (run_dir / path).exists()
                                                else Path.cwd() / path)
        if (path / "store.json").is_file():
            return path.resolve(), ""
    return None, f"the behavior store {named[0]} named in config.yaml is not there"


def open_run(path: str | Path, name: str | None = None) -> RunInfo:
    """Read a run directory; :class:`ReportError` (one line) when ``path`` is not one."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such directory")
    if not (run_dir / METRICS_FILE).is_file() and not (run_dir / LEDGER_META).is_file():
        raise ReportError(f"{run_dir}: not a run directory (no {METRICS_FILE} and no "
                          f"{LEDGER_META}); give the directory `curriculum fit` wrote")
    run_dir = run_dir.resolve()
    info = RunInfo(run_dir, name or run_dir.name)
    info.config_text, info.config = _read_yaml(run_dir / CONFIG_FILE)
    info.policy_text, info.policy = _read_yaml(run_dir / POLICY_FILE)
    lineage = run_dir / LINEAGE_FILE
    if lineage.is_file():
        try:
            info.lineage = json.loads(lineage.read_text())
        except json.JSONDecodeError as error:
            raise ReportError(f"{lineage}: damaged ({error})") from None
    info.store_path, info.store_note = _find_store(run_dir, info.config)
    return info


def unique_names(paths: list[Path]) -> list[str]:
    """Legend labels: the directory names, prefixed by their parent where two are equal."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
