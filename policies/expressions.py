"""The condition language of policy rules: small, safe, and compiled once.

Grammar (a subset of Python expression syntax, checked node by node against a whitelist):
numbers, ``true``/``false``, dotted names (``affinity.values``, ``pct.attribution.deception``,
``probe_loss.values``), unary minus, ``+ - * /``, comparisons ``< <= > >= == !=`` (chained
comparisons like ``0.2 < affinity.values <= 0.8`` work), ``and``, ``or``, ``not`` and
parentheses. Function calls, subscripts, attribute access on anything but a name, strings,
lambdas and every other construct are rejected when the policy loads, with the column of the
offending part. Nothing is ever passed to ``eval`` or ``exec``: the text is parsed with
``ast.parse(mode="eval")`` and the checked tree is turned into plain Python closures (one
document) or numpy operations (a batch of documents). Both evaluate in float64 with IEEE
semantics (``x / 0`` is ``inf`` or ``nan``, never an exception), so they always agree.

Truth: a number used as a condition is true when it is neither 0 nor NaN; comparisons with NaN
are false.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Longest expression accepted, in characters.
MAX_EXPRESSION_CHARS = 1000
#: Deepest expression tree accepted.
MAX_EXPRESSION_DEPTH = 40


class ExpressionError(ValueError):
    """An expression that is not valid; ``column`` is 0-based when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        # Column 1 adds nothing (the expression starts there); later columns locate the part.
        where = f" in column {column + 1} of the expression" if column else ""
        super().__init__(f"{message}{where}")


# --- the checked tree ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Name:
    name: str
    column: int


@dataclass(frozen=True)
class Neg:
    operand: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    ops: tuple[str, ...]
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str
    operands: tuple[Node, ...]


Node = Num | Name | Neg | Not | BinOp | Compare | BoolOp

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_FORBIDDEN_OPS = {
    ast.Pow: "'**'", ast.Mod: "'%'", ast.FloorDiv: "'//'", ast.MatMult: "'@'",
    ast.BitAnd: "'&' (use 'and')", ast.BitOr: "'|' (use 'or')", ast.BitXor: "'^'",
    ast.LShift: "'<<'", ast.RShift: "'>>'", ast.Invert: "'~' (use 'not')",
    ast.In: "'in'", ast.NotIn: "'not in'", ast.Is: "'is'", ast.IsNot: "'is not'",
}
_DESCRIBE = {
    ast.Call: "function calls are not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.IfExp: "conditional expressions are not allowed (use separate rules)",
    ast.NamedExpr: "assignment is not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.Await: "'await' is not allowed",
}
_WORDS = {"true": 1.0, "false": 0.0}


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _constant(node: ast.Constant, column: int | None, deeper: int) -> Node:
    value = node.value
    if isinstance(value, bool):
        return Num(1.0 if value else 0.0)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            raise ExpressionError("number is too large", column) from None
        if not math.isfinite(number):
            raise ExpressionError("number is too large", column)
        return Num(number)
    kind = "strings are" if isinstance(value, str | bytes) else f"{value!r} is"
    raise ExpressionError(f"{kind} not allowed (only numbers, true and false)", column)


def _name(node: ast.Name, column: int | None, deeper: int) -> Node:
    if node.id in _WORDS:
        return Num(_WORDS[node.id])
    return Name(node.id, node.col_offset)


def _attribute(node: ast.Attribute, column: int | None, deeper: int) -> Node:
    name = _dotted(node)
    if name is None:
        raise ExpressionError(
            "attribute access is not allowed (only score names like 'affinity.values')", column)
    return Name(name, node.col_offset)


def _unary(node: ast.UnaryOp, column: int | None, deeper: int) -> Node:
    if isinstance(node.op, ast.USub):
        return Neg(_check(node.operand, deeper))
    if isinstance(node.op, ast.UAdd):
        return _check(node.operand, deeper)
    if isinstance(node.op, ast.Not):
        return Not(_check(node.operand, deeper))
    raise ExpressionError(f"operator {_FORBIDDEN_OPS[type(node.op)]} is not allowed", column)


def _binary(node: ast.BinOp, column: int | None, deeper: int) -> Node:
    op = _BINOPS.get(type(node.op))
    if op is None:
        described = _FORBIDDEN_OPS.get(type(node.op), type(node.op).__name__)
        raise ExpressionError(f"operator {described} is not allowed (use + - * /)", column)
    return BinOp(op, _check(node.left, deeper), _check(node.right, deeper))


def _compare(node: ast.Compare, column: int | None, deeper: int) -> Node:
    ops = []
    for op_node in node.ops:
        op = _CMPOPS.get(type(op_node))
        if op is None:
            described = _FORBIDDEN_OPS.get(type(op_node), type(op_node).__name__)
            raise ExpressionError(f"operator {described} is not allowed", column)
        ops.append(op)
    operands = [_check(node.left, deeper)] + [_check(c, deeper) for c in node.comparators]
    return Compare(tuple(ops), tuple(operands))


def _boolean(node: ast.BoolOp, column: int | None, deeper: int) -> Node:
    op = "and" if isinstance(node.op, ast.And) else "or"
    return BoolOp(op, tuple(_check(v, deeper) for v in node.values))


#: The node types the language allows, and how each is checked.
_CHECKS: dict[type, Any] = {
    ast.Constant: _constant, ast.Name: _name, ast.Attribute: _attribute, ast.UnaryOp: _unary,
    ast.BinOp: _binary, ast.Compare: _compare, ast.BoolOp: _boolean,
}


def _check(node: ast.expr, depth: int) -> Node:
    column = getattr(node, "col_offset", None)
    if depth > MAX_EXPRESSION_DEPTH:
        raise ExpressionError(f"expression is nested deeper than {MAX_EXPRESSION_DEPTH}", column)
    check = _CHECKS.get(type(node))
    if check is not None:
        return check(node, column, depth + 1)
    message = _DESCRIBE.get(type(node))
    if message is None:
        message = f"{type(node).__name__.lower()} is not allowed"
    raise ExpressionError(message, column)


def parse_expression(text: str) -> Node:
    """Parse and check ``text``; raises :class:`ExpressionError` for anything not allowed."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected an expression string, got {type(text).__name__}")
    source = " ".join(text.split())  # YAML folded or multi-line strings read as one line
    if not source:
        raise ExpressionError("empty expression")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        column = (error.offset - 1) if error.offset else None
        raise ExpressionError(f"syntax error: {error.msg}", column) from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as error:
        raise ExpressionError(f"cannot parse expression: {type(error).__name__}") from None
    return _check(tree.body, 0)


def names_in(node: Node) -> list[Name]:
    """Every name the expression reads, in order of appearance."""
    if isinstance(node, Name):
        return [node]
    if isinstance(node, Neg | Not):
        return names_in(node.operand)
    if isinstance(node, BinOp):
        return names_in(node.left) + names_in(node.right)
    if isinstance(node, Compare | BoolOp):
        return [n for operand in node.operands for n in names_in(operand)]
    return []


def is_condition(node: Node) -> bool:
    """Whether the expression is a truth value by form (comparison, and/or/not, true/false)."""
    return isinstance(node, Compare | BoolOp | Not) or (
        isinstance(node, Num) and node.value in (0.0, 1.0))


# --- evaluation ---------------------------------------------------------------------------------

def truth(value: float) -> bool:
    """Truth of one value: neither 0 nor NaN."""
    return value != 0 and value == value


def _divide(left: float, right: float) -> float:
    try:
        return left / right
    except ZeroDivisionError:
        if left != left or left == 0:
            return math.nan
        return math.copysign(math.inf, left) * math.copysign(1.0, right)


_SCALAR_OPS: dict[str, Callable[[float, float], float | bool]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": _divide,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}

ScalarFn = Callable[[object], float]
BatchFn = Callable[[np.ndarray], np.ndarray]


def compile_scalar(node: Node, leaf: Callable[[str], ScalarFn]) -> ScalarFn:
    """Closure ``env -> value`` for one document; ``leaf(name)`` reads a name from ``env``."""
    if isinstance(node, Num):
        value = node.value
        return lambda env: value
    if isinstance(node, Name):
        return leaf(node.name)
    if isinstance(node, Neg):
        inner = compile_scalar(node.operand, leaf)
        return lambda env: -inner(env)
    if isinstance(node, Not):
        inner = compile_scalar(node.operand, leaf)
        return lambda env: not truth(inner(env))
    if isinstance(node, BinOp):
        op = _SCALAR_OPS[node.op]
        left, right = compile_scalar(node.left, leaf), compile_scalar(node.right, leaf)
        return lambda env: op(left(env), right(env))
    if isinstance(node, Compare):
        ops = [_SCALAR_OPS[o] for o in node.ops]
        parts = [compile_scalar(o, leaf) for o in node.operands]
        if len(ops) == 1:
            op, left, right = ops[0], parts[0], parts[1]
            if isinstance(node.operands[1], Num):  # the common `score < constant`
                constant = node.operands[1].value
                return lambda env: op(left(env), constant)
            return lambda env: op(left(env), right(env))

        def chained(env: object) -> bool:
            current = parts[0](env)
            for op, part in zip(ops, parts[1:], strict=True):
                following = part(env)
                if not op(current, following):
                    return False
                current = following
            return True

        return chained
    # BoolOp
    parts = [compile_scalar(o, leaf) for o in node.operands]
    if node.op == "and":
        if len(parts) == 2:
            first, second = parts
            return lambda env: truth(first(env)) and truth(second(env))
        return lambda env: all(truth(p(env)) for p in parts)
    if len(parts) == 2:
        first, second = parts
        return lambda env: truth(first(env)) or truth(second(env))
    return lambda env: any(truth(p(env)) for p in parts)


def batch_truth(values: np.ndarray) -> np.ndarray:
    """Truth of many values (bool array): neither 0 nor NaN."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        return values
    return (values != 0) & (values == values)


def _as_float(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64) if values.dtype == np.bool_ else values


_BATCH_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}


def compile_batch(node: Node, leaf: Callable[[str], BatchFn]) -> BatchFn:
    """Function ``matrix -> (n,) array`` for a batch; ``leaf(name)`` reads a column.

    Callers run it under ``np.errstate(all="ignore")`` (division by zero gives inf/NaN)."""
    if isinstance(node, Num):
        value = node.value
        return lambda m: np.full(len(m), value)
    if isinstance(node, Name):
        return leaf(node.name)
    if isinstance(node, Neg):
        inner = compile_batch(node.operand, leaf)
        return lambda m: np.negative(_as_float(inner(m)))
    if isinstance(node, Not):
        inner = compile_batch(node.operand, leaf)
        return lambda m: ~batch_truth(inner(m))
    if isinstance(node, BinOp):
        op = _BATCH_OPS[node.op]
        left, right = compile_batch(node.left, leaf), compile_batch(node.right, leaf)
        return lambda m: op(_as_float(left(m)), _as_float(right(m)))
    if isinstance(node, Compare):
        ops = [_BATCH_OPS[o] for o in node.ops]
        parts = [compile_batch(o, leaf) for o in node.operands]

        def compare(m: np.ndarray) -> np.ndarray:
            current = _as_float(parts[0](m))
            result = None
            for op, part in zip(ops, parts[1:], strict=True):
                following = _as_float(part(m))
                holds = op(current, following)
                result = holds if result is None else result & holds
                current = following
            return result

        return compare
    parts = [compile_batch(o, leaf) for o in node.operands]
    combine = np.logical_and if node.op == "and" else np.logical_or

    def boolop(m: np.ndarray) -> np.ndarray:
        result = batch_truth(parts[0](m))
        for part in parts[1:]:
            result = combine(result, batch_truth(part(m)))
        return result

    return boolop


@dataclass(frozen=True)
class Expression:
    """A checked expression with its source text and the names it reads."""

    source: str
    tree: Node

    @property
    def names(self) -> tuple[str, ...]:
        """Distinct names read, in order of appearance."""
        return tuple(dict.fromkeys(n.name for n in names_in(self.tree)))


def compile_expression(text: str | bool | int | float,
                       check_name: Callable[[str], str | None]) -> Expression:
    """Parse ``text`` and check every name with ``check_name`` (returns an error message for a
    name that may not be used here, None otherwise). A YAML ``true``/``false`` or number is
    accepted as a constant expression."""
    if isinstance(text, bool):
        return Expression("true" if text else "false", Num(1.0 if text else 0.0))
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not math.isfinite(float(text)):
            raise ExpressionError("number is not finite")
        return Expression(repr(text), Num(float(text)))
    tree = parse_expression(text)
    for name in names_in(tree):
        problem = check_name(name.name)
        if problem is not None:
            raise ExpressionError(problem, name.column)
    return Expression(" ".join(text.split()), tree)
