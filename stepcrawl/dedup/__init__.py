"""Deduplication: URL, exact (normalised text) and MinHash-LSH near-duplicates.

Pure, per-document functions (``normalize_url``, ``normalize_text``, ``exact_key``,
``shingles``, ``MinHasher.signatures``, ``band_keys``, ``choose_survivor``) are what Beam runs;
``run_dedup`` is the single-process executor. See docs/DEDUP.md.
"""

from stepcrawl.dedup.config import DedupConfig
from stepcrawl.dedup.local import DROP_EXACT, DROP_NEAR, DROP_URL, DedupPlan, plan_dedup, run_dedup
from stepcrawl.dedup.minhash import MAX_HASH, MinHasher, band_ids, band_keys, estimate_jaccard, is_empty_signature, permutations
from stepcrawl.dedup.normalize import (
    GramSpans,
    exact_key,
    fast_hash32,
    fast_hash64,
    ngram_hashes,
    normalize_bytes,
    normalize_text,
    normalize_url,
    shingles,
    words,
)
from stepcrawl.dedup.survivor import choose_survivor, survivor_key
from stepcrawl.dedup.unionfind import UnionFind

__all__ = [
    "DROP_EXACT", "DROP_NEAR", "DROP_URL", "MAX_HASH", "DedupConfig", "DedupPlan", "GramSpans",
    "MinHasher", "UnionFind", "band_ids", "band_keys", "choose_survivor", "estimate_jaccard",
    "exact_key", "fast_hash32", "fast_hash64", "is_empty_signature", "ngram_hashes",
    "normalize_bytes", "normalize_text", "normalize_url", "permutations", "plan_dedup",
    "run_dedup", "shingles", "survivor_key", "words",
]
