"""The public API resolves, and the command line answers --help for every subcommand."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import curriculum
from curriculum.cli import COMMANDS, build_parser


def test_every_exported_name_resolves() -> None:
    for name in curriculum.__all__:
        assert getattr(curriculum, name) is not None, name
    with pytest.raises(AttributeError):
        curriculum.not_a_name  # noqa: B018


def test_the_public_api_is_what_the_readme_uses() -> None:
    from curriculum import _EXPORTS

    assert curriculum.__all__ == sorted(_EXPORTS)
    assert 25 <= len(curriculum.__all__) <= 35


def test_the_readme_examples_import() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    imports = [node for block in blocks for node in ast.parse(block).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    from_curriculum = [n for n in imports if isinstance(n, ast.ImportFrom)
                       and n.module == "curriculum"]
    assert len(from_curriculum) >= 3
    for node in imports:
        exec(compile(ast.Module([node], []), "README.md", "exec"), {})  # noqa: S102
    for node in from_curriculum:  # the README imports only what the facade promises
        assert {alias.name for alias in node.names} <= set(curriculum.__all__)


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    assert {"demo", "synth", "shard", "fit"} <= set(subcommands)
    assert set(subcommands) <= set(COMMANDS)
    for name in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: curriculum {name}" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_code_2(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "curriculum", "shard", str(tmp_path / "no.jsonl"),
                             str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"curriculum shard: error: {tmp_path / 'no.jsonl'}: input not found")
