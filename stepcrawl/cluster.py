"""Topic clusters: mini-batch k-means over hashed n-gram vectors (an optional annotation).

Vectors: scikit-learn's ``HashingVectorizer`` (word uni+bigrams, no vocabulary to fit, so a
worker can vectorise any shard alone) with sub-linear term frequency, projected to ``dim``
dimensions by a seeded ``SparseRandomProjection`` (so centroids are small dense arrays, not
k × 2^18) and L2-normalised (TF-IDF-free; cosine geometry). ``MiniBatchKMeans.partial_fit``
learns the centroids from streamed batches, so the corpus never has to fit in memory.
``ClusterModel.assign`` is pure (centroids + config) and is what Beam calls per bundle.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from stepcrawl.document import Document
from stepcrawl.faults import kill_point
from stepcrawl.io import ShardWriter, atomic_path, read_documents
from stepcrawl.manifest import Accounting, StageManifest, clear_stage, config_hash, manifest_hash

log = logging.getLogger(__name__)
MODEL_NAME = "_cluster_model.npz"


@dataclass(frozen=True)
class ClusterConfig:
    k: int = 64
    seed: int = 0
    n_features: int = 1 << 18  # hashing space of the n-gram features
    ngram_max: int = 2  # word 1..ngram_max-grams
    dim: int = 256  # random-projection dimension the k-means runs in
    batch_size: int = 2048  # documents per partial_fit batch
    epochs: int = 1  # passes over the input while fitting
    max_chars: int = 20_000  # text prefix vectorised per document (long docs: topic is clear early)
    shard_docs: int = 10_000

    def __post_init__(self) -> None:
        for name in ("k", "n_features", "ngram_max", "dim", "batch_size", "epochs", "max_chars", "shard_docs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ClusterConfig.{name} must be ≥ 1, got {getattr(self, name)!r}")


class Vectorizer:
    """Text → L2-normalised ``float32[dim]`` vectors; deterministic given the config."""

    def __init__(self, cfg: ClusterConfig) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.random_projection import SparseRandomProjection

        self.cfg = cfg
        self.hasher = HashingVectorizer(
            n_features=cfg.n_features, ngram_range=(1, cfg.ngram_max), alternate_sign=False, norm=None, dtype=np.float32
        )
        self.projection = SparseRandomProjection(n_components=cfg.dim, random_state=cfg.seed, dense_output=True)
        # Fitting a random projection only reads the input width; the matrix comes from the seed.
        self.projection.fit(np.zeros((1, cfg.n_features), np.float32))

    def __call__(self, texts: list[str]) -> np.ndarray:
        x = self.hasher.transform([t[: self.cfg.max_chars] for t in texts])
        x.data = np.log1p(x.data)  # sub-linear tf: a repeated word should not own the vector
        v = np.asarray(self.projection.transform(x), np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.maximum(norms, 1e-12)


class ClusterModel:
    """Centroids + config. ``assign(texts)`` → nearest centroid (int) per text."""

    def __init__(self, cfg: ClusterConfig, centers: np.ndarray) -> None:
        self.cfg = cfg
        self.centers = np.asarray(centers, np.float32)
        self._vec: Vectorizer | None = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "centers": self.centers}  # the vectoriser is rebuilt from cfg

    def __setstate__(self, state: dict) -> None:
        self.cfg, self.centers, self._vec = state["cfg"], state["centers"], None

    @property
    def vectorizer(self) -> Vectorizer:
        if self._vec is None:
            self._vec = Vectorizer(self.cfg)
        return self._vec

    @property
    def k(self) -> int:
        return len(self.centers)

    def assign_vectors(self, v: np.ndarray) -> np.ndarray:
        # argmin ||v - c||² = argmin (||c||² - 2 v·c): what k-means' predict computes
        d = (self.centers**2).sum(1)[None, :] - 2.0 * (v @ self.centers.T)
        return np.argmin(d, axis=1).astype(np.int64)

    def assign(self, texts: list[str]) -> np.ndarray:
        return self.assign_vectors(self.vectorizer(list(texts))) if len(texts) else np.zeros(0, np.int64)

    @classmethod
    def fit(cls, batches: Iterable[list[str]], cfg: ClusterConfig, progress: bool = False) -> "ClusterModel":
        """Mini-batch k-means over streamed batches of texts (call again per epoch via a
        re-iterable). The first ``partial_fit`` waits until ≥ k texts are buffered; fewer than
        k texts in total lower k to the number of texts."""
        from sklearn.cluster import MiniBatchKMeans

        vec = Vectorizer(cfg)
        km: MiniBatchKMeans | None = None
        pending: list[np.ndarray] = []
        n_pending = 0
        for texts in batches:
            if not texts:
                continue
            pending.append(vec(texts))
            n_pending += len(texts)
            if km is None and n_pending < cfg.k:
                continue
            x = np.concatenate(pending)
            pending, n_pending = [], 0
            if km is None:
                km = MiniBatchKMeans(n_clusters=cfg.k, random_state=cfg.seed, batch_size=cfg.batch_size, n_init=3)
            km.partial_fit(x)
        if km is None:  # fewer than k texts overall
            if not pending:
                raise ValueError("cluster: no documents to fit")
            x = np.concatenate(pending)
            km = MiniBatchKMeans(n_clusters=len(x), random_state=cfg.seed, batch_size=cfg.batch_size, n_init=1)
            km.partial_fit(x)
            log.warning("cluster: only %d documents, k lowered from %d", len(x), cfg.k)
        elif pending:
            km.partial_fit(np.concatenate(pending))
        model = cls(cfg, km.cluster_centers_)
        model._vec = vec
        return model

    def to_bytes(self) -> bytes:
        """The saved model's ``.npz`` content (what ``save`` writes; Beam writes it through
        its FileSystems)."""
        buf = io.BytesIO()
        np.savez(buf, centers=self.centers, config=json.dumps(asdict(self.cfg)))
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ClusterModel":
        with np.load(path) as z:
            return cls(ClusterConfig(**json.loads(str(z["config"]))), z["centers"])


def _text_batches(open_docs, size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in open_docs():
        batch.append(doc.text)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_cluster(
    docs_or_path,
    out_dir: str | os.PathLike,
    cfg: ClusterConfig | None = None,
    progress: bool = True,
    force: bool = False,
) -> StageManifest:
    """Fit k-means on the input (streamed, ``cfg.epochs`` passes), then write every document
    with ``cluster`` set, the model (``_cluster_model.npz``) and a manifest with cluster sizes.
    An output with the same config and input manifest is reused unless ``force``."""
    cfg = cfg or ClusterConfig()
    out = Path(out_dir)
    started = time.time()
    errors: list[str] = []
    if isinstance(docs_or_path, (str, os.PathLike)):
        path = Path(docs_or_path)
        # malformed records (FILE:ROW: why) are skipped on every pass; counted once, from the last
        open_docs = lambda: read_documents(path, on_error=lambda e: errors.append(str(e)))  # noqa: E731
        input_hash = manifest_hash(path) if path.is_dir() else None
    else:
        docs = list(docs_or_path)
        open_docs = lambda: iter(docs)  # noqa: E731
        input_hash = None
    conf = asdict(cfg)
    chash = config_hash(conf)
    if not force and (out / MODEL_NAME).exists() and (old := StageManifest.reusable(out, chash, input_hash, "cluster")):
        log.info("cluster: %s is up to date; skipping", out)
        return old

    def all_batches() -> Iterator[list[str]]:
        bar = tqdm(desc="cluster: fitting", unit="doc", disable=not progress or None)
        for _ in range(cfg.epochs):
            for batch in _text_batches(open_docs, cfg.batch_size):
                bar.update(len(batch))
                yield batch
        bar.close()

    model = ClusterModel.fit(all_batches(), cfg)
    out.mkdir(parents=True, exist_ok=True)
    clear_stage(out)
    model.save(out / MODEL_NAME)
    kill_point("cluster.model-saved")  # kill matrix: model saved, documents not yet assigned
    acc = Accounting()
    sizes: Counter = Counter()
    errors.clear()  # the assigning pass below reports each malformed record once more
    with ShardWriter(out, "part", cfg.shard_docs) as writer:
        buf: list[Document] = []

        def flush() -> None:
            for doc, c in zip(buf, model.assign([d.text for d in buf]).tolist()):
                sizes[c] += 1
                acc.kept(doc.n_chars)
                writer.write(doc.replace(cluster=int(c)))
            buf.clear()

        for doc in tqdm(open_docs(), desc="cluster: assigning", unit="doc", disable=not progress or None):
            acc.seen(doc.n_chars)
            buf.append(doc)
            if len(buf) >= cfg.batch_size:
                flush()
        flush()
    for e in errors:
        log.error("cluster: %s", e)
        acc.seen(0)
        acc.dropped("malformed", 0)
    manifest = StageManifest.from_shards(
        "cluster", conf, chash, input_hash, acc, folder=out, files=writer.files, started=started,
        extra={"k": model.k, "cluster_sizes": {str(c): sizes.get(c, 0) for c in range(model.k)}, "model": MODEL_NAME,
               **({"n_malformed": len(errors), "errors": errors[:20]} if errors else {})},
    )
    manifest.write(out)
    return manifest
