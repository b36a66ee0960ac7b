"""Read YAML with the line of every value, and walk it with errors that name the YAML path.

PyYAML's ``SafeLoader`` composes a node tree (which carries marks) and then constructs plain
Python data; we record ``path -> line`` from the tree before constructing, so validation code
works on ordinary dicts and lists yet reports ``stages[1].rules[0].when: ... (line 12)``.
Duplicate keys, which ``yaml.safe_load`` silently collapses, are reported as errors.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from policies.errors import PolicyError

PathPart = str | int
Path = tuple[PathPart, ...]

#: Largest number a policy field accepts (keeps arithmetic exact in int64 and float64).
MAX_NUMBER = 2**62

_NUMBER_TEXT = re.compile(r"^[+-]?(\d[\d_]*)?(\.\d*)?([eE][+-]?\d+)?$")


def format_path(path: Path) -> str:
    """``('stages', 1, 'rules', 0, 'when')`` -> ``stages[1].rules[0].when``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(file)"


@dataclass
class YamlDocument:
    """Constructed YAML data with the line of each value and of each mapping key."""

    data: Any
    value_lines: dict[Path, int]
    key_lines: dict[Path, int]
    source: str | None = None

    def line(self, path: Path, key: bool = False) -> int | None:
        """Line of the value (or key) at ``path``, else of its nearest ancestor."""
        if key and path in self.key_lines:
            return self.key_lines[path]
        while True:
            if path in self.value_lines:
                return self.value_lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, message: str, key: bool = False) -> PolicyError:
        """A :class:`PolicyError` for ``path``, with its line."""
        return PolicyError(format_path(path), message, self.line(path, key), self.source)

    def root(self) -> Located:
        """The whole document as a :class:`Located` value."""
        return Located(self, (), self.data)


def _record_lines(node: yaml.Node, path: Path, document: YamlDocument,
                  seen: set[int]) -> None:
    stack: list[tuple[yaml.Node, Path]] = [(node, path)]
    while stack:
        node, path = stack.pop()
        document.value_lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:  # an alias: already walked (and possibly recursive)
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                stack.append((item, (*path, index)))
        elif isinstance(node, yaml.MappingNode):
            keys_here: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == \
                        "tag:yaml.org,2002:merge":
                    continue
                key = str(key_node.value)
                child = (*path, key)
                if key in keys_here:
                    raise PolicyError(format_path(child), "duplicate key",
                                      key_node.start_mark.line + 1, document.source)
                keys_here.add(key)
                document.key_lines[child] = key_node.start_mark.line + 1
                stack.append((value_node, child))


def load_yaml(text: str, source: str | None = None) -> YamlDocument:
    """Parse one YAML document with the safe loader, keeping lines; errors are PolicyErrors."""
    document = YamlDocument(None, {}, {}, source)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters already
        node = loader.get_single_node()
        if node is None:
            raise PolicyError("(file)", "the policy file is empty", None, source)
        _record_lines(node, (), document, set())
        document.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "invalid YAML"
        raise PolicyError("(file)", f"invalid YAML: {problem}",
                          mark.line + 1 if mark else None, source) from None
    except RecursionError:
        raise PolicyError("(file)", "invalid YAML: nested too deeply", None, source) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        if isinstance(error, PolicyError):
            raise
        raise PolicyError("(file)", f"invalid YAML: {error}".splitlines()[0], None,
                          source) from None
    finally:
        if loader is not None:
            loader.dispose()
    return document


@dataclass(frozen=True)
class Located:
    """A value inside a :class:`YamlDocument` together with its path, for typed reading."""

    document: YamlDocument
    path: Path
    value: Any

    def error(self, message: str) -> PolicyError:
        """A :class:`PolicyError` at this value's path."""
        return self.document.error(self.path, message)

    @property
    def where(self) -> str:
        """This value's YAML path as text."""
        return format_path(self.path)

    def child(self, key: PathPart, value: Any) -> Located:
        return Located(self.document, (*self.path, key), value)

    def mapping(self, allowed: Mapping[str, str] | set[str] | tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, Located]:
        """Read a mapping with string keys from ``allowed``; unknown or missing keys fail."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {describe(self.value)}")
        out: dict[str, Located] = {}
        for key, value in self.value.items():
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {describe(key)} {key!r}")
            if key not in allowed:
                close = close_match(key, allowed)
                hint = f" (did you mean '{close}'?)" if close else \
                    f"; allowed: {', '.join(sorted(allowed))}"
                raise self.document.error((*self.path, key), f"unknown key '{key}'{hint}",
                                          key=True)
            out[key] = self.child(key, value)
        for key in required:
            if key not in out:
                raise self.error(f"missing required key '{key}'")
        return out

    def sequence(self) -> Iterator[Located]:
        """The items of a list."""
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {describe(self.value)}")
        return (self.child(i, v) for i, v in enumerate(self.value))

    def string(self, pattern: re.Pattern[str] | None = None, what: str = "a string") -> str:
        """A non-empty string (matching ``pattern`` when given)."""
        if not isinstance(self.value, str) or not self.value.strip():
            raise self.error(f"expected {what}, got {describe(self.value)}")
        if pattern is not None and not pattern.fullmatch(self.value):
            raise self.error(f"expected {what}, got {self.value!r}")
        return self.value

    def integer(self, minimum: int = -MAX_NUMBER, maximum: int = MAX_NUMBER) -> int:
        """An integer in ``[minimum, maximum]``; ``1e6``-style text and integral floats count."""
        value = _number_text(self.value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and \
                abs(value) <= MAX_NUMBER:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected an integer, got {describe(self.value)}")
        if not minimum <= value <= maximum:
            raise self.error(f"must be between {minimum} and {maximum}, got {value}")
        return value

    def number(self, minimum: float = -MAX_NUMBER, maximum: float = MAX_NUMBER,
               exclusive_minimum: bool = False) -> float:
        """A finite number in range (``exclusive_minimum`` makes the lower bound strict)."""
        value = _number_text(self.value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"expected a number, got {describe(self.value)}")
        try:
            value = float(value)
        except OverflowError:
            raise self.error("number is too large") from None
        if not math.isfinite(value):
            raise self.error(f"expected a finite number, got {value}")
        low_ok = value > minimum if exclusive_minimum else value >= minimum
        if not (low_ok and value <= maximum):
            bracket = "(" if exclusive_minimum else "["
            raise self.error(f"must be in {bracket}{minimum:g}, {maximum:g}], got {value:g}")
        return value


def _number_text(value: Any) -> Any:
    """``"1e6"`` and ``"2_000"`` as numbers (YAML 1.1 reads ``1e6`` as a string); else as is."""
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()) and \
            any(c.isdigit() for c in value):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return value
    return value


def describe(value: Any) -> str:
    """A short type description for error messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def close_match(word: str, options: Any) -> str | None:
    """The option most like ``word``, for "did you mean" hints."""
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.75)
    return matches[0] if matches else None
