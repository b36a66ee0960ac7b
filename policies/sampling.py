"""Counter-based random numbers for ``sample`` rules: a pure function of (seed, row, stage, rule).

A stateful generator would make a document's fate depend on which worker saw it and in what
order; hashing the coordinates instead gives every worker, rank and resumed run the same answer.
The mixer is SplitMix64's finaliser; the scalar and vectorised forms give identical bits.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
_TO_UNIT = 2.0 ** -53


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _salt(seed: int, stage: int, rule: int) -> int:
    coordinates = (((stage & 0xFFFFFFFF) << 16) | (rule & 0xFFFF)) + 1
    return _mix((_mix(seed & _MASK) + _GOLDEN * coordinates) & _MASK)


def uniform(seed: int, row: int, stage: int, rule: int) -> float:
    """A number in [0, 1) determined by its coordinates alone."""
    return (_mix(_salt(seed, stage, rule) ^ (row & _MASK)) >> 11) * _TO_UNIT


def uniform_array(seed: int, rows: np.ndarray, stage: int, rule: int) -> np.ndarray:
    """:func:`uniform` for many rows at once (float64)."""
    salt = np.uint64(_salt(seed, stage, rule))
    with np.errstate(over="ignore"):
        mixed = _mix_array(np.asarray(rows).astype(np.uint64) ^ salt)
    return (mixed >> np.uint64(11)).astype(np.float64) * _TO_UNIT
