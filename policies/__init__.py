"""Curriculum policies: decisions, the safe condition language, stages, YAML policies.

Users import these names from ``curriculum``; this package is the implementation.
"""

from policies.decisions import DEFER, DROP, EMIT, Decision, DecisionBatch, Defer, Drop, Emit
from policies.driver import CurriculumDriver
from policies.errors import PolicyError
from policies.expressions import Expression, ExpressionError, compile_expression
from policies.load import builtin_policy_names, load_policy, load_policy_text, resolve_policy_path
from policies.percentiles import PercentileTable
from policies.policy import BasePolicy, Policy, PolicyRunner, StagedPolicy
from policies.preview import PreviewResult, plot_preview, preview_policy
from policies.registry import PolicyContext, register_policy, registered_policies
from policies.schema import ExitSpec, PolicySpec, StageSpec
from policies.scores import DocumentScores, ScoreBatch, ScoreSource, StoreScores
from policies.stages import StageTracker, StageTransition
from policies.state import CurriculumState

__all__ = [
    "DEFER", "DROP", "EMIT", "BasePolicy", "CurriculumDriver", "CurriculumState", "Decision",
    "DecisionBatch", "Defer", "DocumentScores", "Drop", "Emit", "ExitSpec", "Expression",
    "ExpressionError", "PercentileTable", "Policy", "PolicyContext", "PolicyError",
    "PolicyRunner", "PolicySpec", "PreviewResult", "ScoreBatch", "ScoreSource", "StageSpec", "StageTracker",
    "StageTransition", "StagedPolicy", "StoreScores", "builtin_policy_names",
    "compile_expression", "load_policy", "load_policy_text", "plot_preview", "preview_policy",
    "register_policy", "registered_policies", "resolve_policy_path",
]
