"""The import contract: layers import downwards only, and no two parts of the project import
each other (also through imports inside functions, which hid the cycles this test was written
against).

Layers, top to bottom (DESIGN.md): the command line (``curriculum.commands``, ``curriculum.cli``)
and the public facade (``curriculum/__init__.py``); ``train`` and ``curriculum.curation``;
``loaders`` and ``curriculum.report``; ``policies``; the core
(every other module of ``curriculum``: shards, store, ledger, attribution, configs, corpora). A
short walk over the import statements of every file rather than import-linter: the rules are
five layers and a cycle check, the walk sees imports inside functions too, and it needs no new
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curriculum", "loaders", "policies", "train")
LAYER = {"core": 0, "policies": 1, "loaders": 2, "train": 3, "top": 4}
#: Subpackages of ``curriculum`` that sit above the core (DESIGN.md's layer picture): curation
#: beside ``train`` (it reads the policy language's YAML machinery), the report beside ``loaders``.
SUBPACKAGE_LAYER = {"curriculum.curation": "train", "curriculum.report": "loaders"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    """The unit a module belongs to: a subpackage of ``curriculum`` or a top-level package."""
    pieces = module.split(".")
    if pieces[0] == "curriculum" and len(pieces) > 1:
        if pieces[1] in ("commands", "cli", "__main__"):
            return "curriculum.commands"
        if (ROOT / "curriculum" / pieces[1]).is_dir():
            return f"curriculum.{pieces[1]}"
        return "curriculum.core"  # top-level modules: synth, typed_config, ...
    return pieces[0]


def layer_of(module: str) -> int:
    part = part_of(module)
    if part == "curriculum.commands" or module == "curriculum":
        return LAYER["top"]
    if part in SUBPACKAGE_LAYER:
        return LAYER[SUBPACKAGE_LAYER[part]]
    if part.startswith("curriculum"):
        return LAYER["core"]
    return LAYER[part]


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import of our packages in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(n, node.lineno) for n in names if n.split(".")[0] in PACKAGES]
    return found


def import_graph() -> dict[str, list[tuple[str, str]]]:
    """``{module: [(imported module, "file:line"), ...]}`` over the whole project."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            graph[module_name(path)] = [(target, f"{path.relative_to(ROOT)}:{line}")
                                        for target, line in imports_of(path)]
    return graph


def test_layers_import_downwards_only() -> None:
    upward = [f"{where}: {module} ({part_of(module)}) imports {target}"
              for module, targets in import_graph().items() for target, where in targets
              if module != "curriculum" and layer_of(target) > layer_of(module)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_core_imports_neither_loaders_nor_train() -> None:
    bad = [f"{where}: {target}" for module, targets in import_graph().items()
           if layer_of(module) == LAYER["core"] for target, where in targets
           if target.split(".")[0] in ("loaders", "train")]
    assert not bad, "the core imports loaders or train:\n" + "\n".join(bad)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_parts() -> None:
    edges: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module == "curriculum":  # the facade re-exports; it is imported by no part
            continue
        for target, _ in targets:
            if target != "curriculum" and part_of(target) != part_of(module):
                edges.setdefault(part_of(module), set()).add(part_of(target))
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_the_check_sees_an_upward_import_inside_a_function() -> None:
    tree = "def f():\n    from train.model import GPT\n"
    node = ast.parse(tree).body[0].body[0]
    assert isinstance(node, ast.ImportFrom) and layer_of(node.module) > layer_of("curriculum.store")
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
