"""The report is a core-level package: its modules import neither ``loaders`` nor ``train``."""

from __future__ import annotations

import ast
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "curriculum" / "report"


def test_report_modules_import_neither_loaders_nor_train() -> None:
    offenders = []
    for path in sorted(REPORT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {name}" for name in names
                          if name.split(".")[0] in ("loaders", "train")]
    assert len(list(REPORT.glob("*.py"))) >= 10
    assert not offenders, offenders
