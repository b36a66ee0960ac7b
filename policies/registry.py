"""Policies written in Python, registered by name and loaded from YAML with ``type: <name>``.

::

    from policies import BasePolicy, Emit, register_policy

    @register_policy("shortest_first")
    def build(context):
        keys = context.params_keys(allowed=("boost",))
        boost = keys["boost"].number(1.0, 10.0) if "boost" in keys else 2.0
        return ShortestFirst(context.spec, boost)

and in YAML::

    type: shortest_first
    params: {boost: 3.0}

The factory gets a :class:`PolicyContext`: the validated common fields (name, seed, behaviors)
and the ``params`` mapping with its YAML path, so a custom policy reports mistakes with path and
line like the built-in ones. Import the module that registers a policy before loading files
that use it (``curriculum preview --import my_module`` does that on the command line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from policies.errors import PolicyError
from policies.schema import PolicySpec
from policies.yamlsource import Located, describe

if TYPE_CHECKING:
    from policies.policy import Policy


@dataclass(frozen=True)
class PolicyContext:
    """What a policy factory receives."""

    spec: PolicySpec
    """Name, type, seed, behaviors, description and raw ``params`` of the file."""

    root: Located
    """The whole YAML document with its path and lines (for staged-style parsing)."""

    @property
    def params(self) -> Located:
        """The ``params`` value with its YAML path (an empty mapping when absent)."""
        value = self.root.value.get("params", {}) if isinstance(self.root.value, dict) else {}
        return self.root.child("params", value)

    def params_keys(self, allowed: Sequence[str], required: Sequence[str] = ()) \
            -> dict[str, Located]:
        """The ``params`` mapping, checked for unknown and missing keys."""
        params = self.params
        if params.value is None:
            params = self.root.child("params", {})
        if not isinstance(params.value, dict):
            raise params.error(f"expected a mapping, got {describe(params.value)}")
        return params.mapping(tuple(allowed), tuple(required))

    def error(self, message: str, *path: str | int) -> PolicyError:
        """A :class:`PolicyError` at ``params.<path>`` (or ``params`` when no path)."""
        return self.root.document.error(("params", *path), message)


PolicyFactory = Callable[[PolicyContext], "Policy"]

_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(name: str, *, replace: bool = False) -> Callable[[Any], Any]:
    """Decorator registering a policy factory (a function of a :class:`PolicyContext`, or a class
    with a ``from_context(context)`` classmethod) under ``name``."""
    if not name.isidentifier():
        raise ValueError(f"policy type names must be identifiers, got {name!r}")

    def decorate(target: Any) -> Any:
        if name in _REGISTRY and not replace:
            raise ValueError(f"a policy named {name!r} is already registered "
                             f"(pass replace=True to override it)")
        factory = getattr(target, "from_context", target)
        if not callable(factory):
            raise TypeError(f"cannot register {target!r}: not callable")
        _REGISTRY[name] = factory
        return target

    return decorate


def unregister_policy(name: str) -> None:
    """Remove a registration (for tests)."""
    _REGISTRY.pop(name, None)


def policy_factory(name: str) -> PolicyFactory | None:
    """The factory registered under ``name``, if any."""
    return _REGISTRY.get(name)


def registered_policies() -> tuple[str, ...]:
    """Names of every registered policy type, sorted."""
    return tuple(sorted(_REGISTRY))
