"""Topic clusters in Beam: fit ``stepcrawl.cluster.ClusterModel`` on a sample, assign everywhere.

The local stage (``stepcrawl.cluster.run_cluster``) streams every document through
``MiniBatchKMeans.partial_fit`` in input order, then assigns. Mini-batch k-means is sequential,
so the Beam form splits the two halves:

1. **Sample** — every document → ``(rank, text prefix)`` with ``rank = sha1(id)``;
   ``Top.Smallest(n)`` (a tree of combiners, no worker sees more than ``n`` texts) keeps the
   ``n`` smallest ranks: a uniform, *deterministic* sample (the same ids whatever the runner,
   worker count or bundle split), unlike a reservoir sample.
2. **Fit** — one element: ``ClusterModel.fit`` on the sample in rank order, in
   ``ClusterConfig.batch_size`` batches — the same function, vectoriser and k-means settings
   as locally. The centroids (k × dim floats) are the only thing that travels back.
3. **Assign** — ``BatchElements`` → ``ClusterModel.assign`` per batch with the model as a
   side input (pure: centroids + config), ``cluster`` set on every document.

Differences from the local stage, by design: the centroids come from a sample (at most
``--cluster_sample`` documents) visited in rank order, not from every document in input order,
so cluster *numbers* differ from a local run's; which documents are kept does not (clustering
is an annotation, it drops nothing). The fitted model is written to
``OUTPUT/_work/cluster/_cluster_model.npz`` in ``ClusterModel.save``'s format, so
``ClusterModel.load`` can assign new documents to the same clusters later.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import io as bio
from beam_pipelines.transforms import NAMESPACE, batch_elements
from stepcrawl.document import Document

DEFAULT_SAMPLE = 20_000  # documents the k-means is fitted on (× max_chars text each, in one combine)


def sample_rank(doc_id: str) -> str:
    """The sampling order of a document: a hash of its id (uniform, runner-independent)."""
    return hashlib.sha1(doc_id.encode("utf-8")).hexdigest()


def fit_on_sample(sample: list[tuple[str, str]], cfg) -> Any:
    """``ClusterModel.fit`` on ``[(rank, text)]`` visited in rank order, ``cfg.batch_size`` at a time."""
    from stepcrawl.cluster import ClusterModel

    texts = [t for _, t in sorted(sample)]
    if not texts:
        raise ValueError("cluster: no documents to fit (every document was dropped before clustering)")
    batches = [texts[i : i + cfg.batch_size] for i in range(0, len(texts), cfg.batch_size)]
    return ClusterModel.fit(_epochs(batches, cfg.epochs), cfg)


def _epochs(batches: list[list[str]], epochs: int) -> Iterator[list[str]]:
    """``ClusterConfig.epochs`` passes over the sample, as the local fit makes over the input."""
    for _ in range(epochs):
        yield from batches


class AssignClusters(beam.DoFn):
    """A batch of Documents → the same documents with ``cluster`` set (model: side input)."""

    def setup(self) -> None:
        self.sizes: dict[int, Any] = {}

    def process(self, batch: list[Document], model) -> Iterator[Document]:
        labels = model.assign([d.text for d in batch]).tolist()
        for doc, c in zip(batch, labels):
            c = int(c)
            if c not in self.sizes:
                self.sizes[c] = Metrics.counter(f"{NAMESPACE}.cluster", f"size:{c:04d}")
            self.sizes[c].inc()
            yield doc.replace(cluster=c)


class _SaveModel(beam.DoFn):
    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, model) -> Iterator[Any]:
        bio.write_bytes(self.path, model.to_bytes())
        yield model  # passed on, so saving is upstream of assignment on every runner


class Cluster(beam.PTransform):
    """Documents → documents with ``cluster`` set (see the module docstring)."""

    def __init__(self, cfg=None, sample_size: int = DEFAULT_SAMPLE, model_path: str | None = None) -> None:
        super().__init__()
        from stepcrawl.cluster import ClusterConfig

        if sample_size < 1:
            raise ValueError("cluster sample size must be ≥ 1")
        self.cfg = cfg or ClusterConfig()
        self.sample_size, self.model_path = sample_size, model_path

    def expand(self, docs):
        cfg = self.cfg
        model = (
            docs
            | "SampleKey" >> beam.Map(lambda d: (sample_rank(d.id), d.text[: cfg.max_chars]))
            | "Sample" >> beam.combiners.Top.Smallest(self.sample_size)
            | "Fit" >> beam.Map(fit_on_sample, cfg)
        )
        if self.model_path:
            # in the main path, not a dangling branch: the DaskRunner computes only what the
            # pipeline's last transform depends on
            model = model | "SaveModel" >> beam.ParDo(_SaveModel(self.model_path))
        return batch_elements(docs, "Batch", cfg.batch_size) | "Assign" >> beam.ParDo(
            AssignClusters(), model=beam.pvalue.AsSingleton(model)
        )


def model_path_for(output: str) -> str:
    """Where the curate pipeline writes the fitted model (the local executor's layout)."""
    from stepcrawl.cluster import MODEL_NAME

    return FileSystems.join(output.rstrip("/"), "_work", "cluster", MODEL_NAME)
