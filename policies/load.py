"""Load a policy file: parse YAML with lines, dispatch on ``type``, validate, build the policy.

:func:`load_policy` raises :class:`~policies.errors.PolicyError` — and no other exception — for
anything wrong with the file; the message names the YAML path and line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import policies.builtin  # noqa: F401  (registers the built-in Python policies)
from policies.errors import PolicyError
from policies.policy import Policy, StagedPolicy
from policies.registry import PolicyContext, policy_factory, register_policy, registered_policies
from policies.schema import COMMON_KEYS, PolicySpec, check_behaviors, parse_common, parse_staged
from policies.scores import ScoreSource, assessed_principles
from policies.yamlsource import load_yaml

#: Where the built-in policy files live: package data of :mod:`policies.builtin`, so a wheel
#: installed anywhere has them.
BUILTIN_POLICY_DIR = Path(__file__).resolve().parent / "builtin"


@register_policy("staged")
def _staged(context: PolicyContext) -> Policy:
    return StagedPolicy(parse_staged(context.root, context.spec.behaviors,
                                     context.spec.principles))


def builtin_policy_names() -> tuple[str, ...]:
    """Names of the policy files shipped in ``policies/builtin``."""
    if not BUILTIN_POLICY_DIR.is_dir():
        return ()
    return tuple(sorted(p.stem for p in BUILTIN_POLICY_DIR.glob("*.yaml")))


def resolve_policy_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A policy file path: an existing file, or the name of a built-in policy
    (``values_first`` -> the packaged ``values_first.yaml``).

    Only a file is taken for a policy: a directory named like a built-in policy (the demo's run
    directory ``values_first/``) never shadows it, and any other directory is refused.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if "/" not in text and os.sep not in text:
        builtin = BUILTIN_POLICY_DIR / (text if text.endswith(".yaml") else f"{text}.yaml")
        if builtin.is_file():
            return builtin
    if path.is_dir():
        raise PolicyError("(file)", f"{text} is a directory, not a policy file")
    known = ", ".join(builtin_policy_names()) or "none found"
    raise PolicyError("(file)", f"no policy file {text!r} (built-in policies: {known})")


def load_policy(source: str | os.PathLike[str],
                behaviors: Sequence[str] | ScoreSource,
                principles: Sequence[str] | None = None) -> Policy:
    """Load and validate a policy file (or built-in policy name) for a store's ``behaviors``
    (a list of names, or the store itself). ``principles`` are the curation principles whose
    ``assess.<p>`` scores rules may read; by default those the store holds assessments of."""
    path = resolve_policy_path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError("(file)", f"cannot read {path}: {error}") from None
    return load_policy_text(text, behaviors, source=str(path), principles=principles)


def load_policy_text(text: str, behaviors: Sequence[str] | ScoreSource,
                     source: str | None = None,
                     principles: Sequence[str] | None = None) -> Policy:
    """Load and validate policy YAML given as text (``principles`` as in :func:`load_policy`)."""
    names = check_behaviors(behaviors.behaviors if hasattr(behaviors, "behaviors")
                            else behaviors)
    if principles is None:
        principles = assessed_principles(behaviors)
    principle_names = check_behaviors(principles)
    document = load_yaml(text, source)
    root = document.root()
    name, policy_type, seed, description = parse_common(root)
    factory = policy_factory(policy_type)
    if factory is None:
        raise document.error(("type",), f"unknown policy type '{policy_type}'; registered: "
                                        f"{', '.join(registered_policies())}")
    params = {}
    if policy_type != "staged":
        keys = root.mapping((*COMMON_KEYS, "params"))
        params = keys["params"].value if "params" in keys else {}
    spec = PolicySpec(name=name, type=policy_type, behaviors=names,
                      principles=principle_names, seed=seed,
                      params=params if isinstance(params, dict) else {},
                      description=description, source=source)
    context = PolicyContext(spec, root)
    try:
        policy = factory(context)
    except PolicyError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        # A custom factory that validated with plain exceptions: still name where.
        raise document.error(("params",), f"{type(error).__name__}: {error}") from None
    return policy
