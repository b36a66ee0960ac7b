"""The one error type a policy file can produce: :class:`PolicyError`, naming where the mistake is.

Every problem found while reading a policy (YAML syntax, wrong types, unknown keys, bad
expressions, unreachable stages) is raised as a ``PolicyError`` whose message starts with the
YAML path of the mistake and ends with its line, e.g.
``stages[1].rules[0].when: unknown score 'affinty.values' (line 12)``. Callers can rely on never
getting another exception type from :func:`policies.load_policy`.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy file (or policy text) that cannot be used.

    ``path`` is the YAML path of the mistake (``stages[1].rules[0].when``; ``(file)`` for a
    problem with the document as a whole), ``line`` its 1-based line when known, ``source`` the
    file it came from when known.
    """

    def __init__(self, path: str, message: str, line: int | None = None,
                 source: str | None = None) -> None:
        self.path = path
        self.message = message
        self.line = line
        self.source = source
        where = f" (line {line})" if line is not None else ""
        origin = f"{source}: " if source else ""
        super().__init__(f"{origin}{path}: {message}{where}")
