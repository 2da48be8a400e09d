"""Configuration of the dedup stage (URL, exact and MinHash-LSH near-duplicate removal)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

HASHES = ("fast", "sha1")


@dataclass(frozen=True)
class DedupConfig:
    """What ``run_dedup`` does, and the MinHash/LSH parameters (FineWeb's defaults).

    ``bands × rows`` permutations are drawn exactly like ``datasketch.MinHash(num_perm, seed)``
    (its 2.x ``affine32`` scheme). ``hash`` picks how a shingle becomes a 32-bit value before
    the permutations:

    - ``"fast"`` (default): a 64-bit polynomial hash of the shingle's UTF-8 bytes computed for
      every shingle of a batch at once in numpy, finalised with MurmurHash3's fmix64 and cut to
      its upper 32 bits. Equal to ``datasketch.MinHash(hashfunc=stepcrawl.dedup.fast_hash32)``.
    - ``"sha1"``: ``datasketch.hashfunc.sha1_hash32`` per shingle, so signatures are
      bit-identical to a default ``datasketch.MinHash(num_perm, seed).update_batch(...)``; the
      permutation/min part is still batched, but SHA-1 stays one C call per shingle.
    """

    url: bool = True
    exact: bool = True
    near: bool = True
    shingle_size: int = 5  # words per shingle (FineWeb: 5)
    bands: int = 14  # LSH bands (FineWeb: 14 buckets …)
    rows: int = 8  # … of 8 hashes each → 112 permutations
    seed: int = 1  # datasketch's default seed
    hash: Literal["fast", "sha1"] = "fast"
    # A candidate pair (shared band) becomes a near-duplicate edge only when the two full
    # signatures agree on at least this share of rows (estimated Jaccard; stepcrawl.dedup.verify)
    verify_threshold: float = 0.7
    batch_docs: int = 512  # documents signed per numpy batch (~2 MB of text: cache-friendly)
    shard_docs: int = 10_000  # documents per output Parquet shard

    def __post_init__(self) -> None:
        for name in ("shingle_size", "bands", "rows", "batch_docs", "shard_docs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DedupConfig.{name} must be ≥ 1, got {getattr(self, name)!r}")
        if self.bands * self.rows > 65535:
            raise ValueError("DedupConfig: bands × rows must be ≤ 65535 (band index is 16-bit)")
        if not 0.0 < float(self.verify_threshold) <= 1.0:
            raise ValueError(f"DedupConfig.verify_threshold must be in (0, 1], got {self.verify_threshold!r}")
        if self.hash not in HASHES:
            raise ValueError(f"DedupConfig.hash must be one of {HASHES}, got {self.hash!r}")

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """Jaccard similarity where the LSH S-curve crosses ~1/2: (1/b)^(1/r)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def candidate_probability(self, jaccard: float) -> float:
        """P(two documents with this shingle Jaccard share ≥ 1 band) = 1 - (1 - J^r)^b."""
        return 1.0 - (1.0 - jaccard**self.rows) ** self.bands

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
