"""Lineage: from a training sequence back to the source records its tokens came from.

``MIX/<phase>/lineage.parquet`` holds one row per document piece (sequence, segment, source,
entry, shard, doc_index, doc_id, token range); the token shards' ``docs.parquet`` holds each
document's provenance (URL, WARC file and record offset, or repo/commit/path in ``meta``).
Both are read with column projection and row filters, so a lookup in a large mix touches only
the row groups it needs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from curricula.schema import CurriculumError
from tokenizer.indexed import IndexedDataset

PROVENANCE = ("url", "warc_file", "warc_offset", "meta", "kind", "lang", "tier", "cluster", "n_tokens")


def _phase_dir(mix: Path, phase: str | None) -> tuple[str, Path, dict]:
    """(phase name, its folder, the mix manifest)."""
    mf = mix / "manifest.json"
    if not mf.exists():
        raise CurriculumError(f"{mix}: not a mix (no manifest.json); run `stepcrawl build-mix`")
    manifest = json.loads(mf.read_text(encoding="utf-8"))
    names = [p["name"] for p in manifest["phases"]]
    if phase is None:
        phase = names[0]
    if phase not in names:
        raise CurriculumError(f"{mix}: no phase {phase!r}; phases: {names}")
    path = next(p["path"] for p in manifest["phases"] if p["name"] == phase)
    return phase, mix / path, manifest


def sequence_lineage(mix_dir: str | Path, sequence: int, phase: str | None = None,
                     tokens_dir: str | Path | None = None) -> dict:
    """The documents of training sequence ``sequence`` of ``phase`` (default: the mix's first
    phase) with their provenance. ``tokens_dir`` overrides the token folder recorded in the mix
    manifest (e.g. after moving the data)."""
    mix = Path(mix_dir)
    phase, folder, manifest = _phase_dir(mix, phase)
    tokens = Path(tokens_dir) if tokens_dir else Path(manifest["tokens_dir"])
    segs = IndexedDataset(folder / "segments")
    if not 0 <= sequence < len(segs):
        have = f"0..{len(segs) - 1}" if len(segs) else "the phase is empty"
        raise CurriculumError(f"{folder}: sequence {sequence} out of range ({have})")
    table = pq.read_table(folder / "lineage.parquet", filters=[("sequence", "=", int(sequence))])
    table = table.sort_by("segment")
    rows = []
    docs_cache: dict[tuple[str, str], object] = {}
    for r in table.to_pylist():
        key = (r["source"], r["shard"])
        f = tokens / r["source"] / f"{r['shard']}.docs.parquet"
        prov: dict = {}
        if f.exists():
            if key not in docs_cache:
                docs_cache[key] = pq.read_table(f, columns=[c for c in PROVENANCE if c in pq.read_schema(f).names])
            rec = docs_cache[key].slice(r["doc_index"], 1).to_pylist()[0]
            meta = rec.pop("meta", None)
            try:
                meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
            except ValueError:
                meta = {"raw": meta}
            prov = {**rec, "meta": meta}
        else:
            prov = {"missing": str(f)}
        rows.append({**r, "n_tokens_piece": r["token_end"] - r["token_start"], "record": prov})
    seg_lengths = [int(x) for x in segs[sequence]]
    return {
        "phase": phase,
        "sequence": int(sequence),
        "segments": seg_lengths,
        "padding": seg_lengths[-1] if len(seg_lengths) > len(rows) else 0,
        "documents": rows,
    }


def _where(rec: dict) -> str:
    meta = rec.get("meta") or {}
    parts = []
    if rec.get("url"):
        parts.append(rec["url"])
    if rec.get("warc_file"):
        parts.append(f"{rec['warc_file']}@{rec.get('warc_offset')}")
    code = [f"{k}={meta[k]}" for k in ("repo", "commit", "path", "number", "pr", "issue") if k in meta]
    if code:
        parts.append(" ".join(code))
    if rec.get("missing"):
        parts.append(f"(docs.parquet missing: {rec['missing']})")
    return "  ".join(parts) or "-"


def render(info: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"phase {info['phase']} / sequence {info['sequence']}: "
                    f"{len(info['documents'])} document piece(s), padding {info['padding']}",
              title_justify="left")
    for col in ("seg", "source", "doc_id", "tokens", "record"):
        t.add_column(col, overflow="fold")
    for d in info["documents"]:
        t.add_row(str(d["segment"]), d["source"] if d["entry"] == d["source"] else f"{d['source']} ({d['entry']})",
                  str(d["doc_id"]), f"{d['token_start']}–{d['token_end']}", _where(d["record"]))
    console.print(t)


__all__ = ["render", "sequence_lineage"]
