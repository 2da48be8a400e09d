"""The planner: exact budget arithmetic for a curriculum, optionally against token manifests.

For every stage, phase and source entry: tokens allocated (largest-remainder rounding, so a
phase's allocations sum to exactly its budget), the share of them that is replay, implied
epochs, shortfall against the data (``TOKENS/<source>/manifest.json``, ``by_tier``) under the
epoch caps, and the optimizer steps the batch ramp implies. Nothing is materialised: at full
scale the planner reads only manifests (and, for ``long_docs`` entries, the shards' ``.idx``
sizes by mmap).

Plan-wide accounting: a source used by several phases (and by replay) is checked once against
its supply × its whole-run epoch cap, per quality tier, because every phase draws from the
same deduplicated documents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from curricula.schedule import batch_segments, lr_at
from curricula.schema import Curriculum, CurriculumError, Phase, SourceSpec, format_tokens

# --------------------------------------------------------------------------------------------
# exact allocation
# --------------------------------------------------------------------------------------------


def largest_remainder(total: int, weights: dict[str, Fraction]) -> dict[str, int]:
    """Split the integer ``total`` by exact ``weights`` (summing to 1) into integers that sum to
    exactly ``total``: floors first, then one token each to the largest remainders (ties:
    declaration order). Hamilton's method."""
    if total < 0:
        raise ValueError("total must be >= 0")
    s = sum(weights.values())
    if s <= 0:
        raise ValueError("weights sum to 0")
    quotas = {k: Fraction(total) * w / s for k, w in weights.items()}
    out = {k: int(q) for k, q in quotas.items()}  # floor (all >= 0)
    left = total - sum(out.values())
    order = sorted(quotas, key=lambda k: (-(quotas[k] - out[k]), list(weights).index(k)))
    for k in order[:left]:
        out[k] += 1
    return out


def scaled(tokens: int, scale: Fraction) -> int:
    """Budget × scale, floored (exact)."""
    return int(Fraction(tokens) * scale)


def parse_scale(value: str | float | Fraction | None) -> Fraction:
    if value is None:
        return Fraction(1)
    f = Fraction(str(value)) if not isinstance(value, Fraction) else value
    if f <= 0:
        raise CurriculumError(f"--scale must be > 0, got {value}")
    return f


# --------------------------------------------------------------------------------------------
# supply (token manifests)
# --------------------------------------------------------------------------------------------


@dataclass
class SourceManifest:
    source: str
    path: Path
    n_tokens: int
    n_docs: int
    by_tier: dict[str, int]
    dtype: str
    tokenizer: dict
    shards: list[dict]


def read_source_manifest(tokens_dir: str | Path, source: str) -> SourceManifest:
    path = Path(tokens_dir) / source
    mf = path / "manifest.json"
    if not mf.exists():
        raise CurriculumError(f"source {source!r}: no token manifest at {mf} (run `stepcrawl tokenize`)")
    try:
        m = json.loads(mf.read_text(encoding="utf-8"))
        return SourceManifest(
            source=source,
            path=path,
            n_tokens=int(m["n_tokens"]),
            n_docs=int(m["n_docs"]),
            by_tier={str(k): int(v) for k, v in (m.get("by_tier") or {}).items()},
            dtype=str(m.get("dtype", "int32")),
            tokenizer=dict(m.get("tokenizer") or {}),
            shards=list(m.get("shards") or []),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CurriculumError(f"{mf}: malformed token manifest: {exc}") from None


def _shard_doc_tiers(path: Path, shard: str) -> np.ndarray | None:
    import pyarrow.parquet as pq

    f = path / f"{shard}.docs.parquet"
    if not f.exists():
        return None
    col = pq.read_table(f, columns=["tier"]).column("tier").to_pylist()
    return np.asarray([t if t is not None else "none" for t in col], dtype=object)


@lru_cache(maxsize=256)
def _long_doc_supply(path: str, shards: tuple[str, ...], min_tokens: int) -> tuple[tuple[str, int], ...]:
    """Tokens in documents of >= min_tokens, by tier (reads .idx sizes by mmap and the tier
    column of docs.parquet; never the tokens)."""
    from tokenizer.indexed import IndexedDataset

    out: dict[str, int] = {}
    for shard in shards:
        ds = IndexedDataset(Path(path) / shard)
        sizes = np.asarray(ds.sizes, dtype=np.int64)
        keep = sizes >= min_tokens
        if not keep.any():
            continue
        tiers = _shard_doc_tiers(Path(path), shard)
        if tiers is None:
            out["none"] = out.get("none", 0) + int(sizes[keep].sum())
            continue
        for t in np.unique(tiers[keep]):
            sel = keep & (tiers == t)
            out[str(t)] = out.get(str(t), 0) + int(sizes[sel].sum())
    return tuple(sorted(out.items()))


def entry_supply(spec: SourceSpec, manifest: SourceManifest) -> dict[str, int]:
    """Tokens an entry can draw from, by tier (its tier filter and long-doc filter applied)."""
    if spec.long_docs is not None:
        by_tier = dict(
            _long_doc_supply(
                str(manifest.path), tuple(s["name"] for s in manifest.shards), spec.long_docs.min_tokens
            )
        )
    else:
        by_tier = dict(manifest.by_tier) or {"none": manifest.n_tokens}
    if spec.tiers is not None:
        by_tier = {t: n for t, n in by_tier.items() if t in spec.tiers}
    return {t: n for t, n in by_tier.items() if n > 0}


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------


@dataclass
class EntryPlan:
    entry: str
    source: str
    tiers: list[str] | None
    min_tokens: int | None
    weight: float  # the phase mixture weight (replay excluded)
    tokens: int  # main + replay
    main_tokens: int
    replay_tokens: int
    share: float  # tokens / phase tokens
    supply: int | None = None
    epochs: float | None = None
    max_epochs: float | None = None
    shortfall: int = 0  # tokens beyond supply × cap (0 = fine)


@dataclass
class PhasePlan:
    stage: str
    phase: str
    seq_len: int
    tokens: int
    start_tokens: int  # tokens of the run before this phase
    replay_from: str | None
    replay_tokens: int
    steps: int
    sequences: int
    batch_segments: list[dict]
    lr: dict
    rope_theta_full: float
    rope_theta_swa: float
    mtp_weight: float
    meta_loss_mask: Any
    router_frozen: bool
    bias_update_rate: Any
    ep_loss_coef: float
    entries: list[EntryPlan]


@dataclass
class SourcePlan:
    """Plan-wide use of one underlying source across every phase (and replay)."""

    source: str
    tokens: int
    supply: int | None
    max_epochs: float
    epochs: float | None
    by_tier: dict[str, dict[str, float]] = field(default_factory=dict)
    shortfall: int = 0


@dataclass
class Plan:
    curriculum: str
    scale: str
    total_tokens: int
    stages: list[dict]
    phases: list[PhasePlan]
    sources: list[SourcePlan]
    tokens_dir: str | None
    errors: list[str]

    def phase(self, name: str) -> PhasePlan:
        for p in self.phases:
            if p.phase == name:
                return p
        raise KeyError(name)

    def to_json(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Raise ``CurriculumError`` listing every budget problem (before any work)."""
        if self.errors:
            raise CurriculumError("curriculum does not fit the data:\n  " + "\n  ".join(self.errors))


def phase_allocation(cur: Curriculum, phase: Phase, scale: Fraction = Fraction(1)) -> dict[str, tuple[int, int]]:
    """Entry → (main tokens, replay tokens) for one phase, exactly summing to its (scaled)
    budget: the main part by the phase's mixture, the replay part by the replayed phase's
    (or stage's) effective mixture, each split with largest-remainder rounding."""
    total = scaled(phase.tokens, scale)
    replay = min(scaled(phase.replay_tokens, scale), total)
    main = largest_remainder(total - replay, phase.weights)
    rep = largest_remainder(replay, cur.effective_mixture(phase.replay.from_)) if phase.replay else {}
    keys = list(main) + [k for k in rep if k not in main]
    return {k: (main.get(k, 0), rep.get(k, 0)) for k in keys}


def plan(
    cur: Curriculum,
    tokens_dir: str | Path | None = None,
    scale: Fraction | str | float | None = None,
    sources: set[str] | None = None,
) -> Plan:
    """Allocate every phase and (with ``tokens_dir``) check it against the token manifests.

    ``sources`` limits which underlying sources are read and checked (build-mix passes the
    sources of the stage it builds); their use by *every* phase still counts."""
    scale = parse_scale(scale)
    manifests: dict[str, SourceManifest] = {}
    errors: list[str] = []
    if tokens_dir is not None:
        for src in sorted({s.source for s in cur.sources.values()}):
            used = any(
                cur.sources[e].source == src
                for _, p in cur.phases
                for e in (set(p.mixture) | set(cur.effective_mixture(p.name)))
            )
            if not used or (sources is not None and src not in sources):
                continue
            try:
                manifests[src] = read_source_manifest(tokens_dir, src)
            except CurriculumError as exc:
                errors.append(str(exc))

    # plan-wide draws per (source, tier), as exact fractions
    draws: dict[str, dict[str, Fraction]] = {}
    phases: list[PhasePlan] = []
    start = 0
    for stage, phase in cur.phases:
        where = f"stage {stage.name!r} / phase {phase.name!r}"
        alloc = phase_allocation(cur, phase, scale)
        total = scaled(phase.tokens, scale)
        entries: list[EntryPlan] = []
        for entry, (main, rep) in alloc.items():
            spec = cur.sources[entry]
            n = main + rep
            ep = EntryPlan(
                entry=entry,
                source=spec.source,
                tiers=spec.tiers,
                min_tokens=spec.long_docs.min_tokens if spec.long_docs else None,
                weight=float(phase.weights.get(entry, 0)),
                tokens=n,
                main_tokens=main,
                replay_tokens=rep,
                share=n / total if total else 0.0,
                max_epochs=cur.epoch_cap(phase, entry),
            )
            m = manifests.get(spec.source)
            if m is not None:
                sup = entry_supply(spec, m)
                supply = sum(sup.values())
                ep.supply = supply
                cap = Fraction(str(ep.max_epochs))
                if supply == 0:
                    if n > 0:
                        ep.shortfall = n
                        errors.append(
                            f"{where}: mixture.{entry}: no {spec.source!r} tokens match "
                            f"tiers={spec.tiers} long_docs={ep.min_tokens} (needs {format_tokens(n)})"
                        )
                else:
                    ep.epochs = float(Fraction(n, supply))
                    allowed = int(supply * cap)
                    if n > allowed:
                        ep.shortfall = n - allowed
                        errors.append(
                            f"{where}: mixture.{entry}: needs {format_tokens(n)} tokens = "
                            f"{ep.epochs:.3g} epochs of {format_tokens(supply)}, over max_epochs "
                            f"{ep.max_epochs} (short by {format_tokens(ep.shortfall)})"
                        )
                    per = draws.setdefault(spec.source, {})
                    for tier, t_sup in sup.items():
                        per[tier] = per.get(tier, Fraction(0)) + Fraction(n * t_sup, supply)
            entries.append(ep)
        segs = batch_segments(phase, total) if total else []
        steps = sum(s.n_steps for s in segs)
        sched = phase.schedule
        lr_desc = sched.lr.model_dump()
        if steps:
            lr_desc["first"] = lr_at(sched, 0, steps)
            lr_desc["last"] = lr_at(sched, steps - 1, steps)
        phases.append(
            PhasePlan(
                stage=stage.name,
                phase=phase.name,
                seq_len=phase.seq_len,
                tokens=total,
                start_tokens=start,
                replay_from=phase.replay.from_ if phase.replay else None,
                replay_tokens=sum(r for _, r in alloc.values()),
                steps=steps,
                sequences=-(-total // phase.seq_len),
                batch_segments=[asdict(s) for s in segs],
                lr=lr_desc,
                rope_theta_full=sched.rope_theta_full,
                rope_theta_swa=sched.rope_theta_swa,
                mtp_weight=sched.mtp_weight,
                meta_loss_mask=sched.meta_loss_mask if isinstance(sched.meta_loss_mask, bool) else sched.meta_loss_mask.model_dump(),
                router_frozen=sched.router_frozen,
                bias_update_rate=sched.bias_update_rate if isinstance(sched.bias_update_rate, float) else sched.bias_update_rate.model_dump(),
                ep_loss_coef=sched.ep_loss_coef,
                entries=entries,
            )
        )
        start += total

    sources: list[SourcePlan] = []
    for src in sorted({e.source for p in phases for e in p.entries}):
        tokens = sum(e.tokens for p in phases for e in p.entries if e.source == src)
        cap = cur.run_cap(src)
        sp = SourcePlan(source=src, tokens=tokens, supply=None, max_epochs=cap, epochs=None)
        m = manifests.get(src)
        if m is not None:
            sp.supply = m.n_tokens
            sp.epochs = tokens / m.n_tokens if m.n_tokens else None
            capf = Fraction(str(cap))
            for tier, drawn in sorted(draws.get(src, {}).items()):
                have = m.by_tier.get(tier, m.n_tokens if not m.by_tier else 0)
                allowed = have * capf
                sp.by_tier[tier] = {
                    "tokens": float(drawn),
                    "supply": have,
                    "epochs": float(drawn / have) if have else float("inf"),
                }
                if drawn > allowed:
                    short = int(drawn - allowed) + (1 if (drawn - allowed).denominator != 1 else 0)
                    sp.shortfall += short
                    errors.append(
                        f"max_epochs.{src}: across the whole curriculum tier {tier!r} is drawn "
                        f"{float(drawn / have) if have else float('inf'):.3g} times (cap {cap}; short by "
                        f"{format_tokens(short)})"
                    )
        sources.append(sp)

    stages = [
        {"name": s.name, "tokens": sum(p.tokens for p in phases if p.stage == s.name),
         "phases": [p.name for p in s.phases]}
        for s in cur.stages
    ]
    return Plan(
        curriculum=cur.name,
        scale=str(scale),
        total_tokens=sum(p.tokens for p in phases),
        stages=stages,
        phases=phases,
        sources=sources,
        tokens_dir=str(tokens_dir) if tokens_dir is not None else None,
        errors=errors,
    )


# --------------------------------------------------------------------------------------------
# presentation
# --------------------------------------------------------------------------------------------


def human(n: int | None) -> str:
    """Display form with 3 significant digits (tables); JSON keeps exact integers."""
    if n is None:
        return "?"
    for suffix, mult in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if abs(n) >= mult:
            return f"{n / mult:.3g}{suffix}"
    return str(n)


def render(p: Plan, console=None) -> None:
    """Rich tables: one per phase (entries), then the plan-wide source accounting."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    head = Table(title=f"curriculum {p.curriculum!r}: {human(p.total_tokens)} tokens"
                 + (f" (scale {p.scale})" if p.scale != "1" else ""), show_lines=False)
    for col in ("stage", "phase", "tokens", "seq_len", "steps", "batch", "lr", "θ full/swa",
                "mtp", "replay"):
        head.add_column(col, justify="right" if col not in ("stage", "phase", "lr") else "left")
    for ph in p.phases:
        batches = "→".join(str(s["batch"]) for s in ph.batch_segments) or "-"
        lr = ph.lr
        lr_s = f"{lr['shape']} {lr.get('first', 0):.3g}→{lr.get('last', 0):.3g}"
        head.add_row(ph.stage, ph.phase, human(ph.tokens), str(ph.seq_len), f"{ph.steps:,}",
                     batches, lr_s, f"{ph.rope_theta_full:g}/{ph.rope_theta_swa:g}", f"{ph.mtp_weight:g}",
                     f"{human(ph.replay_tokens)} ← {ph.replay_from}" if ph.replay_from else "-")
    console.print(head)
    for ph in p.phases:
        t = Table(title=f"{ph.stage} / {ph.phase}", title_justify="left")
        for col in ("entry", "source", "filter", "weight", "tokens", "replay", "share", "supply", "epochs", "cap", "shortfall"):
            t.add_column(col, justify="left" if col in ("entry", "source", "filter") else "right")
        for e in ph.entries:
            filt = ",".join(e.tiers) if e.tiers else ""
            if e.min_tokens:
                filt += (" " if filt else "") + f"≥{human(e.min_tokens)} tok"
            t.add_row(
                e.entry, e.source, filt or "-", f"{e.weight:.3f}", human(e.tokens),
                human(e.replay_tokens) if e.replay_tokens else "-", f"{e.share:.2%}",
                human(e.supply) if e.supply is not None else "?",
                f"{e.epochs:.3g}" if e.epochs is not None else "?", f"{e.max_epochs:g}",
                f"[red]{human(e.shortfall)}[/red]" if e.shortfall else "-",
            )
        console.print(t)
    t = Table(title="whole run, per source (plan-wide accounting)", title_justify="left")
    for col in ("source", "tokens", "supply", "epochs", "cap", "shortfall"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for s in p.sources:
        t.add_row(s.source, human(s.tokens), human(s.supply) if s.supply is not None else "?",
                  f"{s.epochs:.3g}" if s.epochs is not None else "?", f"{s.max_epochs:g}",
                  f"[red]{human(s.shortfall)}[/red]" if s.shortfall else "-")
    console.print(t)
    for e in p.errors:
        console.print(f"[red]error[/red]: {e}")


def plot(p: Plan, cur: Curriculum, path: str | Path) -> None:
    """Four panels over the run's tokens: tokens by source (stacked shares), seq_len, LR, batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curricula.schedule import tokens_at_step

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    sources = sorted({e.source for ph in p.phases for e in ph.entries})
    colors = {s: f"C{i % 10}" for i, s in enumerate(sources)}
    for ph in p.phases:  # one stacked bar per phase, as wide as its budget
        bottom = 0.0
        for s in sources:
            share = sum(e.tokens for e in ph.entries if e.source == s) / max(ph.tokens, 1)
            if share:
                axes[0].bar(ph.start_tokens, share, width=ph.tokens, bottom=bottom, align="edge",
                            color=colors[s], label=s if ph is p.phases[0] or s not in
                            {x.source for q in p.phases[: p.phases.index(ph)] for x in q.entries} else None)
                bottom += share
    axes[0].set_ylabel("share of tokens")
    axes[0].legend(loc="upper left", fontsize=7, ncol=4)
    for ph in p.phases:
        axes[1].plot([ph.start_tokens, ph.start_tokens + ph.tokens], [ph.seq_len] * 2, color="C0")
        axes[1].axvline(ph.start_tokens, color="grey", lw=0.5)
        phase = cur.phase(ph.phase)
        if ph.steps:
            idx = np.unique(np.linspace(0, ph.steps - 1, num=min(ph.steps, 300)).astype(int))
            scale_f = ph.tokens / phase.tokens if phase.tokens else 1.0
            tx = [ph.start_tokens + tokens_at_step(phase, int(i)) * scale_f for i in idx]
            axes[2].plot(tx, [lr_at(phase.schedule, int(i), ph.steps) for i in idx], color="C1")
        for seg in ph.batch_segments:
            x0 = ph.start_tokens + seg["tokens_start"]
            x1 = min(ph.start_tokens + ph.tokens, x0 + seg["n_steps"] * seg["batch"] * ph.seq_len)
            axes[3].plot([x0, x1], [seg["batch"]] * 2, color="C2")
    axes[1].set_ylabel("seq_len")
    axes[1].set_yscale("log", base=2)
    axes[2].set_ylabel("learning rate")
    axes[3].set_ylabel("global batch (seqs)")
    axes[3].set_xlabel("tokens into the run")
    fig.suptitle(f"curriculum {p.curriculum}")
    fig.tight_layout()
    from stepcrawl.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)


__all__ = [
    "EntryPlan",
    "PhasePlan",
    "Plan",
    "SourcePlan",
    "entry_supply",
    "largest_remainder",
    "phase_allocation",
    "plan",
    "plot",
    "read_source_manifest",
    "render",
]
