"""Opening a materialised Mix (what ``stepcrawl build-mix`` writes) and checking it.

Layout (the Mix contract, see docs/TRAINING.md)::

    MIX/manifest.json      {"curriculum", "stage", "seed", "tokenizer": {...},
                            "phases": [{"name", "path", "seq_len", "n_sequences", "tokens"}]}
    MIX/<phase>/tokens.bin/.idx     every sequence exactly seq_len tokens
    MIX/<phase>/mask.bin/.idx       uint8 flags per token (LOSS=1, META=2, PAD=4)
    MIX/<phase>/segments.bin/.idx   int32 document-piece lengths per sequence (sum = seq_len)

Everything is validated when the mix is opened (sizes, counts, segment sums on a sample), so a
broken mix fails with a message naming the file *before* any model is built or step is run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from stepcrawl.io import read_json
from tokenizer.indexed import IndexedDataset, IndexedDatasetFormatError


class MixError(ValueError):
    """A mix folder that is missing, malformed or inconsistent; the message names the file."""


@dataclass
class MixPhase:
    """One phase of a mix: three parallel memory-mapped indexed datasets."""

    name: str
    seq_len: int
    n_sequences: int
    path: Path
    budget_tokens: int | None   # the phase's (scaled) token budget from the manifest, if given
    tokens: IndexedDataset = field(repr=False)
    mask: IndexedDataset = field(repr=False)
    segments: IndexedDataset = field(repr=False)

    @property
    def n_tokens(self) -> int:
        return self.n_sequences * self.seq_len

    def max_token_id(self) -> int:
        """Largest token id in the phase (one vectorised pass over the mmap)."""
        data = self.tokens.data
        return int(data.max()) if data.size else -1


@dataclass
class Mix:
    """A materialised stage: its manifest and phases, in curriculum order."""

    root: Path
    curriculum: str | None
    stage: str
    seed: int
    tokenizer: dict
    phases: list[MixPhase]
    scale: Fraction | None = None    # build-mix --scale (materialised / curriculum tokens)

    def phase(self, name: str) -> MixPhase:
        for p in self.phases:
            if p.name == name:
                return p
        raise MixError(f"{self.root}: mix of stage {self.stage!r} has no phase {name!r} "
                       f"(has {[p.name for p in self.phases]})")

    @property
    def vocab_size(self) -> int | None:
        v = (self.tokenizer or {}).get("vocab_size")
        return int(v) if v is not None else None


def _open_indexed(prefix: Path, what: str) -> IndexedDataset:
    try:
        return IndexedDataset(prefix)
    except (FileNotFoundError, IndexedDatasetFormatError) as exc:
        raise MixError(f"mix phase {what}: {exc}") from None


def _check_phase(ph: MixPhase, sample: int = 256) -> None:
    where = str(ph.path)
    for name, ds in (("tokens", ph.tokens), ("mask", ph.mask), ("segments", ph.segments)):
        if len(ds) != ph.n_sequences:
            raise MixError(f"{where}/{name}.idx holds {len(ds)} sequences but the manifest says "
                           f"n_sequences={ph.n_sequences}")
    for name, ds in (("tokens", ph.tokens), ("mask", ph.mask)):
        bad = np.nonzero(ds.sizes != ph.seq_len)[0]
        if bad.size:
            i = int(bad[0])
            raise MixError(f"{where}/{name}.idx: sequence {i} has {int(ds.sizes[i])} elements, "
                           f"expected seq_len={ph.seq_len}")
    if ph.mask.dtype != np.uint8:
        raise MixError(f"{where}/mask.idx: dtype {ph.mask.dtype}, expected uint8")
    if not np.issubdtype(ph.segments.dtype, np.integer):
        raise MixError(f"{where}/segments.idx: dtype {ph.segments.dtype}, expected int32")
    # Segment sums: check every sequence when cheap, else a deterministic sample.
    n = ph.n_sequences
    idx = range(n) if n <= sample else np.linspace(0, n - 1, sample).astype(int)
    for i in idx:
        seg = ph.segments[int(i)]
        if seg.size == 0 or int(seg.sum()) != ph.seq_len or int(seg.min()) <= 0:
            raise MixError(f"{where}/segments.bin: sequence {int(i)} has segments {seg.tolist()[:16]} "
                           f"(must be positive and sum to seq_len={ph.seq_len})")


def open_mix(root: str | Path, validate: bool = True) -> Mix:
    """Open ``root/manifest.json`` and every phase it lists; raise :class:`MixError` if broken."""
    root = Path(root)
    man_path = root / "manifest.json"
    if not root.is_dir():
        raise MixError(f"mix folder not found: {root} (run `stepcrawl build-mix ... --out {root}`)")
    if not man_path.is_file():
        raise MixError(f"{man_path}: missing (is {root} a build-mix output folder?)")
    try:
        man = read_json(man_path)
    except json.JSONDecodeError as exc:
        raise MixError(f"{man_path}: not valid JSON: {exc}") from None
    for key in ("stage", "phases"):
        if key not in man:
            raise MixError(f"{man_path}: missing key {key!r} (not a build-mix manifest; "
                           f"a phase folder? pass the mix folder above it)")
    if not man["phases"]:
        raise MixError(f"{man_path}: no phases")
    phases = []
    for i, p in enumerate(man["phases"]):
        for key in ("name", "seq_len", "n_sequences"):
            if key not in p:
                raise MixError(f"{man_path}: phases[{i}] has no {key!r}")
        ppath = root / p.get("path", p["name"])
        what = f"{ppath}"
        ph = MixPhase(
            name=str(p["name"]),
            seq_len=int(p["seq_len"]),
            n_sequences=int(p["n_sequences"]),
            path=ppath,
            budget_tokens=int(p["tokens"]) if p.get("tokens") is not None else None,
            tokens=_open_indexed(ppath / "tokens", what),
            mask=_open_indexed(ppath / "mask", what),
            segments=_open_indexed(ppath / "segments", what),
        )
        if ph.n_sequences <= 0:
            raise MixError(f"{man_path}: phase {ph.name!r} has no sequences")
        if validate:
            _check_phase(ph)
        phases.append(ph)
    scale = None
    if man.get("scale") not in (None, ""):
        try:
            scale = Fraction(str(man["scale"]))
        except (ValueError, ZeroDivisionError):
            raise MixError(f"{man_path}: bad scale {man['scale']!r}") from None
        if scale <= 0:
            raise MixError(f"{man_path}: scale must be > 0, got {man['scale']!r}")
    return Mix(
        scale=scale,
        root=root,
        curriculum=man.get("curriculum"),
        stage=str(man["stage"]),
        seed=int(man.get("seed", 0)),
        tokenizer=dict(man.get("tokenizer") or {}),
        phases=phases,
    )


def discover_mixes(paths: list[str | Path]) -> list[Mix]:
    """Resolve ``--mix`` arguments: each is a mix folder (has ``manifest.json`` with phases) or
    a folder whose sub-folders are mixes (one per stage). Returns the mixes, each stage once."""
    out: list[Mix] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise MixError(f"mix folder not found: {p}")
        if (p / "manifest.json").is_file():
            out.append(open_mix(p))
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / "manifest.json").is_file()
                      and not d.name.startswith((".", "_")))
        if not subs:
            raise MixError(f"{p}: neither a mix (no manifest.json) nor a folder of mixes "
                           f"(no sub-folder has a manifest.json)")
        out.extend(open_mix(d) for d in subs)
    seen: dict[str, Path] = {}
    for m in out:
        if m.stage in seen:
            raise MixError(f"stage {m.stage!r} is materialised twice: {seen[m.stage]} and {m.root}")
        seen[m.stage] = m.root
    return out
