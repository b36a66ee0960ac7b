"""Map YAML onto typed dataclasses, refusing mistakes with the path where they are.

``from_mapping(FitConfig, yaml.safe_load(text))`` checks unknown keys, types (int, float, bool,
str, ``Literal[...]`` and ``Enum`` choices, optional and nested dataclasses, lists) and reports
the first mistake as ``ConfigError("data.num_workers: expected int, got 'two'")`` or
``ConfigError("data.stream.packing: expected one of 'concat', 'pad', got 'zigzag'")``. A
dataclass's ``__post_init__`` may check more (a value's format, two fields together) by raising
``ConfigError("field: why")``; the field's path is put in front of the message.

Why not pydantic: the configs are plain dataclasses used everywhere (pickled into DataLoader
workers, compared in checkpoints, ``dataclasses.replace``-d); the checks they need are these few
types, and this module gives them with YAML paths in ~150 lines and no new dependency.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that does not fit its field; the message starts with the field's path."""


def _check(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{path}: unexpected null")
    if origin is typing.Literal:
        return _check_choice(value, typing.get_args(annotation), path)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation):
            return value
        choices = [member.value for member in annotation]
        return annotation(_check_choice(value, choices, path))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_check(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_mapping(annotation, value, path)
    return _check_scalar(value, annotation, path)


def _check_choice(value: Any, choices: typing.Sequence[Any], path: str) -> Any:
    # bool is an int: true must not pass for 1, nor 1 for true.
    if any(value == c and type(value) is type(c) for c in choices):
        return value
    listed = ", ".join(repr(c) for c in choices)
    raise ConfigError(f"{path}: expected one of {listed}, got {value!r}")


def _check_scalar(value: Any, annotation: Any, path: str) -> Any:
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; missing keys keep their defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{path}." if path else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    prefix = f"{path}." if path else ""
    values = {name: _check(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as error:  # from __post_init__: "field: why"
        if prefix and not str(error).startswith(prefix):
            raise ConfigError(f"{prefix}{error}") from None
        raise
    except ValueError as error:  # any other check of __post_init__: name the section
        raise ConfigError(f"{path or '<root>'}: {error}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars) to nested ``data``."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"{override}: override must look like key.path=value")
        dotted, raw = override.split("=", 1)
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {part} is not a mapping")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load``; a one-line error names the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def to_mapping(config: Any) -> dict[str, Any]:
    """A dataclass as plain dicts and lists (what ``from_mapping`` reads back; enums by value)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
