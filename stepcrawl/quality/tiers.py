"""Quality tiers: an ensemble of datatrove filter verdicts and the fastText classifier.

Rule (all numbers in :class:`TierConfig`, loadable from YAML):

1. ``heuristic`` = Σ weight_f · verdict_f / Σ weight_f over the datatrove filters present
   (verdict 1 = passed, 0 = failed).
2. ``ensemble`` = classifier_weight · fasttext_hq + (1 − classifier_weight) · heuristic when the
   document has ``fasttext_hq``; otherwise ``heuristic`` alone.
3. The tier is the first of High, Medium-High, Medium, Medium-Low whose threshold ``ensemble``
   reaches; else Low.

Both scores are stored in ``doc.quality`` (``heuristic_score``, ``ensemble_score``) so a corpus can
be re-tiered later from its stored signals (``TierStep`` only reads ``doc.quality``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stepcrawl.document import TIERS, Document, tier_rank
from stepcrawl.steps import Drop, DocumentStep


@dataclass(frozen=True)
class TierConfig:
    weights: dict[str, float] = field(
        default_factory=lambda: {"gopher_quality": 0.3, "gopher_repetition": 0.3, "fineweb_quality": 0.25, "c4_quality": 0.15}
    )
    classifier_weight: float = 0.5
    # lower bound of ensemble score for High, Medium-High, Medium, Medium-Low (below: Low)
    thresholds: tuple[float, float, float, float] = (0.85, 0.7, 0.5, 0.3)

    def __post_init__(self) -> None:
        t = tuple(float(x) for x in self.thresholds)
        if len(t) != len(TIERS) - 1 or list(t) != sorted(t, reverse=True):
            raise ValueError(f"TierConfig.thresholds must be {len(TIERS) - 1} decreasing numbers, got {self.thresholds}")
        if not 0.0 <= self.classifier_weight <= 1.0:
            raise ValueError(f"TierConfig.classifier_weight must be in [0, 1], got {self.classifier_weight}")
        object.__setattr__(self, "thresholds", t)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TierConfig":
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a YAML text file (invalid UTF-8 at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            raise ValueError(f"{where}: bad YAML: {getattr(exc, 'problem', None) or exc}") from None
        if isinstance(data, dict):
            data = data.get("tiers", data)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of TierConfig keys, got {type(data).__name__}")
        unknown = set(data) - {"weights", "classifier_weight", "thresholds"}
        if unknown:
            raise ValueError(f"{path}: unknown TierConfig keys {sorted(unknown)}")
        try:
            if "thresholds" in data:
                data["thresholds"] = tuple(data["thresholds"])
            if "weights" in data and not isinstance(data["weights"], dict):
                raise TypeError("weights must be a mapping of signal: weight")
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        return d


def scores(quality: dict[str, float], cfg: TierConfig) -> tuple[float, float]:
    """(heuristic, ensemble) scores in [0, 1] from a document's stored signals."""
    present = {k: w for k, w in cfg.weights.items() if k in quality}
    total = sum(present.values())
    heuristic = sum(w * float(quality[k]) for k, w in present.items()) / total if total else 1.0
    if "fasttext_hq" in quality:
        ensemble = cfg.classifier_weight * float(quality["fasttext_hq"]) + (1 - cfg.classifier_weight) * heuristic
    else:
        ensemble = heuristic
    return heuristic, ensemble


def assign_tier(quality: dict[str, float], cfg: TierConfig = TierConfig()) -> str:
    return tier_of(scores(quality, cfg)[1], cfg)


def tier_of(ensemble: float, cfg: TierConfig) -> str:
    """The first tier whose threshold ``ensemble`` reaches (else the last)."""
    for tier, threshold in zip(TIERS, cfg.thresholds):
        if ensemble >= threshold:
            return tier
    return TIERS[-1]


def drop_reason(tier: str) -> str:
    return "quality:tier-" + tier.lower()


class TierStep(DocumentStep):
    """Set ``doc.tier`` (and the two scores); drop documents below ``min_tier`` as
    ``quality:tier-<tier>`` (e.g. ``quality:tier-medium-low``)."""

    name = "tier"

    def __init__(self, cfg: TierConfig | None = None, min_tier: str = "Medium"):
        if min_tier not in TIERS:
            raise ValueError(f"min_tier must be one of {TIERS}, got {min_tier!r}")
        cfg = cfg or TierConfig()
        super().__init__(tiers=cfg.to_dict(), min_tier=min_tier)
        self._cfg = cfg

    def _picklable_state(self) -> dict[str, Any]:
        return {"_cfg": self._cfg}

    def process(self, doc: Document) -> Document | Drop:
        heuristic, ensemble = scores(doc.quality, self._cfg)
        tier = tier_of(ensemble, self._cfg)
        doc = doc.replace(tier=tier, quality={**doc.quality, "heuristic_score": round(heuristic, 5), "ensemble_score": round(ensemble, 5)})
        if tier_rank(tier) > tier_rank(self.config["min_tier"]):
            return Drop(drop_reason(tier), doc)
        return doc
