"""The condition language: what it accepts, what it rejects, and that both evaluators agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.expressions import (
    ExpressionError,
    batch_truth,
    compile_batch,
    compile_expression,
    compile_scalar,
    parse_expression,
    truth,
)

NAMES = ("affinity.values", "attribution.deception", "pct.affinity.values", "step")


def known(name: str) -> str | None:
    return None if name in NAMES else f"unknown score '{name}'"


def evaluate(text: str, env: dict[str, float]) -> float:
    expression = compile_expression(text, known)
    return compile_scalar(expression.tree, lambda name: lambda e: e[name])(env)


@pytest.mark.parametrize(("text", "expected"), [
    ("1 + 2 * 3", 7.0),
    ("(1 + 2) * 3", 9.0),
    ("-affinity.values", -0.5),
    ("affinity.values / 0", math.inf),
    ("0 / 0 == 0 / 0", False),  # NaN is never equal
    ("0.2 < affinity.values <= 0.8", True),
    ("0.2 < affinity.values < 0.3", False),
    ("affinity.values > 0.4 and not step > 10", True),
    ("affinity.values > 0.9 or step == 3", True),
    ("true and not false", True),
    ("pct.affinity.values", 0.25),
])
def test_evaluates(text: str, expected: float) -> None:
    env = {"affinity.values": 0.5, "attribution.deception": -1.0, "pct.affinity.values": 0.25,
           "step": 3.0}
    assert evaluate(text, env) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("affinity.values.__class__", "unknown score 'affinity.values.__class__'"),
    ("(1).real", "attribute access is not allowed"),
    ("affinity.values.real", "unknown score"),
    ("len(affinity.values)", "function calls are not allowed"),
    ("__import__('os').system('true')", "function calls are not allowed"),
    ("affinity[0]", "subscripts are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("unknown_name > 1", "unknown score 'unknown_name'"),
    ("affinty.values > 1", "unknown score 'affinty.values'"),
    ("'text' == 'text'", "strings are not allowed"),
    ("2 ** 3", "'**'"),
    ("3 % 2", "'%'"),
    ("1 if step else 2", "conditional expressions are not allowed"),
    ("step > 1 & step < 3", "'&'"),
    ("step in [1, 2]", "'in'"),
    ("[1, 2]", "list is not allowed"),
    ("None", "None is not allowed"),
    ("1 +", "syntax error"),
    ("", "empty expression"),
    ("x := 1", "syntax error"),
    ("1" * 400, "number is too large"),
    ("-" * 200 + "1", "nested deeper"),
    ("(" * 300 + "1" + ")" * 300, "syntax error"),
    ("1 + \x00", "null bytes"),
])
def test_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, known)
    assert fragment in str(caught.value)


def test_error_gives_the_column_of_the_offending_name() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("step > 1 and affinty.values > 0.2", known)
    assert caught.value.column == 13
    assert "in column 14 of the expression" in str(caught.value)


def test_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec must never be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert evaluate("affinity.values * 2 > 0.5", {"affinity.values": 0.5}) is True


def test_yaml_constants_are_expressions() -> None:
    assert compile_expression(True, known).source == "true"
    assert compile_expression(0.5, known).tree.value == 0.5
    with pytest.raises(ExpressionError):
        compile_expression(math.inf, known)


def test_names_are_listed_once_in_order() -> None:
    expression = compile_expression("step > 1 and affinity.values > step", known)
    assert expression.names == ("step", "affinity.values")


def test_truth_of_numbers() -> None:
    assert truth(2.0) and not truth(0.0) and not truth(math.nan)
    assert batch_truth(np.array([2.0, 0.0, np.nan])).tolist() == [True, False, False]


# --- scalar and batch evaluation agree, on random expressions and random values ---------------

_leaves = st.one_of(
    st.sampled_from(["affinity.values", "attribution.deception", "pct.affinity.values", "step"]),
    st.sampled_from(["0", "1", "0.5", "2.5", "-1", "true", "false"]),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=",
                                                  "==", "!=", "and", "or"]), children)
    return st.one_of(
        binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"(not {c})"),
        children.map(lambda c: f"(-{c})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} < {t[1]} <= {t[2]})"),
    )


_expressions = st.recursive(_leaves, _combine, max_leaves=12)
_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0.0, -0.0, 1.0, 0.5]))


@settings(max_examples=200, deadline=None)
@given(text=_expressions, rows=st.lists(st.tuples(_values, _values, _values, _values),
                                        min_size=1, max_size=6))
def test_scalar_and_batch_agree(text: str, rows: list[tuple[float, ...]]) -> None:
    tree = parse_expression(text)
    scalar = compile_scalar(tree, lambda name: lambda env: env[NAMES.index(name)])
    batch = compile_batch(tree, lambda name: lambda matrix: matrix[:, NAMES.index(name)])
    matrix = np.array(rows, np.float64)
    with np.errstate(all="ignore"):
        vector = np.asarray(batch(matrix))
    for i, row in enumerate(rows):
        one = float(scalar([float(v) for v in row]))
        many = float(vector[i])
        assert (one == many) or (math.isnan(one) and math.isnan(many)), (text, row, one, many)
