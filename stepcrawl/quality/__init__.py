"""Quality: datatrove heuristic signals, a fastText quality classifier, and tiers."""

from stepcrawl.quality.classifier import QualityClassifierStep, QualityTrainConfig, train_quality
from stepcrawl.quality.signals import QualitySignalsStep, SignalsConfig
from stepcrawl.quality.tiers import TierConfig, TierStep, assign_tier

__all__ = [
    "QualityClassifierStep",
    "QualitySignalsStep",
    "QualityTrainConfig",
    "SignalsConfig",
    "TierConfig",
    "TierStep",
    "assign_tier",
    "train_quality",
]
