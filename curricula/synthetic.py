"""Synthetic token shards in the exact ``TOKENS/<source>/`` layout (for tests and bench/mix.py).

Writes what ``stepcrawl tokenize`` writes — ``part-NNNNN.{bin,idx}``, ``.mask.{bin,idx}``,
``.docs.parquet`` and ``manifest.json`` with ``by_tier`` — from random documents, so the mixer
can be exercised without a trained tokenizer and at any size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stepcrawl.document import TIERS
from stepcrawl.io import write_json
from stepcrawl.manifest import file_hash
# the tokenizer's own shard layout (docs.parquet schema, file set), ids and flag bits, so the
# fixture cannot drift from what ``stepcrawl tokenize`` writes
from tokenizer.encode import DOCS_SCHEMA, SHARD_FILES
from tokenizer.indexed import IndexedDatasetWriter, token_dtype
from tokenizer.masks import LOSS, META
from tokenizer.special import EOS_ID


def write_source(
    root: str | Path,
    source: str,
    n_docs: int,
    seed: int = 0,
    min_len: int = 8,
    max_len: int = 300,
    docs_per_shard: int = 1000,
    vocab_size: int = 4096,
    tiers: tuple[str | None, ...] = TIERS[:3],
    n_clusters: int = 10,
    meta_tokens: int = 3,
    lengths: list[int] | None = None,
    clusters: list[int | None] | None = None,
) -> dict:
    """Write one source of ``n_docs`` random documents; returns its manifest.

    Each document: ``meta_tokens`` tokens flagged META|LOSS, body flagged LOSS (every 5th body
    token without loss, like a masked prompt), ending with EOS. Token ids avoid 0..3 (specials).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / source
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    shards, by_tier, total = [], {}, 0
    if lengths is not None:
        n_docs = len(lengths)
    for s, lo in enumerate(range(0, n_docs, docs_per_shard)):
        name = f"part-{s:05d}"
        rows = []
        with IndexedDatasetWriter(folder / name, dtype=dtype) as tw, \
                IndexedDatasetWriter(folder / f"{name}.mask", dtype=np.uint8) as mw:
            for i in range(lo, min(lo + docs_per_shard, n_docs)):
                n = lengths[i] if lengths is not None else int(rng.integers(min_len, max_len + 1))
                n = max(n, 1)
                toks = rng.integers(4, vocab_size, size=n).astype(dtype)
                toks[-1] = EOS_ID
                mask = np.full(n, LOSS, dtype=np.uint8)
                mask[: min(meta_tokens, n - 1)] |= META
                mask[meta_tokens:-1:5] &= ~np.uint8(LOSS)
                tw.add(toks)
                mw.add(mask)
                tier = tiers[i % len(tiers)] if tiers else None
                by_tier[tier or "none"] = by_tier.get(tier or "none", 0) + n
                total += n
                rows.append({
                    "doc_id": f"{source}-{i}", "source": source, "kind": source, "lang": "en",
                    "tier": tier, "cluster": clusters[i] if clusters is not None else ((i % n_clusters) if n_clusters else None), "n_tokens": n,
                    "n_chars": 4 * n, "url": f"https://example.org/{source}/{i}",
                    "warc_file": f"crawl-{s}.warc.gz" if source == "web" else None,
                    "warc_offset": 1000 * i if source == "web" else None,
                    "meta": json.dumps({"repo": "org/repo", "commit": f"{i:040x}", "path": f"f{i}.py"})
                    if source != "web" else "{}",
                })
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCS_SCHEMA), folder / f"{name}.docs.parquet")
        files = [f"{name}{ext}" for ext in SHARD_FILES]
        shards.append({"name": name, "n_docs": len(rows), "n_tokens": sum(r["n_tokens"] for r in rows),
                       "sha256": {f: file_hash(folder / f) for f in files}})
    manifest = {
        "source": source,
        "tokenizer": {"path": "", "sha256": "synthetic", "vocab_size": vocab_size},
        "dtype": np.dtype(dtype).name,
        "n_docs": n_docs,
        "n_tokens": total,
        "by_tier": dict(sorted(by_tier.items())),
        "shards": shards,
    }
    write_json(folder / "manifest.json", manifest)
    return manifest


def write_corpus(root: str | Path, sources: dict[str, int], seed: int = 0, **kw) -> dict[str, dict]:
    """Several sources at once: ``{name: n_docs}``."""
    return {name: write_source(root, name, n, seed=seed + i, **kw) for i, (name, n) in enumerate(sources.items())}
