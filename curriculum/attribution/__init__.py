"""Online attribution: first-order In-Run Data Shapley scores for K behaviors in one backward pass,
and LoGra-style gradient features for the behavior store."""

from curriculum.attribution.attributor import InRunAttributor, ScoreResult
from curriculum.attribution.config import AttributionConfig
from curriculum.attribution.grad_features import (
    GradientFeatureConfig,
    GradientFeatureEmbedder,
    GradientFeatureProjector,
    byte_document_batch,
)
from curriculum.attribution.hooks import GradientPiece, LayerCapture, UncoveredParametersWarning
from curriculum.attribution.losses import (
    IGNORE_INDEX,
    mean_token_probe_loss,
    per_example_token_loss,
)
from curriculum.attribution.probe import adam_preconditioner
from curriculum.attribution.sketch import spearman_correlation

__all__ = [
    "IGNORE_INDEX",
    "AttributionConfig",
    "GradientFeatureConfig",
    "GradientFeatureEmbedder",
    "GradientFeatureProjector",
    "GradientPiece",
    "InRunAttributor",
    "LayerCapture",
    "ScoreResult",
    "UncoveredParametersWarning",
    "adam_preconditioner",
    "byte_document_batch",
    "mean_token_probe_loss",
    "per_example_token_loss",
    "spearman_correlation",
]
