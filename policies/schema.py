"""The policy file format as typed dataclasses, and the validation that maps YAML onto them.

A staged policy file::

    name: values_first            # optional label
    type: staged                  # default; or the name of a registered Python policy
    seed: 0                       # for `sample` rules
    max_weight: 4.0               # cap on any document's loss weight
    stages:
      - name: values
        until: {when: "probe_loss.values < 2.5", min_steps: 500, max_steps: 3000}
        rules:
          - upweight: 2.0
            when: pct.affinity.values >= 0.7
          - delay: {until_stage: release}
            when: pct.affinity.situational_awareness >= 0.75
      - name: release
        rules: []

Everything is checked when the file loads (types, ranges, unknown keys, score and behavior
names, stage references, stages that could never be reached, conditions that could never be
evaluated); a mistake raises :class:`~policies.errors.PolicyError` with its YAML path and line.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.errors import PolicyError
from policies.expressions import Expression, ExpressionError, compile_expression
from policies.scores import ASSESS_FAMILIES, FAMILIES, STATE_NAMES, ScoreLayout
from policies.select_rule import SelectRule, parse_candidate_factor, parse_select
from policies.yamlsource import Located, close_match, describe

#: Keys every policy file may have, whatever its type.
COMMON_KEYS = ("name", "description", "type", "seed")
#: Keys of a staged policy file.
STAGED_KEYS = (*COMMON_KEYS, "min_weight", "max_weight", "metrics", "candidate_factor", "stages")
#: The rule actions, in the order the docs list them.
ACTIONS = ("upweight", "downweight", "prioritize", "delay", "drop", "sample", "tag")
#: Logged metric families known per behavior (``probe_loss.values``).
METRIC_FAMILIES = ("probe_loss",)
#: Names a stage exit condition may read besides metrics.
PROGRESS_NAMES = ("step", "tokens", "stage_steps", "stage_tokens")
#: Most rules a stage may have (the deciding rules of a document are kept in a 64-bit mask).
MAX_RULES_PER_STAGE = 60
MAX_STAGES = 1000

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


# --- typed configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class ExitSpec:
    """When a stage ends. It ends at the first step boundary where any of ``steps``, ``tokens``
    or ``when`` holds, but not before ``min_steps`` and at the latest at ``max_steps``."""

    steps: int | None = None
    """End after this many optimizer steps in the stage."""

    tokens: int | None = None
    """End after this many training tokens in the stage."""

    when: Expression | None = None
    """End when this condition on logged metrics holds (e.g. ``probe_loss.values < 2.1``)."""

    min_steps: int = 0
    """Never end before this many steps in the stage, whatever the other conditions say."""

    max_steps: int | None = None
    """Always end after this many steps in the stage, even if no condition held."""


@dataclass(frozen=True)
class Rule:
    """What every rule has: where it is and when it applies."""

    label: str
    """How decisions name this rule: ``stages[0].rules[1] (delay)``."""

    when: Expression | None
    """Condition on the document's scores and the curriculum state; None means always."""


@dataclass(frozen=True)
class Upweight(Rule):
    """Multiply the document's loss weight by ``factor``, capped at ``max_weight``."""

    factor: float = 1.0
    """Weight factor, >= 1."""

    max_weight: float = 1.0
    """Cap on the resulting weight (the policy's ``max_weight`` unless the rule sets one)."""


@dataclass(frozen=True)
class Downweight(Rule):
    """Multiply the document's loss weight by ``factor`` (0 < factor <= 1)."""

    factor: float = 1.0
    """Weight factor in (0, 1]."""


@dataclass(frozen=True)
class Prioritize(Rule):
    """Add ``priority`` (a number or an expression over scores) to the document's priority."""

    priority: Expression | None = None
    """Added to the priority; higher leaves the loader's reorder window first."""


@dataclass(frozen=True)
class Delay(Rule):
    """Defer the document to a later stage or step (exactly one target is set)."""

    until_stage: int | None = None
    """Index of the stage at which the document comes back."""

    until_step: int | None = None
    """Global step at which the document comes back (the rule stops applying after it)."""

    for_steps: int | None = None
    """Come back this many steps after the decision."""


@dataclass(frozen=True)
class DropRule(Rule):
    """Drop the document, with a reason that the ledger counts."""

    reason: str = "drop"
    """Why the document is dropped."""


@dataclass(frozen=True)
class Sample(Rule):
    """Keep the document with probability ``keep``, else drop it (seeded per row and stage)."""

    keep: float = 1.0
    """Probability in [0, 1] of keeping a matching document."""

    rule_index: int = 0
    """Position of the rule in its stage, part of the sampling hash."""


@dataclass(frozen=True)
class Tag(Rule):
    """Attach ``tag`` to the emitted document (e.g. route it to revision)."""

    tag: str = ""
    """The tag."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of a curriculum: its rules, and when it ends."""

    name: str
    """Unique stage name (``values``, ``release``); rules can defer to it by name."""

    index: int
    """Position in the policy (0-based)."""

    rules: tuple[Rule, ...] = ()
    """Applied in order: modifiers accumulate; the first ``delay``, ``drop`` or failed
    ``sample`` ends the document's evaluation."""

    exit: ExitSpec | None = None
    """When the stage ends; None only for the last stage, which never ends."""

    description: str = ""
    """Free text for people."""

    select: SelectRule | None = None
    """In-batch selection of the rows that update the weights (None: every candidate row)."""


@dataclass(frozen=True)
class PolicySpec:
    """A whole policy file, validated."""

    name: str
    """Label for logs and the run directory."""

    type: str
    """``staged`` for rule-based YAML policies, or a registered Python policy's name."""

    behaviors: tuple[str, ...]
    """The store's behaviors, in store order, that names were checked against."""

    principles: tuple[str, ...] = ()
    """Curation principles the store holds assessments of (``assess.<p>``), in store order."""

    seed: int = 0
    """Seed of ``sample`` rules (and of registered policies that draw)."""

    stages: tuple[StageSpec, ...] = ()
    """The stages, in order (one stage with no exit for registered policies)."""

    min_weight: float = 0.0
    """Lowest loss weight any rule can produce."""

    max_weight: float = 10.0
    """Highest loss weight any rule can produce."""

    metrics: tuple[str, ...] = ()
    """Extra logged metric names that stage exit conditions may read."""

    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters of a registered policy (``params:`` in the file)."""

    description: str = ""
    """Free text for people."""

    source: str | None = None
    """The file it was read from, when any."""

    candidate_factor: int | None = None
    """Candidate rows per step as a multiple of the batch size, for ``select`` rules (None: the
    data config's, or 2 when a stage selects)."""


# --- name checking ------------------------------------------------------------------------------

def _document_names(layout: ScoreLayout) -> dict[str, None]:
    return dict.fromkeys(layout.slots)


NameChecker = Callable[[str], "str | None"]


def document_name_checker(layout: ScoreLayout, metric_names: Sequence[str],
                          unassessed: list[str] | None = None) -> NameChecker:
    """A ``check_name`` for rule conditions: document scores and step/stage/tokens.

    An ``assess.<p>`` name for a principle the store holds no assessments of is a typo when it
    is close to one it holds (an error); otherwise it is allowed and appended to
    ``unassessed`` (when given): no document has been assessed for it yet, so it reads NaN."""
    known = _document_names(layout)
    behaviors = layout.behaviors

    def check(name: str) -> str | None:
        if name in known:
            return None
        if name in metric_names or name.split(".")[0] in METRIC_FAMILIES:
            return (f"'{name}' is a logged metric; rule conditions read document scores "
                    f"({', '.join(f + '.<behavior>' for f in FAMILIES)}) and "
                    f"{', '.join(STATE_NAMES)}; use metrics in a stage's 'until'")
        if name in ("stage_steps", "stage_tokens"):
            return f"'{name}' is only available in a stage's 'until' condition"
        family = layout.family_of(name)
        if family in ASSESS_FAMILIES:
            principle = name[len(family) + 1:]
            close = close_match(principle, layout.principles)
            if unassessed is not None and not close and _IDENTIFIER.fullmatch(principle):
                if principle not in unassessed:
                    unassessed.append(principle)
                return None
            hint = f" (did you mean '{family}.{close}'?)" if close else (
                f"; the store holds assessments of: {', '.join(layout.principles)}"
                if layout.principles else "; the store holds no assessments (write them with "
                                          "`curriculum curate --store`)")
            return f"no assessments of principle '{principle}' in '{name}'{hint}"
        if family is not None:
            behavior = name[len(family) + 1:]
            close = close_match(behavior, behaviors)
            hint = f" (did you mean '{family}.{close}'?)" if close else \
                f"; the store's behaviors are: {', '.join(behaviors)}"
            return f"unknown behavior '{behavior}' in '{name}'{hint}"
        close = close_match(name, known)
        hint = f" (did you mean '{close}'?)" if close else ""
        return f"unknown score '{name}'{hint}"

    return check


def metric_names(behaviors: Sequence[str], declared: Sequence[str]) -> tuple[str, ...]:
    """Every metric name a stage exit condition may read."""
    return tuple(f"{family}.{b}" for family in METRIC_FAMILIES for b in behaviors) + \
        tuple(declared)


def stage_name_checker(layout: ScoreLayout, metrics: Sequence[str]) -> NameChecker:
    """A ``check_name`` for stage exit conditions: metrics and training progress."""
    known = dict.fromkeys((*metrics, *PROGRESS_NAMES))
    documents = _document_names(layout)

    def check(name: str) -> str | None:
        if name in known:
            return None
        if name in documents and name not in STATE_NAMES:
            return (f"'{name}' is a document score, which a stage exit condition can never "
                    f"read; use logged metrics (e.g. probe_loss.<behavior>) or "
                    f"{', '.join(PROGRESS_NAMES)}")
        if name == "stage":
            return "'stage' is not available in exit conditions (each stage has its own)"
        close = close_match(name, known)
        hint = f" (did you mean '{close}'?)" if close else \
            " (declare extra logged metrics under 'metrics')"
        return f"unknown metric '{name}'{hint}"

    return check


def expression_at(where: Located, check: NameChecker) -> Expression:
    """Compile the expression at ``where``; errors become PolicyErrors at its path."""
    if where.value is None or isinstance(where.value, list | dict):
        raise where.error(f"expected an expression, got {describe(where.value)}")
    try:
        return compile_expression(where.value, check)
    except ExpressionError as error:
        raise where.error(str(error)) from None


# --- parsing ------------------------------------------------------------------------------------

def parse_common(root: Located) -> tuple[str, str, int, str]:
    """``name``, ``type``, ``seed`` and ``description`` of any policy file."""
    values = root.value
    if not isinstance(values, dict):
        raise root.error(f"a policy file must be a mapping, got {describe(values)}")
    get = {k: root.child(k, v) for k, v in values.items() if isinstance(k, str)}
    name = get["name"].string(_LABEL, "a name (letters, digits, _ . : -)") \
        if "name" in get else "policy"
    policy_type = get["type"].string(_IDENTIFIER, "a policy type name") \
        if "type" in get else "staged"
    seed = get["seed"].integer(0, 2**63 - 1) if "seed" in get else 0
    description = get["description"].string() if "description" in get else ""
    return name, policy_type, seed, description


def parse_staged(root: Located, behaviors: Sequence[str],
                 principles: Sequence[str] = ()) -> PolicySpec:
    """Validate a staged policy document against the store's behaviors (and the principles it
    holds assessments of, for ``assess.<p>`` names).

    A rule may name a principle the store has not been assessed on (it reads NaN, so its
    conditions are false until `curriculum curate --store` writes scores); that is allowed with
    a warning, and the principle joins the spec's ``principles``."""
    unassessed: list[str] = []
    spec = _parse_staged(root, behaviors, principles, unassessed)
    if not unassessed:
        return spec
    warnings.warn(f"{root.document.source or 'policy'}: the store holds no assessments of "
                  f"{', '.join(unassessed)}; assess.* reads NaN for every document (conditions "
                  f"on it are false) until `curriculum curate --store` writes them",
                  RuntimeWarning, stacklevel=3)
    return _parse_staged(root, behaviors, (*principles, *unassessed), None)


def _parse_staged(root: Located, behaviors: Sequence[str], principles: Sequence[str],
                  unassessed: list[str] | None) -> PolicySpec:
    name, policy_type, seed, description = parse_common(root)
    keys = root.mapping(STAGED_KEYS, required=("stages",))
    min_weight = keys["min_weight"].number(0.0, 1000.0) if "min_weight" in keys else 0.0
    max_weight = keys["max_weight"].number(0.0, 1000.0, exclusive_minimum=True) \
        if "max_weight" in keys else 10.0
    if max_weight < min_weight:
        raise keys["max_weight"].error(
            f"max_weight ({max_weight:g}) is below min_weight ({min_weight:g})")
    declared: list[str] = []
    if "metrics" in keys:
        for item in keys["metrics"].sequence():
            declared.append(item.string(_DOTTED, "a metric name like 'val_loss'"))
    layout = ScoreLayout(behaviors, principles)
    metrics = metric_names(behaviors, declared)
    stage_items = list(keys["stages"].sequence())
    if not stage_items:
        raise keys["stages"].error("a policy needs at least one stage")
    if len(stage_items) > MAX_STAGES:
        raise keys["stages"].error(f"at most {MAX_STAGES} stages")
    stage_names = _stage_names(stage_items)
    candidate_factor = parse_candidate_factor(keys["candidate_factor"]) \
        if "candidate_factor" in keys else None
    context = _StageContext(layout, metrics, stage_names, min_weight, max_weight, unassessed,
                            seed)
    stages = tuple(_parse_stage(item, index, len(stage_items), context)
                   for index, item in enumerate(stage_items))
    return PolicySpec(name=name, type=policy_type, behaviors=tuple(behaviors),
                      principles=tuple(principles), seed=seed,
                      stages=stages, min_weight=min_weight, max_weight=max_weight,
                      metrics=tuple(declared), description=description,
                      source=root.document.source, candidate_factor=candidate_factor)


@dataclass(frozen=True)
class _StageContext:
    layout: ScoreLayout
    metrics: tuple[str, ...]
    stage_names: tuple[str, ...]
    min_weight: float
    max_weight: float
    unassessed: list[str] | None = None
    """Collects ``assess.<p>`` principles the store has no assessments of (None: refuse)."""
    seed: int = 0


def _stage_names(items: list[Located]) -> tuple[str, ...]:
    names: list[str] = []
    for index, item in enumerate(items):
        name = f"stage{index}"
        if not isinstance(item.value, dict):
            raise item.error(f"expected a mapping (a stage), got {describe(item.value)}")
        if isinstance(item.value, dict) and "name" in item.value:
            name = item.child("name", item.value["name"]).string(
                _IDENTIFIER, "a stage name (letters, digits, _)")
            if name in names:
                raise item.child("name", name).error(f"duplicate stage name '{name}'")
        names.append(name)
    return tuple(names)


def _parse_stage(item: Located, index: int, count: int, context: _StageContext) -> StageSpec:
    keys = item.mapping(("name", "description", "until", "rules", "select"))
    description = keys["description"].string() if "description" in keys else ""
    last = index == count - 1
    exit_spec = None
    if "until" in keys:
        if last:
            raise keys["until"].error(
                "the last stage never ends; remove 'until' (or add a stage after it)")
        exit_spec = _parse_exit(keys["until"], context)
    elif not last:
        following = ", ".join(f"stages[{i}]" for i in range(index + 1, count))
        raise item.error(f"stage '{context.stage_names[index]}' has no 'until', so it never "
                         f"ends and {following} can never be reached")
    rules: list[Rule] = []
    if "rules" in keys:
        rule_items = list(keys["rules"].sequence())
        if len(rule_items) > MAX_RULES_PER_STAGE:
            raise keys["rules"].error(f"at most {MAX_RULES_PER_STAGE} rules per stage")
        rules = [_parse_rule(rule, index, position, count, context)
                 for position, rule in enumerate(rule_items)]
    select = parse_select(keys["select"], index, context.layout.behaviors, context.seed) \
        if "select" in keys else None
    return StageSpec(context.stage_names[index], index, tuple(rules), exit_spec, description,
                     select)


def _parse_exit(where: Located, context: _StageContext) -> ExitSpec:
    keys = where.mapping(("steps", "tokens", "when", "min_steps", "max_steps"))
    limit = 2**62
    steps = keys["steps"].integer(1, limit) if "steps" in keys else None
    tokens = keys["tokens"].integer(1, limit) if "tokens" in keys else None
    min_steps = keys["min_steps"].integer(0, limit) if "min_steps" in keys else 0
    max_steps = keys["max_steps"].integer(1, limit) if "max_steps" in keys else None
    when = None
    if "when" in keys:
        when = expression_at(keys["when"], stage_name_checker(context.layout, context.metrics))
    if steps is None and tokens is None and when is None and max_steps is None:
        raise where.error("no exit condition: give steps, tokens, when or max_steps")
    if max_steps is not None and min_steps > max_steps:
        raise keys["min_steps"].error(
            f"min_steps ({min_steps}) is above max_steps ({max_steps})")
    if max_steps is not None and steps is not None and steps > max_steps:
        raise keys["steps"].error(
            f"steps ({steps}) can never be reached because max_steps is {max_steps}")
    return ExitSpec(steps, tokens, when, min_steps, max_steps)


_ACTION_EXTRAS = {"upweight": ("max_weight",)}


def _parse_rule(where: Located, stage: int, position: int, stage_count: int,
                context: _StageContext) -> Rule:
    extras = {extra for extras in _ACTION_EXTRAS.values() for extra in extras}
    keys = where.mapping((*ACTIONS, "when", "name", *sorted(extras)))
    actions = [a for a in ACTIONS if a in keys]
    if not actions:
        raise where.error(f"a rule needs one action: {', '.join(ACTIONS)}")
    if len(actions) > 1:
        raise where.error(f"a rule has exactly one action, found {' and '.join(actions)}")
    action = actions[0]
    for key in keys:
        if key in extras and key not in _ACTION_EXTRAS.get(action, ()):
            raise keys[key].error(f"'{key}' only applies to "
                                  f"{', '.join(a for a, e in _ACTION_EXTRAS.items() if key in e)}")
    label_name = keys["name"].string(_LABEL, "a rule name (letters, digits, _ . : -)") \
        if "name" in keys else None
    label = f"stages[{stage}].rules[{position}] ({action}{': ' + label_name if label_name else ''})"
    document_check = document_name_checker(context.layout, context.metrics, context.unassessed)
    when = expression_at(keys["when"], document_check) if "when" in keys else None
    value = keys[action]
    if action == "upweight":
        factor = value.number(1.0, 1000.0)
        cap = context.max_weight
        if "max_weight" in keys:
            cap = keys["max_weight"].number(0.0, 1000.0, exclusive_minimum=True)
            if cap > context.max_weight:
                raise keys["max_weight"].error(
                    f"max_weight ({cap:g}) is above the policy's max_weight "
                    f"({context.max_weight:g})")
        return Upweight(label, when, factor, cap)
    if action == "downweight":
        return Downweight(label, when, value.number(0.0, 1.0, exclusive_minimum=True))
    if action == "prioritize":
        if isinstance(value.value, bool) or value.value is None or \
                isinstance(value.value, list | dict):
            raise value.error(f"expected a number or an expression, got {describe(value.value)}")
        return Prioritize(label, when, expression_at(value, document_check))
    if action == "delay":
        return _parse_delay(value, label, when, stage, stage_count, context)
    if action == "drop":
        return DropRule(label, when, value.string(what="a reason (text)"))
    if action == "sample":
        return Sample(label, when, value.number(0.0, 1.0), position)
    return Tag(label, when, value.string(_LABEL, "a tag (letters, digits, _ . : -)"))


def _parse_delay(where: Located, label: str, when: Expression | None, stage: int,
                 stage_count: int, context: _StageContext) -> Delay:
    keys = where.mapping(("until_stage", "until_step", "for_steps"))
    if len(keys) != 1:
        raise where.error("give exactly one of until_stage, until_step, for_steps")
    key, value = next(iter(keys.items()))
    if key == "until_step":
        return Delay(label, when, until_step=value.integer(1, 2**62))
    if key == "for_steps":
        return Delay(label, when, for_steps=value.integer(1, 2**62))
    if isinstance(value.value, str):
        if value.value not in context.stage_names:
            close = close_match(value.value, context.stage_names)
            hint = f" (did you mean '{close}'?)" if close else \
                f"; stages are: {', '.join(context.stage_names)}"
            raise value.error(f"unknown stage '{value.value}'{hint}")
        target = context.stage_names.index(value.value)
    else:
        target = value.integer(0, stage_count - 1)
    if target <= stage:
        raise value.error(f"a delay must wait for a later stage than its own (stage {stage}), "
                          f"got stage {target}; the document would never come back")
    if target >= stage_count:  # pragma: no cover - integer() bounds it already
        raise value.error(f"there is no stage {target}")
    return Delay(label, when, until_stage=target)


def check_behaviors(behaviors: Sequence[str]) -> tuple[str, ...]:
    """The store's behavior names, checked to be usable in expressions."""
    out = tuple(behaviors)
    for behavior in out:
        if not isinstance(behavior, str) or not _IDENTIFIER.fullmatch(behavior):
            raise PolicyError("(store)", f"behavior name {behavior!r} cannot be used in "
                                         f"policy expressions (letters, digits and _ only)")
    if len(set(out)) != len(out):
        raise PolicyError("(store)", f"duplicate behavior names: {out}")
    return out
