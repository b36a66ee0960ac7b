"""The ``select`` rule of a stage: which rows of a candidate batch update the weights.

In a stage::

    select:
      top_fraction: 0.5                                   # or sample_fraction + temperature
      by: "-score.values + score.situational_awareness"   # over this step's scores
      unselected: return                                  # or reject
      max_returns: 1

``score.<behavior>`` is the row's first-order In-Run Data Shapley score of *this* training step
(``-lr * <P grad L_V, grad l_i>``, from the same backward pass as the update; negative lowers
that behavior's probe loss). ``by`` is an expression in the policy language over those names;
the rows with the highest values are kept (``top_fraction``), or rows are drawn without
replacement from ``softmax(z / temperature)`` where ``z`` is ``by`` standardised within the
candidate batch (``sample_fraction``; OPUS-style Boltzmann sampling; the temperature then means
the same at every step whatever the learning rate and loss scale).

The number of rows kept is the fraction of the loader's candidate batch (``candidate_factor``
x batch size), so with factor 2 and fraction 0.5 every step updates on one batch size of rows;
returned rows compete for the same places. A row not kept is returned to the candidate stream
and offered again at the next step, at most ``max_returns`` times, after which it is rejected
with the rule as reason; ``unselected: reject`` rejects at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policies.expressions import Expression, compile_batch
from policies.yamlsource import Located, close_match

#: The family of per-step score names a ``select`` expression reads.
STEP_SCORE_FAMILY = "score"
#: Keys of a ``select`` mapping.
SELECT_KEYS = ("top_fraction", "sample_fraction", "temperature", "by", "unselected", "max_returns")
#: Most times a row may be returned before it must be trained on or rejected.
MAX_RETURNS_LIMIT = 16
#: Largest candidate factor a policy or data config may ask for.
MAX_CANDIDATE_FACTOR = 64


@dataclass(frozen=True)
class SelectRule:
    """How one stage chooses the rows of a candidate batch that update the weights."""

    label: str
    """Names the rule in rejections and logs: ``stages[0].select (top 0.5 by ...)``."""
    by: Expression
    """Higher is better; reads ``score.<behavior>`` (this step's scores) and numbers."""
    fraction: float
    """Share of the loader's candidate rows kept per step, in (0, 1]."""
    temperature: float | None = None
    """None: keep the top rows; a number: Boltzmann sampling at this temperature."""
    unselected: str = "return"
    """``return`` (offered again next step) or ``reject`` (terminal, with the rule as reason)."""
    max_returns: int = 1
    """Times a row may be returned before it is rejected."""
    seed: int = 0
    """Seeds the Boltzmann draws (with the step), so a resumed run draws the same rows."""

    def values(self, scores: np.ndarray, behaviors: Sequence[str]) -> np.ndarray:
        """``by`` for each candidate row, from the (rows, K) score matrix in ``behaviors`` order."""
        columns = {f"{STEP_SCORE_FAMILY}.{b}": k for k, b in enumerate(behaviors)}
        matrix = np.asarray(scores, np.float64).reshape(len(scores), len(behaviors))

        def leaf(name: str):  # noqa: ANN202 - a compile_batch leaf
            column = columns[name]
            return lambda m: m[:, column]

        with np.errstate(all="ignore"):
            out = compile_batch(self.by.tree, leaf)(matrix)
        return np.asarray(out, np.float64).reshape(len(matrix))

    def keep_count(self, loader_rows: int, candidates: int) -> int:
        """Rows kept at a step: ``fraction`` of the loader's rows, at least 1, at most all."""
        return max(1, min(candidates, int(round(self.fraction * loader_rows))))

    def choose(self, values: np.ndarray, keep: int, step: int) -> np.ndarray:
        """Indices of the ``keep`` chosen rows, ascending. NaN ranks below every number; ties
        break by position (the oldest returned rows come first in a candidate batch)."""
        values = np.where(np.isnan(values), -np.inf, values)
        if self.temperature is None:
            order = np.argsort(-values, kind="stable")
            return np.sort(order[:keep])
        finite = np.isfinite(values)
        z = np.zeros_like(values)
        if finite.any():
            spread = values[finite].std()
            centred = values[finite] - values[finite].mean()
            z[finite] = centred / spread if spread > 0 else 0.0
        logits = np.where(finite, z / self.temperature, -np.inf)
        gumbel = np.random.default_rng(_draw_seed(self.seed, step)).gumbel(size=len(values))
        # Gumbel top-k = sampling without replacement from softmax(logits).
        order = np.argsort(-(logits + gumbel), kind="stable")
        return np.sort(order[:keep])


def _draw_seed(seed: int, step: int) -> int:
    digest = hashlib.blake2b(f"select:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def step_score_checker(behaviors: Sequence[str]):  # noqa: ANN201 - a NameChecker
    """A ``check_name`` for ``select.by``: only ``score.<behavior>`` names."""
    known = {f"{STEP_SCORE_FAMILY}.{b}": None for b in behaviors}

    def check(name: str) -> str | None:
        if name in known:
            return None
        if name.startswith(STEP_SCORE_FAMILY + "."):
            behavior = name[len(STEP_SCORE_FAMILY) + 1:]
            close = close_match(behavior, behaviors)
            hint = f" (did you mean 'score.{close}'?)" if close else \
                f"; the store's behaviors are: {', '.join(behaviors)}"
            return f"unknown behavior '{behavior}' in '{name}'{hint}"
        close = close_match(name, known)
        hint = f" (did you mean '{close}'?)" if close else ""
        return (f"'{name}' cannot be read by a select rule, which ranks rows by this step's "
                f"scores (score.<behavior>){hint}")

    return check


def parse_select(where: Located, stage: int, behaviors: Sequence[str], seed: int) -> SelectRule:
    """Validate a stage's ``select`` mapping; mistakes raise PolicyError at their YAML path."""
    from policies.schema import expression_at  # schema imports this module at its top

    keys = where.mapping(SELECT_KEYS, required=("by",))
    modes = [k for k in ("top_fraction", "sample_fraction") if k in keys]
    if len(modes) != 1:
        raise where.error("give exactly one of top_fraction (keep the best rows) or "
                          "sample_fraction (Boltzmann sampling, with temperature)")
    mode = modes[0]
    fraction = keys[mode].number(0.0, 1.0, exclusive_minimum=True)
    temperature = None
    if mode == "sample_fraction":
        if "temperature" not in keys:
            raise where.error("sample_fraction needs a temperature (e.g. temperature: 1.0)")
        temperature = keys["temperature"].number(0.0, 1e6, exclusive_minimum=True)
    elif "temperature" in keys:
        raise keys["temperature"].error("temperature only applies to sample_fraction; "
                                        "top_fraction keeps the best rows deterministically")
    by = expression_at(keys["by"], step_score_checker(behaviors))
    unselected = "return"
    if "unselected" in keys:
        unselected = keys["unselected"].string(what="'return' or 'reject'")
        if unselected not in ("return", "reject"):
            raise keys["unselected"].error(f"expected 'return' or 'reject', got {unselected!r}")
    max_returns = keys["max_returns"].integer(0, MAX_RETURNS_LIMIT) if "max_returns" in keys else 1
    if unselected == "reject" and "max_returns" in keys and max_returns:
        raise keys["max_returns"].error("max_returns only applies to unselected: return")
    how = f"top {fraction:g}" if temperature is None else \
        f"sample {fraction:g} at temperature {temperature:g}"
    label = f"stages[{stage}].select ({how} by {by.source})"
    return SelectRule(label, by, fraction, temperature, unselected,
                      max_returns if unselected == "return" else 0, seed)


def parse_candidate_factor(where: Located) -> int:
    """The policy's ``candidate_factor``: candidate rows per step, as a multiple of the batch."""
    return where.integer(1, MAX_CANDIDATE_FACTOR)
