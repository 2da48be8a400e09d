"""The math source: a page's mathematical content, its FineMath-style quality, and routing.

* **Cheap signals** (:func:`formula_signals`): formulas as the extractor keeps them — inline
  ``$…$`` / ``\\(…\\)``, display ``$$…$$`` / ``\\[…\\]`` — LaTeX commands (``\\frac``,
  ``\\sum``…) and Unicode math symbols (∑ ∫ √ ≤ ∞ …), as counts and a formula-character density.
* **A fastText classifier** (MegaMath/DCLM style: supervised fastText on lower-cased tokens with
  word bigrams, labels ``math`` / ``other``) trained by ``stepcrawl train-math``
  (:func:`train_math`, single thread, fixed seed) on ``samples/math/`` (real math documentation
  from Debian's SciPy/Maxima/GAP/Octave doc packages vs non-math docs and web pages).
* ``math_score`` = 0.7·P(math) + 0.3·formula signal with a model, the formula signal alone
  without one. :class:`MathScoreStep` stores it; :class:`SourceRouterStep` sends pages with
  ``math_score ≥ threshold`` to source ``math`` (kind ``math``) and PDF/ePub to ``books``.
* **FineMath-style quality** (:func:`math_quality`): FineMath scores pages 0–5 for
  step-by-step, explained mathematics (an LLM-annotated classifier we cannot download); ours is
  a transparent proxy from the stored signals: formulas present, reasoning vocabulary
  (proof/theorem/hence/…), explanatory prose (stop-word share) and the web heuristic score.
  ``quality["finemath_score"]`` (0–5) and ``quality["math_quality"]`` (0–1) decide the math tiers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stepcrawl.document import TIERS, Document, tier_rank
from stepcrawl.quality.classifier import QualityTrainConfig
from stepcrawl.quality.tiers import TierConfig, TierStep, scores
from stepcrawl.steps import Drop, DocumentStep

_DISPLAY = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]", re.S)
# inline $…$: no space just inside the dollars (a shell prompt "$ ls" or prices "$5 and $10"
# are not formulas), and the content must look like math (an operator, a command, a sub- or
# superscript, or a lone variable), as OpenWebMath's heuristics require
_INLINE = re.compile(r"(?<![\\$\w])\$(?![\s$])([^$\n]{1,400}?)(?<![\\\s])\$(?![\w$])|\\\((.+?)\\\)", re.S)
_MATHY = re.compile(r"[\\^_=+<>*/|]|^[A-Za-z]$|^[A-Za-z]\s*[-,]|\d\s*[-+]\s*\d")
_LATEX_CMD = re.compile(r"\\(?:frac|sum|int|sqrt|alpha|beta|gamma|delta|epsilon|theta|lambda|mu|sigma|pi|omega|partial|nabla|infty|"
                        r"cdot|times|leq|geq|neq|approx|mathbb|mathrm|mathcal|left|right|begin|end|prod|lim|log|exp|sin|cos|vec|hat|"
                        r"bar|binom|equiv|forall|exists|in|subset|cup|cap|to|rightarrow|mapsto|ldots|cdots|operatorname)\b")
_UNICODE_MATH = re.compile(r"[∑∏∫∬∮√∞≤≥≠≈≡±∓×÷∂∇∈∉∀∃⊂⊆∪∩→⇒⇔↦ℝℕℤℚℂαβγδεθλμσπωΓΔΘΛΣΦΨΩ²³⁻¹∘⊗⊕]")
_REASONING = re.compile(r"\b(?:proof|prove|theorem|lemma|corollary|definition|hence|therefore|thus|we have|let|suppose|assume|"
                        r"since|follows|solution|solve|example|equation|derivative|integral|matrix|vector|function|"
                        r"q\.e\.d|implies|substitut\w*|step)\b", re.I)
_STOP = frozenset("the of and to a in is that for it as with be on by this we are or an which can from at".split())


def formula_signals(text: str) -> dict[str, float]:
    """Counts and densities of formulas in ``text`` (the extractor's ``$…$``/``$$…$$`` shape)."""
    display = _DISPLAY.findall(text)
    rest = _DISPLAY.sub(" ", text)
    inline = [(a, b) for a, b in _INLINE.findall(rest) if b or _MATHY.search(a)]
    formula_chars = sum(len(a or b) for a, b in display) + sum(len(a or b) for a, b in inline)
    n_cmd = len(_LATEX_CMD.findall(text))
    n_sym = len(_UNICODE_MATH.findall(text))
    n = max(1, len(text))
    n_words = max(1, len(text.split()), n // 6)  # CJK text has few spaces: count ~6 chars a word
    return {
        "math_display": float(len(display)),
        "math_inline": float(len(inline)),
        "math_latex_cmds": float(n_cmd),
        "math_symbols": float(n_sym),
        "math_formula_density": round(formula_chars / n, 5),  # share of characters inside formulas
        "math_per_kword": round(1000.0 * (len(display) + len(inline) + n_sym / 3 + n_cmd / 3) / n_words, 3),
    }


def formula_score(sig: dict[str, float]) -> float:
    """The formula signal in [0, 1]: ~10 formulas per 1,000 words, or 5 % of characters in
    formulas, saturate it; a single stray ``$5`` stays near 0."""
    return min(1.0, max(sig["math_per_kword"] / 10.0, sig["math_formula_density"] / 0.05))


def math_quality(text: str, sig: dict[str, float], heuristic: float | None = None) -> float:
    """FineMath-style quality in [0, 1] (× 5 = ``finemath_score``): see the module docstring."""
    words = text.split()
    n_words = max(1, len(words))
    reasoning = min(1.0, len(_REASONING.findall(text)) * 1000.0 / n_words / 15.0)
    prose = min(1.0, sum(w.lower() in _STOP for w in words) / n_words / 0.2)
    length = min(1.0, n_words / 200.0)
    parts = [(0.3, formula_score(sig)), (0.3, reasoning), (0.2, prose), (0.2, length)]
    q = sum(w * v for w, v in parts)
    if heuristic is not None:  # the web heuristics (boilerplate, repetition) still say something
        q = 0.8 * q + 0.2 * heuristic
    return q


# ---------------------------------------------------------------------------------- classifier


@dataclass(frozen=True)
class MathTrainConfig(QualityTrainConfig):
    """The quality classifier's fastText settings, with defaults tuned for the math pages."""

    epoch: int = 25
    # 0.5 (the quality classifier's) hit fastText's "Encountered NaN" on these long lines
    lr: float = 0.1
    dim: int = 32
    bucket: int = 100_000


@dataclass
class MathTrainReport:
    model: str
    n_math: int
    n_other: int
    n_train: int
    n_holdout: int
    holdout_accuracy: float | None
    config: dict[str, Any]
    n_malformed: int = 0  # input records skipped as malformed (listed in ``errors``)
    errors: list[str] = field(default_factory=list)


def train_math(math: str | Path, other: str | Path, out: str | Path, cfg: MathTrainConfig = MathTrainConfig()) -> MathTrainReport:
    """Train the math/other fastText classifier (deterministic: one thread, ``cfg.seed``)."""
    from stepcrawl.quality.classifier import train_two_class_from

    run = train_two_class_from(math, other, ("math", "other"), out, cfg)
    return MathTrainReport(str(out), run.n_first, run.n_second, run.n_train, run.n_holdout, run.holdout_accuracy,
                           asdict(cfg), run.n_malformed, run.errors)


def math_probability(model, text: str, max_chars: int = 20_000) -> float:
    from stepcrawl.quality.classifier import label_probability

    return label_probability(model, text, ("math", "other"), max_chars)


def combined_score(p_math: float | None, sig: dict[str, float]) -> float:
    f = formula_score(sig)
    return f if p_math is None else 0.7 * p_math + 0.3 * f


class MathScoreStep(DocumentStep):
    """Annotate formula signals, ``math_fasttext`` (with a model) and ``math_score``. Never drops."""

    name = "math_score"

    def __init__(self, model_path: str | None = None, max_chars: int = 20_000):
        super().__init__(model_path=str(model_path) if model_path else None, max_chars=max_chars)
        self.model = None

    def _picklable_state(self) -> dict[str, Any]:
        return {"model": None}

    def setup(self) -> None:
        path = self.config["model_path"]
        if path:
            from stepcrawl.langid import load_fasttext

            if not Path(path).exists():
                raise FileNotFoundError(f"math model {path} not found (train one with `stepcrawl train-math`)")
            self.model = load_fasttext(path)

    def process(self, doc: Document) -> Document:
        if doc.kind == "book":  # books are their own source; their formulas still count in stats
            return doc
        sig = formula_signals(doc.text)
        q = {**doc.quality, **sig}
        p = None
        if self.model is not None:
            p = math_probability(self.model, doc.text, self.config["max_chars"])
            q["math_fasttext"] = round(p, 5)
        q["math_score"] = round(combined_score(p, sig), 5)
        return doc.replace(quality=q)


class SourceRouterStep(DocumentStep):
    """Route: ``kind="book"`` (PDF/ePub) → source ``books``; ``math_score ≥ threshold`` → source
    ``math``, kind ``math``; the rest stay. Never drops. Pure on the stored signals, so the Beam
    pipeline routes the same documents (same ids)."""

    name = "route"

    def __init__(self, math_threshold: float = 0.5):
        super().__init__(math_threshold=float(math_threshold))

    def process(self, doc: Document) -> Document:
        if doc.kind == "book":
            return doc if doc.source == "books" else doc.replace(source="books")
        if doc.quality.get("math_score", 0.0) >= self.config["math_threshold"]:
            return doc.replace(source="math", kind="math")
        return doc


class MathTierStep(DocumentStep):
    """Tier ``kind="math"`` documents by FineMath-style ``math_quality`` (others pass); drop
    below ``min_tier`` as ``math:tier-<tier>``. Thresholds as the web tiers'."""

    name = "math_tier"

    def __init__(self, min_tier: str = "Medium", thresholds: tuple[float, float, float, float] = (0.85, 0.7, 0.5, 0.3)):
        super().__init__(min_tier=min_tier, thresholds=list(thresholds))

    def process(self, doc: Document) -> Document | Drop:
        if doc.kind != "math":
            return doc
        heuristic, _ = scores({k: v for k, v in doc.quality.items() if k != "fasttext_hq"}, TierConfig())
        sig = {k: doc.quality.get(k, 0.0) for k in ("math_per_kword", "math_formula_density")}
        q = math_quality(doc.text, sig, heuristic)
        tier = TIERS[-1]
        for t, th in zip(TIERS, self.config["thresholds"]):
            if q >= th:
                tier = t
                break
        doc = doc.replace(tier=tier, quality={**doc.quality, "heuristic_score": round(heuristic, 5), "math_quality": round(q, 5),
                                              "finemath_score": round(5 * q, 2)})
        if tier_rank(tier) > tier_rank(self.config["min_tier"]):
            return Drop("math:tier-" + tier.lower(), doc)
        return doc



class WebTierStep(TierStep):
    """The web ``TierStep`` for every document that is neither math nor a book (those have
    their own tier steps: :class:`MathTierStep`, :class:`stepcrawl.books.BookTierStep`)."""

    name = "tier"

    def process(self, doc: Document) -> Document | Drop:
        return doc if doc.kind in ("math", "book") else super().process(doc)
