"""The curriculum YAML schema: stages → phases, each with a token budget, a sequence length, a
mixture over named source entries, epoch caps, optional replay of an earlier phase, and the
training schedule that belongs to it (batch ramp, LR shape, RoPE θ, MTP weight, meta-mask,
router/bias/EP settings).

Budgets are exact Python ints (``"14.6T"`` parses to ``14_600_000_000_000`` through
``fractions.Fraction``, never through a float), so the planner's arithmetic cannot drift.
Validation is pydantic v2; ``load_curriculum`` turns its errors into messages that name the
stage, the phase and the field (``stage 'mid' / phase 'mid2': mixture: weights sum to 0.9``)
rather than list indices.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stepcrawl.document import TIERS

# --------------------------------------------------------------------------------------------
# token budgets
# --------------------------------------------------------------------------------------------

SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_BUDGET_RE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)\s*([kKMBGT]?)\s*$")


class CurriculumError(ValueError):
    """A curriculum that cannot be used; the message names the stage/phase and field."""


def parse_tokens(value: Any) -> int:
    """A token count from an int or a string like ``14.6T``, ``386B``, ``750M``, ``1.5k``,
    ``1_000``, ``2e9``. Exact: the decimal is read as a Fraction and must be a whole number
    of tokens (``1.5`` tokens is an error, not a rounding)."""
    if isinstance(value, bool):
        raise ValueError(f"not a token count: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"not a whole token count: {value!r} (write e.g. '1.5B')")
        n = int(value)
    elif isinstance(value, str):
        m = _BUDGET_RE.match(value)
        if not m:
            raise ValueError(
                f"not a token count: {value!r} (expected e.g. 14.6T, 386B, 750M, 1.5k, 4096)"
            )
        number, suffix = m.group(1).replace("_", ""), m.group(2)
        exact = Fraction(number) * SUFFIXES[suffix]
        if exact.denominator != 1:
            raise ValueError(f"{value!r} is not a whole number of tokens ({float(exact)})")
        n = int(exact)
    else:
        raise ValueError(f"not a token count: {value!r}")
    if n < 0:
        raise ValueError(f"token count must be >= 0, got {value!r}")
    return n


def format_tokens(n: int) -> str:
    """The shortest exact suffix form: 14_600_000_000_000 → '14.6T', 1500 → '1.5k', 7 → '7'.
    ``parse_tokens(format_tokens(n)) == n`` for every n >= 0."""
    for suffix, mult in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= mult:
            whole, frac = divmod(n, mult)
            if frac == 0:
                return f"{whole}{suffix}"
            digits = str(frac).rjust(len(str(mult)) - 1, "0").rstrip("0")
            if len(digits) <= 3:
                return f"{whole}.{digits}{suffix}"
    return str(n)


def _fraction(x: float | int | str) -> Fraction:
    """A YAML weight as the exact decimal it was written as (0.1 → 1/10, not the binary float)."""
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LongDocs(_Model):
    """Keep only documents of at least ``min_tokens`` tokens (mid-2's natural long documents)."""

    min_tokens: int

    @field_validator("min_tokens", mode="before")
    @classmethod
    def _tok(cls, v):
        return parse_tokens(v)


class SourceSpec(_Model):
    """A named source entry: an underlying token directory (``TOKENS/<source>/``), optionally
    restricted to quality tiers and/or long documents. ``web_hq: {source: web, tiers: [High]}``."""

    source: str
    tiers: list[str] | None = None
    long_docs: LongDocs | None = None

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("tiers: empty list (omit the field to take every tier)")
        bad = [t for t in v if t not in TIERS]
        if bad:
            raise ValueError(f"tiers: unknown tier(s) {bad}; known: {list(TIERS)}")
        return sorted(set(v), key=TIERS.index)


class BatchStep(_Model):
    at: int = Field(description="tokens into the phase where this batch starts")
    batch: int = Field(gt=0, description="global batch in sequences")

    @field_validator("at", mode="before")
    @classmethod
    def _tok(cls, v):
        return parse_tokens(v)


class BatchRamp(_Model):
    """Piecewise-constant global batch: ``steps: [{at: 0, batch: 4096}, {at: 133B, batch: 8192}]``.
    A step that starts before a boundary keeps its batch (the ramp is evaluated per step)."""

    steps: list[BatchStep]

    @model_validator(mode="after")
    def _check(self):
        if not self.steps:
            raise ValueError("global_batch.steps: empty")
        if self.steps[0].at != 0:
            raise ValueError("global_batch.steps: the first step must be at 0")
        ats = [s.at for s in self.steps]
        if any(b <= a for a, b in zip(ats, ats[1:])):
            raise ValueError(f"global_batch.steps: 'at' must strictly increase, got {ats}")
        return self


LRShape = Literal["constant", "warmup_cosine", "warmup_constant", "cosine", "linear_decay"]


class LRSchedule(_Model):
    """Learning-rate shape within a phase.

    - ``constant``: ``peak`` throughout.
    - ``warmup_constant``: linear ``start`` (default 0) → ``peak`` over ``warmup``, then ``peak``.
    - ``warmup_cosine``: linear ``start`` → ``peak`` over ``warmup``, then cosine ``peak`` → ``end``.
    - ``cosine`` / ``linear_decay``: ``start`` → ``end`` over the whole phase.

    ``warmup`` is an int number of steps (``2000``) or a fraction of the phase's steps
    (``0.03`` or ``"3%"``).
    """

    shape: LRShape
    peak: float | None = None
    start: float = 0.0
    end: float | None = None
    warmup: int | float = 0

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup(cls, v):
        if isinstance(v, str):
            s = v.strip()
            if s.endswith("%"):
                return float(Fraction(s[:-1]) / 100)
            raise ValueError(f"warmup: expected steps (int), a fraction (0.03) or '3%', got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self):
        shape = self.shape
        if isinstance(self.warmup, float) and not 0 <= self.warmup < 1:
            raise ValueError(f"lr.warmup: a fraction must be in [0, 1), got {self.warmup}")
        if isinstance(self.warmup, int) and self.warmup < 0:
            raise ValueError("lr.warmup: must be >= 0")
        if shape in ("constant", "warmup_constant", "warmup_cosine") and self.peak is None:
            raise ValueError(f"lr: shape {shape} needs 'peak'")
        if shape in ("warmup_cosine", "cosine", "linear_decay") and self.end is None:
            raise ValueError(f"lr: shape {shape} needs 'end'")
        if shape in ("cosine", "linear_decay", "constant") and self.warmup:
            raise ValueError(f"lr: shape {shape} takes no warmup (use warmup_cosine / warmup_constant)")
        for name in ("peak", "start", "end"):
            v = getattr(self, name)
            if v is not None and (v < 0 or not math.isfinite(v)):
                raise ValueError(f"lr.{name}: must be a finite value >= 0, got {v}")
        return self


class RateDecay(_Model):
    """A rate that moves linearly from ``start`` to ``end`` across the phase."""

    start: float
    end: float


class MetaMaskAfter(_Model):
    """Switch the meta-string loss mask on after ``after`` tokens of the whole run."""

    after: int

    @field_validator("after", mode="before")
    @classmethod
    def _tok(cls, v):
        return parse_tokens(v)


class Schedule(_Model):
    global_batch: int | BatchRamp
    lr: LRSchedule
    rope_theta_full: float = 1e4
    rope_theta_swa: float = 1e4
    mtp_weight: float = 0.0
    meta_loss_mask: bool | MetaMaskAfter = False
    router_frozen: bool = False
    bias_update_rate: float | RateDecay = 0.0
    ep_loss_coef: float = 0.0
    # MTP heads trained in this phase (None: the model's default, MTP-1 only). Raising it
    # above 1 clones MTP-1 into the new heads once, as the report's final MTP phase does.
    mtp_active_depths: int | None = None

    @field_validator("mtp_active_depths")
    @classmethod
    def _depths(cls, v):
        if v is not None and v < 0:
            raise ValueError("mtp_active_depths: must be ≥ 0")
        return v

    @field_validator("global_batch")
    @classmethod
    def _batch(cls, v):
        if isinstance(v, int) and v <= 0:
            raise ValueError("global_batch: must be > 0 sequences")
        return v

    @field_validator("rope_theta_full", "rope_theta_swa")
    @classmethod
    def _theta(cls, v):
        if not v > 0:
            raise ValueError("RoPE θ must be > 0")
        return v


class Replay(_Model):
    """Draw ``tokens`` of this phase's budget from an earlier phase's (or stage's) mixture."""

    from_: str = Field(alias="from")
    tokens: int

    @field_validator("tokens", mode="before")
    @classmethod
    def _tok(cls, v):
        return parse_tokens(v)


class ClusterDownsample(_Model):
    """Down-sample embedding clusters holding more than ``max_share`` of a source entry's
    tokens: each document of such a cluster is kept with probability ``max_share / share``."""

    max_share: float = Field(gt=0, le=1)


class Phase(_Model):
    name: str
    tokens: int
    seq_len: int = Field(gt=0)
    mixture: dict[str, float]
    schedule: Schedule
    replay: Replay | None = None
    max_epochs: dict[str, float] = Field(default_factory=dict)
    cluster_downsample: ClusterDownsample | None = None
    notes: str | None = None

    @field_validator("tokens", mode="before")
    @classmethod
    def _tok(cls, v):
        return parse_tokens(v)

    @field_validator("mixture")
    @classmethod
    def _mixture(cls, v):
        if not v:
            raise ValueError("mixture: empty")
        bad = {k: w for k, w in v.items() if not (isinstance(w, (int, float)) and w >= 0 and math.isfinite(w))}
        if bad:
            raise ValueError(f"mixture: weights must be numbers >= 0, got {bad}")
        total = sum(_fraction(w) for w in v.values())
        if abs(total - 1) > Fraction(1, 10**6):
            raise ValueError(f"mixture: weights sum to {float(total):.6g}, not 1")
        return v

    @field_validator("max_epochs")
    @classmethod
    def _caps(cls, v):
        bad = {k: c for k, c in v.items() if not c > 0}
        if bad:
            raise ValueError(f"max_epochs: caps must be > 0, got {bad}")
        return v

    @model_validator(mode="after")
    def _replay_fits(self):
        if self.replay is not None and self.replay.tokens > self.tokens:
            raise ValueError(
                f"replay.tokens: {format_tokens(self.replay.tokens)} exceeds the phase budget "
                f"{format_tokens(self.tokens)}"
            )
        return self

    @property
    def weights(self) -> dict[str, Fraction]:
        """Mixture weights as exact fractions normalised to sum to exactly 1."""
        raw = {k: _fraction(w) for k, w in self.mixture.items()}
        total = sum(raw.values())
        return {k: w / total for k, w in raw.items()}

    @property
    def replay_tokens(self) -> int:
        return self.replay.tokens if self.replay else 0


class Stage(_Model):
    name: str
    phases: list[Phase]
    tokens: int | None = Field(default=None, description="optional check: the phases' sum")
    notes: str | None = None

    @field_validator("tokens", mode="before")
    @classmethod
    def _tok(cls, v):
        return None if v is None else parse_tokens(v)

    @model_validator(mode="after")
    def _sum(self):
        if not self.phases:
            raise ValueError("phases: a stage needs at least one phase")
        if self.tokens is not None:
            s = sum(p.tokens for p in self.phases)
            if s != self.tokens:
                raise ValueError(
                    f"tokens: stage budget {format_tokens(self.tokens)} != sum of its phases "
                    f"{format_tokens(s)}"
                )
        return self


class TokenizerInfo(_Model):
    model_config = ConfigDict(extra="allow", frozen=True)
    vocab_size: int | None = None


class Curriculum(_Model):
    name: str
    description: str | None = None
    tokenizer: TokenizerInfo | None = None
    attention_block: int = Field(default=128, gt=0, description="seq_len must be a multiple of it")
    sources: dict[str, SourceSpec]
    max_epochs: dict[str, float] = Field(
        default_factory=dict, description="whole-run caps per underlying source (plan-wide)"
    )
    default_max_epochs: float = Field(default=1.0, gt=0)
    stages: list[Stage]

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, v):
        # ``code: {}`` or ``code: null`` is shorthand for ``code: {source: code}``.
        if not isinstance(v, dict):
            raise ValueError("sources: expected a mapping of entry name → {source, tiers, long_docs}")
        out = {}
        for name, spec in v.items():
            spec = dict(spec or {})
            spec.setdefault("source", name)
            out[name] = spec
        return out

    # ---- lookups -----------------------------------------------------------------------

    @property
    def phases(self) -> list[tuple[Stage, Phase]]:
        return [(s, p) for s in self.stages for p in s.phases]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise CurriculumError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def phase(self, name: str) -> Phase:
        for _, p in self.phases:
            if p.name == name:
                return p
        raise CurriculumError(f"no phase {name!r}; phases: {[p.name for _, p in self.phases]}")

    def phase_start_tokens(self, name: str) -> int:
        """Tokens of the whole run before phase ``name`` starts (for ``meta_loss_masked``)."""
        n = 0
        for _, p in self.phases:
            if p.name == name:
                return n
            n += p.tokens
        raise CurriculumError(f"no phase {name!r}")

    @property
    def total_tokens(self) -> int:
        return sum(p.tokens for _, p in self.phases)

    def epoch_cap(self, phase: Phase, entry: str) -> float:
        """Phase-level cap for an entry: the phase's ``max_epochs`` (by entry or by underlying
        source), else the curriculum's, else ``default_max_epochs``."""
        src = self.sources[entry].source
        for table in (phase.max_epochs, self.max_epochs):
            if entry in table:
                return table[entry]
            if src in table:
                return table[src]
        return self.default_max_epochs

    def run_cap(self, source: str) -> float:
        """Whole-run cap for an underlying source (plan-wide accounting)."""
        return self.max_epochs.get(source, self.default_max_epochs)

    # ---- cross-field checks --------------------------------------------------------------

    @model_validator(mode="after")
    def _cross(self):
        errors: list[str] = []
        stage_names = [s.name for s in self.stages]
        phase_names = [p.name for _, p in self.phases]
        for kind, names in (("stage", stage_names), ("phase", phase_names)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                errors.append(f"{kind} names must be unique: {dup}")
        clash = sorted(set(stage_names) & set(phase_names) - {None})
        if clash:
            errors.append(f"a stage and a phase share the name(s) {clash}; replay.from would be ambiguous")
        seen: set[str] = set()
        for stage, phase in self.phases:
            where = f"stage {stage.name!r} / phase {phase.name!r}"
            if phase.seq_len % self.attention_block:
                errors.append(
                    f"{where}: seq_len: {phase.seq_len} is not a multiple of attention_block "
                    f"{self.attention_block}"
                )
            unknown = sorted(set(phase.mixture) - set(self.sources))
            if unknown:
                errors.append(
                    f"{where}: mixture: unknown source(s) {unknown} (defined in 'sources': "
                    f"{sorted(self.sources)})"
                )
            unknown_caps = sorted(
                set(phase.max_epochs) - set(self.sources) - {s.source for s in self.sources.values()}
            )
            if unknown_caps:
                errors.append(f"{where}: max_epochs: unknown source(s) {unknown_caps}")
            if phase.replay is not None:
                ref = phase.replay.from_
                if ref not in seen and ref not in {s.name for s in self.stages if all(p.name in seen for p in s.phases)}:
                    errors.append(
                        f"{where}: replay.from: {ref!r} is not an earlier phase or a finished earlier stage"
                    )
            seen.add(phase.name)
        underlying = {s.source for s in self.sources.values()}
        bad_caps = sorted(set(self.max_epochs) - underlying)
        if bad_caps:
            errors.append(f"max_epochs: unknown source(s) {bad_caps}")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    # ---- mixtures ------------------------------------------------------------------------

    def effective_mixture(self, name: str) -> dict[str, Fraction]:
        """The mixture a phase (or a stage, budget-weighted over its phases) really draws,
        with its own replay folded in: exact fractions over source entries, summing to 1."""
        if any(s.name == name for s in self.stages):
            stage = self.stage(name)
            total = sum(p.tokens for p in stage.phases)
            out: dict[str, Fraction] = {}
            for p in stage.phases:
                for k, w in self.effective_mixture(p.name).items():
                    out[k] = out.get(k, Fraction(0)) + w * Fraction(p.tokens, total or 1)
            return out
        phase = self.phase(name)
        if phase.tokens == 0:
            return dict(phase.weights)
        main = Fraction(phase.tokens - phase.replay_tokens, phase.tokens)
        out = {k: w * main for k, w in phase.weights.items()}
        if phase.replay:
            for k, w in self.effective_mixture(phase.replay.from_).items():
                out[k] = out.get(k, Fraction(0)) + w * (1 - main)
        return out


# --------------------------------------------------------------------------------------------
# loading with readable errors
# --------------------------------------------------------------------------------------------


def _describe_loc(raw: dict, loc: tuple) -> str:
    """('stages', 1, 'phases', 0, 'mixture') → "stage 'mid' / phase 'mid1': mixture"."""
    parts: list[str] = []
    node: Any = raw
    fields: list[str] = []
    i = 0
    loc = list(loc)
    while i < len(loc):
        key = loc[i]
        if key in ("stages", "phases") and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            idx = loc[i + 1]
            item = None
            try:
                item = node[key][idx]
            except (KeyError, IndexError, TypeError):
                pass
            label = item.get("name") if isinstance(item, dict) else None
            kind = key[:-1]
            parts.append(f"{kind} {label!r}" if label else f"{kind} #{idx + 1}")
            node = item if isinstance(item, dict) else {}
            i += 2
            continue
        fields.append(str(key))
        try:
            node = node[key] if isinstance(node, (dict, list)) else {}
        except (KeyError, IndexError, TypeError):
            node = {}
        i += 1
    # pydantic adds union-member tags like 'int' / 'BatchRamp' / 'function-before[...]'
    fields = [f for f in fields if not _is_tag(f)]
    where = " / ".join(parts)
    field = ".".join(fields)
    return f"{where}: {field}" if where and field else (where or field or "curriculum")


def _is_tag(x) -> bool:
    """pydantic's union-member / validator tags inside an error location."""
    return isinstance(x, str) and (x[:1].isupper() or x in ("int", "float", "bool", "str") or "[" in x)


def validate_curriculum(raw: Any, origin: str = "<curriculum>") -> Curriculum:
    if not isinstance(raw, dict):
        raise CurriculumError(f"{origin}: expected a YAML mapping at the top level")
    # ``x-*`` top-level keys hold YAML anchors shared by phases (docker-compose convention).
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        return Curriculum.model_validate(raw)
    except ValidationError as exc:
        errs = exc.errors()
        # a union field reports one error per member; keep the informative ones
        by_loc: dict[tuple, list[dict]] = {}
        for err in errs:
            by_loc.setdefault(tuple(x for x in err["loc"] if not _is_tag(x)), []).append(err)
        lines = []
        for loc, group in by_loc.items():
            informative = [e for e in group if e["type"] == "value_error"] or group
            for err in informative:
                msg = err["msg"].removeprefix("Value error, ")
                if not loc:  # cross-field checks already name stage/phase/field
                    lines.extend(msg.split("\n"))
                    continue
                where = _describe_loc(raw, loc)
                last = str(loc[-1])
                field_path = where.split(": ")[-1]
                for prefix in (f"{field_path}: ", f"{last}: "):
                    if msg.startswith(prefix):
                        msg = msg[len(prefix):]
                        break
                lines.append(f"{where}: {msg}")
        # de-duplicate union noise while keeping order
        uniq = list(dict.fromkeys(lines))
        raise CurriculumError(f"{origin}: invalid curriculum:\n  " + "\n  ".join(uniq)) from None


def bundled(name: str) -> Path:
    """Path of a curriculum shipped with the package: ``bundled("full")`` → ``…/full.yaml``."""
    return Path(__file__).parent / (name if name.endswith(".yaml") else f"{name}.yaml")


def load_curriculum(path: str | Path) -> Curriculum:
    """Read and validate a curriculum YAML file. Bad YAML → error with file:line:column; bad
    content → error naming stage/phase/field. Bundled names (``full``, ``tiny``,
    ``full.yaml``) resolve to the files shipped in this package."""
    p = Path(path)
    if not p.exists():
        shipped = bundled(p.name)
        if shipped.exists() and len(p.parts) == 1:
            p = shipped
        else:
            raise CurriculumError(f"curriculum file not found: {path}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CurriculumError(f"{p}: not a YAML text file (invalid UTF-8 at byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise CurriculumError(f"{where}: bad YAML: {problem}") from None
    return validate_curriculum(raw, str(p))


__all__ = [
    "BatchRamp",
    "BatchStep",
    "ClusterDownsample",
    "Curriculum",
    "CurriculumError",
    "LRSchedule",
    "LongDocs",
    "MetaMaskAfter",
    "Phase",
    "RateDecay",
    "Replay",
    "Schedule",
    "SourceSpec",
    "Stage",
    "format_tokens",
    "bundled",
    "load_curriculum",
    "parse_tokens",
    "validate_curriculum",
]
