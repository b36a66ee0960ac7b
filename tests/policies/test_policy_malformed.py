"""Property test: a malformed policy file always raises PolicyError naming the path — never
another exception. Files are random mutations of valid ones: wrong types, unknown keys, missing
keys, bad expressions, out-of-range numbers, and damaged YAML text."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_support import BEHAVIORS

from policies import PolicyError, load_policy_text
from policies.load import BUILTIN_POLICY_DIR
from policies.yamlsource import format_path

EVERY_RULE = textwrap.dedent("""\
    name: every_rule
    seed: 7
    min_weight: 0.1
    max_weight: 5
    metrics: [val_loss]
    stages:
      - name: first
        until: {steps: 100, tokens: 100000, when: "val_loss < 2 or probe_loss.values < 1",
                min_steps: 5, max_steps: 200}
        rules:
          - {upweight: 2.0, max_weight: 3, when: pct.affinity.values >= 0.7}
          - {downweight: 0.5, when: "measured.deception == 1"}
          - {prioritize: "pct.affinity.values - pct.affinity.deception"}
          - {tag: revise, name: revise_band, when: attribution.deception > 1}
          - {drop: "filter: deception", when: pct.attribution.deception > 0.99}
          - {sample: 0.5, when: "step < 50"}
          - {delay: {until_stage: second}, when: affinity.situational_awareness > 0.4}
          - {delay: {for_steps: 10}, when: affinity.neutral > 0.6}
          - {delay: {until_step: 500}, when: affinity.neutral > 0.55}
      - name: second
        rules: []
""")

BASES: list[Any] = [yaml.safe_load(EVERY_RULE)] + [
    yaml.safe_load(path.read_text()) for path in sorted(BUILTIN_POLICY_DIR.glob("*.yaml"))
]
BASE_TEXTS = [EVERY_RULE] + [p.read_text() for p in sorted(BUILTIN_POLICY_DIR.glob("*.yaml"))]

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["", " ", "1e6", "-1", "nan", ".inf", "0x10"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                          max_size=2),
)
BAD_EXPRESSIONS = st.sampled_from([
    "affinity.values(", "len(affinity.values)", "affinity.values.__class__", "(1).real",
    "lambda: 1", "affinity[0]", "2 ** 3", "'a' == 'a'", "", "affinty.values > 1",
    "probe_loss.values < 2 and", "x := 1", "1 if 1 else 2", "__import__('os')", "1" * 500,
    "affinity.nonexistent > 0", "not", "((((1)", "a.b.c.d.e > 1", "None", "[1][0]",
])
# Out of range for every numeric field of the base documents (all are finite and >= 0).
OUT_OF_RANGE = st.sampled_from([-1, -0.5, 10**40, 1e300, float("inf"), float("nan")])


def paths_of(data: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) below the root."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            found.append(((*path, key), value))
            found.extend(paths_of(value, (*path, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.append(((*path, index), value))
            found.extend(paths_of(value, (*path, index)))
    return found


def set_at(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def delete_at(data: Any, path: tuple) -> None:
    for part in path[:-1]:
        data = data[part]
    del data[path[-1]]


def load(text: str) -> PolicyError | None:
    """Load; PolicyError is returned, any other exception propagates (failing the test)."""
    try:
        load_policy_text(text, BEHAVIORS)
    except PolicyError as error:
        assert error.path, "a PolicyError must name a path"
        assert str(error).startswith(f"{error.path}: "), str(error)
        return error
    return None


@st.composite
def data_mutations(draw: st.DrawFn) -> tuple[str, str, tuple | None]:
    """(YAML text, mutation kind, path that must be reported or None if it may be valid)."""
    base = copy.deepcopy(draw(st.sampled_from(BASES)))
    entries = paths_of(base)
    kind = draw(st.sampled_from(["junk", "unknown_key", "delete", "bad_expression",
                                 "out_of_range", "wrong_container"]))
    expected = None
    if kind == "junk":
        path, _ = draw(st.sampled_from(entries))
        set_at(base, path, draw(JUNK))
    elif kind == "unknown_key":
        mappings = [(p, v) for p, v in [((), base), *entries] if isinstance(v, dict)]
        path, mapping = draw(st.sampled_from(mappings))
        key = draw(st.sampled_from(["colour", "whenn", "Until", "rule", "weights", "x"]))
        mapping[key] = draw(JUNK)
        expected = (*path, key)
    elif kind == "delete":
        path, _ = draw(st.sampled_from(entries))
        delete_at(base, path)
    elif kind == "bad_expression":
        spots = [(p, v) for p, v in entries
                 if p[-1] in ("when", "prioritize") and isinstance(v, str)]
        if not spots:
            spots = [(("stages", 0, "until", "when"), None)] if "stages" in base else []
        if spots:
            path, _ = draw(st.sampled_from(spots))
            if path[-1] == "when" and path[-2] == "until":
                base["stages"][path[1]].setdefault("until", {})
                if path[1] == len(base["stages"]) - 1:
                    path = None  # the last stage's 'until' is an error of its own
            if path is not None:
                set_at(base, path, draw(BAD_EXPRESSIONS))
                expected = path
    elif kind == "out_of_range":
        numeric = [(p, v) for p, v in entries
                   if isinstance(v, int | float) and not isinstance(v, bool)
                   and p[-1] not in ("prioritize",)]
        if numeric:
            path, _ = draw(st.sampled_from(numeric))
            set_at(base, path, draw(OUT_OF_RANGE))
            expected = path
    else:  # wrong_container: a list where a mapping is expected or the reverse
        containers = [(p, v) for p, v in entries if isinstance(v, dict | list)]
        if containers:
            path, value = draw(st.sampled_from(containers))
            set_at(base, path, [value] if isinstance(value, dict) else {"items": value})
            expected = path
    return yaml.safe_dump(base, sort_keys=False), kind, expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_mutations())
def test_data_mutations_raise_policy_errors_at_the_path(case: tuple[str, str, tuple | None]) \
        -> None:
    text, kind, expected = case
    error = load(text)
    if expected is not None:
        assert error is not None, f"{kind} at {format_path(expected)} was accepted:\n{text}"
        reported = error.path
        want = format_path(expected)
        assert reported == want or reported.startswith(want + ".") or \
            reported.startswith(want + "["), f"{kind}: expected {want}, got {error}"
    if error is not None and error.path != "(file)":
        assert error.line is not None, str(error)


@st.composite
def text_mutations(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(BASE_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["insert", "delete", "truncate", "replace"]))
        position = draw(st.integers(0, len(text)))
        if operation == "insert":
            text = text[:position] + draw(st.text(
                alphabet=st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \t\n\x00\ufeffx1")),
                min_size=1, max_size=6)) + text[position:]
        elif operation == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 20)):]
        elif operation == "truncate":
            text = text[:position]
        else:
            text = text[:position] + draw(st.text(max_size=4)) + text[position + 1:]
    return text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_mutations())
def test_damaged_yaml_text_raises_only_policy_errors(text: str) -> None:
    load(text)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_policy_errors(blob: bytes) -> None:
    load(blob.decode("utf-8", errors="replace"))


def test_every_base_document_is_valid() -> None:
    for text in BASE_TEXTS:
        assert load(text) is None


def test_deep_nesting_and_aliases_are_policy_errors() -> None:
    assert load("stages: " + "[" * 600 + "]" * 600) is not None
    assert load("stages: &a [*a]") is not None
    assert load("a: &a [*a]\nstages: [{}]") is not None


def test_builtin_dir_exists() -> None:
    assert Path(BUILTIN_POLICY_DIR).is_dir()
