"""``python -m beam_pipelines.curate``: the curate stage as one Apache Beam pipeline.

    WARC files ─MatchFiles→Reshuffle→ReadWarcFile─► RawRecord
      ─ExtractDoFn (stepcrawl.extract.extract_record)─► Document
      ─StepsDoFn: annotate (LangIdStep, QualitySignalsStep[, QualityClassifierStep])
                  filter (TierStep)                          (stepcrawl.curate's step lists)
      ─Dedup: on small DocKeys records — URL / exact GroupByKey, MinHash-LSH bands →
              GroupByKey → edges → Large-Star/Small-Star connected components → survivors
              (survivor_key) — then one join of every document with its verdict
      ─StepsDoFn: decontam (DecontamStep)                     (when --decontam is given)
      ─Cluster: deterministic sample → ClusterModel.fit → ClusterModel.assign   (--cluster)
      ─► OUTPUT/<source>/part-*.parquet (Document ARROW_SCHEMA) + _manifest.json

The same step objects and pure functions as ``stepcrawl curate`` (``stepcrawl.curate``), built
from the same ``CurateConfig``; only data movement differs. The manifest has the local
executor's layout (stage ``curate``; in = out + Σ drops by reason; the per-step funnel; langs,
tiers, input errors) plus ``extra.runner``.

Example (DirectRunner on this machine; see docs/BEAM.md for Dataflow, Flink and Spark)::

    python -m beam_pipelines.curate --input data/demo/crawl --output data/beam-corpus \\
        --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import io as bio
from beam_pipelines.cluster import DEFAULT_SAMPLE, Cluster, model_path_for
from beam_pipelines.components import DEFAULT_MAX_ROUNDS
from beam_pipelines.dedup import Dedup, WriteNearReport
from beam_pipelines.options import make_options, run_pipeline
from beam_pipelines.transforms import DROPPED, AccountingFn, CountOut, ExtractDoFn, apply_step_groups, event, tagged_outputs
from stepcrawl.document import TIERS

log = logging.getLogger(__name__)

STEP_ORDER = ("extract", "annotate", "filter", "dedup", "decontam", "cluster")


# ------------------------------------------------------------------------------ steps
@dataclass(frozen=True)
class FilterFactory:
    """Builds ``stepcrawl.curate``'s annotate + filter step lists on the worker (picklable)."""

    cfg: Any  # stepcrawl.curate.CurateConfig

    def __call__(self):
        from stepcrawl.curate import annotate_steps, filter_steps

        cfg = localize_config(self.cfg)
        return [("annotate", annotate_steps(cfg)), ("filter", filter_steps(cfg))]


@dataclass(frozen=True)
class DecontamFactory:
    """Builds the ``DecontamStep`` with ``stepcrawl.curate.decontam_step``, as the local stage does,
    from the config with its eval sets localised on the worker."""

    cfg: Any

    def __call__(self):
        from stepcrawl.curate import decontam_step

        return [("decontam", [decontam_step(localize_config(self.cfg))])]


def localize_config(cfg):
    """The config with remote model / eval-set paths (gs://…) replaced by local copies.

    fastText and the decontam index read local files; on a cluster the files live in the
    bucket. Eval sets keep their name (``name=path``) so drop reasons do not change.
    """
    import dataclasses

    from stepcrawl.decontam import parse_eval_set

    changes: dict[str, Any] = {}
    for name in ("quality_model", "langid_model", "math_model"):
        path = getattr(cfg, name)
        if path and bio.is_remote(path):
            changes[name] = bio.localize(path)
    sets = []
    for spec in cfg.decontam_sets:
        name = parse_eval_set(spec)[0]  # the drop reason's set name, from the original spec
        head, sep, tail = spec.partition("=")
        path = tail if sep and "/" not in head else spec
        sets.append(f"{name}={bio.localize(path)}" if bio.is_remote(path) else spec)
    if sets != list(cfg.decontam_sets):
        changes["decontam_sets"] = sets
    return dataclasses.replace(cfg, **changes) if changes else cfg


# ------------------------------------------------------------------------------ manifest
def _doc_stats(doc) -> tuple[str, str]:
    return doc.lang or "und", doc.tier or "none"


class _StatsFn(beam.CombineFn):
    """Kept documents → (docs, chars, Counter of langs, Counter of tiers, per-source
    {source: [docs, chars, Counter of tiers, Counter of langs]})."""

    def create_accumulator(self):
        return [0, 0, Counter(), Counter(), {}]

    def add_input(self, acc, doc):
        acc[0] += 1
        acc[1] += doc.n_chars
        lang, tier = _doc_stats(doc)
        acc[2][lang] += 1
        acc[3][tier] += 1
        o = acc[4].setdefault(doc.source, [0, 0, Counter(), Counter()])
        o[0] += 1
        o[1] += doc.n_chars
        o[2][tier] += 1
        o[3][lang] += 1
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out[0] += a[0]
            out[1] += a[1]
            out[2].update(a[2])
            out[3].update(a[3])
            for src, o in a[4].items():
                t = out[4].setdefault(src, [0, 0, Counter(), Counter()])
                t[0] += o[0]
                t[1] += o[1]
                t[2].update(o[2])
                t[3].update(o[3])
        return out

    def extract_output(self, acc):
        return acc


def build_manifest(cfg, steps: dict, stats, files: list[str], errors: list[dict], n_units: int, stages: list[str],
                   wall_s: float, runner: str, sizes: dict[str, int]):
    """The curate ``StageManifest``, as ``stepcrawl.curate.publish`` builds it."""
    from stepcrawl.curate import damaged_bytes, funnel_entry
    from stepcrawl.manifest import Accounting, StageManifest, config_hash

    order = [s for s in STEP_ORDER if s in steps]
    funnel = [funnel_entry(name, steps[name]) for name in order]
    acc = Accounting()
    acc.docs_in = funnel[0]["docs_in"] if funnel else 0
    acc.chars_in = funnel[0]["chars_in"] if funnel else 0
    acc.docs_out, acc.chars_out = stats[0], stats[1]
    for f in funnel:
        for reason, n in (f.get("drops") or {}).items():
            acc.drops[reason] += n
            acc.drop_chars[reason] += (f.get("drop_chars") or {}).get(reason, 0)
    names = sorted(FileSystems.split(f)[1] for f in files)
    return StageManifest(
        stage="curate",
        config=cfg.to_dict(),
        config_hash=config_hash(cfg.to_dict()),
        input_manifest_hash=None,
        accounting=acc,
        bytes_out=sum(sizes.values()),
        wall_time_s=wall_s,
        shards=names,
        extra={
            "stages": stages,
            "units": n_units,
            "errors": errors,
            "damaged_bytes": damaged_bytes(errors),
            "wall_time_total_s": round(wall_s, 3),
            "funnel": funnel,
            "langs": dict(sorted(stats[2].items())),
            "tiers": {t: stats[3].get(t, 0) for t in TIERS if stats[3].get(t)},
            "runner": runner,
            "outputs": _outputs(cfg, stats),
        },
    )


def _source_of(doc, cfg) -> str:
    """The output folder of a kept document: its routed source (math, books) or cfg.source,
    as ``stepcrawl.curate.publish`` decides."""
    from stepcrawl.curate import ROUTED_SOURCES

    return doc.source if doc.source in ROUTED_SOURCES else cfg.source


def _outputs(cfg, stats) -> dict:
    """``extra.outputs`` as ``stepcrawl.curate.publish`` writes it (documents per source)."""
    per: dict[str, list] = {}
    for src, o in (stats[4] if len(stats) > 4 else {}).items():
        key = src if src in ("math", "books") else cfg.source
        t = per.setdefault(key, [0, 0, Counter(), Counter()])
        t[0] += o[0]
        t[1] += o[1]
        t[2].update(o[2])
        t[3].update(o[3])
    per.setdefault(cfg.source, [0, 0, Counter(), Counter()])
    return {s: {"docs": o[0], "chars": o[1], "tiers": {t: o[2][t] for t in TIERS if o[2].get(t)}, "langs": dict(sorted(o[3].items()))}
            for s, o in per.items()}


class WriteManifest(beam.DoFn):
    """Runs once, on the gathered ``(kind, value)`` parts, after the Parquet files are final."""

    def __init__(self, out_dir: str, cfg, stages: list[str], t0: float, runner: str) -> None:
        self.out_dir, self.cfg, self.stages, self.t0, self.runner = out_dir, cfg, stages, t0, runner

    def process(self, element):
        from stepcrawl.manifest import Accounting

        by_kind: dict[str, list] = {"steps": [], "stats": [], "files": [], "errors": [], "n_units": [], "rejected": [],
                                    "math_files": [], "books_files": [], "near_report": []}
        for kind, value in element[1]:
            by_kind[kind].append(value)
        # global combines without defaults: one value each, none for an empty input
        stats = by_kind["stats"][0] if by_kind["stats"] else _StatsFn().extract_output(_StatsFn().create_accumulator())
        n_units = by_kind["n_units"][0] if by_kind["n_units"] else 0
        files, errors = by_kind["files"], by_kind["errors"]
        routed_files = {"math": by_kind["math_files"], "books": by_kind["books_files"]}
        steps = dict(by_kind["steps"])
        # Every step that ran gets a funnel entry, even one that saw no document: extract and
        # annotate always run, then the stages in order ("filter" first).
        for name in ("extract", "annotate", *self.stages):
            steps.setdefault(name, Accounting())
        sizes = {}
        if files:
            for m in FileSystems.match(list(files)):
                for md in m.metadata_list:
                    sizes[md.path] = md.size_in_bytes
        # One entry per damaged file and offset: a runner may re-read a file (bundle retry).
        unique_errors = sorted({(e["file"], e["offset"]): e for e in errors}.values(), key=lambda e: (e["file"], e["offset"]))
        manifest = build_manifest(self.cfg, steps, stats, list(files), unique_errors,
                                  n_units, self.stages, time.time() - self.t0, self.runner, sizes)
        path = bio.write_manifest(self.out_dir, manifest)
        # the routed sources' own manifests (OUT/math/, OUT/books/), as the local executor writes
        from stepcrawl.manifest import Accounting as Acc, StageManifest

        root = self.out_dir.rstrip("/").rsplit("/", 1)[0]
        outputs = manifest.extra["outputs"]
        for src, fs in routed_files.items():
            if fs and not outputs.get(src, {}).get("docs"):
                FileSystems.delete(fs)  # WriteToParquet writes one empty shard for no input; the local executor none
        for src, o in outputs.items():
            if src == self.cfg.source or not o["docs"]:
                continue
            sacc = Acc()
            sacc.docs_in = sacc.docs_out = o["docs"]
            sacc.chars_in = sacc.chars_out = o["chars"]
            folder = FileSystems.join(root, src)
            own = sorted(FileSystems.split(f)[1] for f in routed_files.get(src, []))
            bio.write_manifest(folder, StageManifest(
                stage="curate", config=manifest.config, config_hash=manifest.config_hash, input_manifest_hash=None, accounting=sacc,
                bytes_out=0, wall_time_s=manifest.wall_time_s, shards=own, created_at=manifest.created_at,
                extra={"routed_from": self.cfg.source, "source": src, "langs": o["langs"], "tiers": o["tiers"]}))
        yield path


def near_report_path_for(output: str) -> str:
    """Where the local executor's dedup stage leaves its per-keeper near-duplicate report."""
    from stepcrawl.dedup.local import NEAR_REPORT

    return FileSystems.join(output.rstrip("/"), "_work", "dedup", NEAR_REPORT)


# ------------------------------------------------------------------------------ pipeline
def build_pipeline(p: beam.Pipeline, input_path: str, output: str, cfg, *, keep_rejected: bool = False,
                   max_rounds: int = DEFAULT_MAX_ROUNDS, num_shards: int = 0, runner: str = "DirectRunner",
                   cluster_sample: int = DEFAULT_SAMPLE):
    """Add the curate graph to ``p``; returns the PCollection holding the manifest's path."""
    from stepcrawl.dedup import DedupConfig

    t0 = time.time()
    out_dir = FileSystems.join(output.rstrip("/"), cfg.source)
    stages = (["filter"] + (["dedup"] if cfg.dedup else []) + (["decontam"] if cfg.decontam_sets else [])
              + (["cluster"] if cfg.cluster else []))

    warcs = p | "MatchWarc" >> bio.MatchWarc(input_path)  # matched once: read, and counted as units
    # the local executor's per-record payload cap, so both count the same bytes in
    read = warcs | "ReadWarc" >> bio.ReadWarcFiles(max_payload=max(cfg.extract.max_bytes, cfg.extract.max_html_bytes) + 1)
    # Global combines without defaults: a default is injected through a side input, which on
    # the DaskRunner is a nested computation of everything above it; WriteManifest supplies
    # the empty values instead.
    n_units = warcs | "CountFiles" >> beam.CombineGlobally(beam.combiners.CountCombineFn()).without_defaults()
    ext = tagged_outputs(read.records, "Extract", ExtractDoFn(cfg.extract), DROPPED, "events", main="docs")
    dropped = [ext[DROPPED]]
    events = [ext.events]

    docs, d, ev = apply_step_groups(ext.docs, "AnnotateFilter", factory=FilterFactory(cfg))
    dropped.append(d)
    events.append(ev)

    near_report = p | "NoNearReport" >> beam.Create([])
    if cfg.dedup:
        entering = docs
        docs, d, near_pairs = entering | "Dedup" >> Dedup(DedupConfig(), max_rounds, with_report=True)
        dropped.append(d)
        # the local executor's per-keeper near-duplicate report, in its place under _work/dedup/
        near_report = near_pairs | "NearReport" >> WriteNearReport(near_report_path_for(output))
        events.append(docs | "DedupKeptEvents" >> beam.Map(lambda x: event("dedup", None, x.n_chars, x.n_chars)))
        events.append(d | "DedupDropEvents" >> beam.Map(lambda rd: event("dedup", rd[0], rd[1].n_chars, 0)))

    if cfg.decontam_sets:
        docs, d, ev = apply_step_groups(docs, "Decontam", factory=DecontamFactory(cfg))
        dropped.append(d)
        events.append(ev)

    if cfg.cluster:  # an annotation: every document is kept, with its topic cluster set
        docs = docs | "Cluster" >> Cluster(sample_size=cluster_sample, model_path=model_path_for(output))
        events.append(docs | "ClusterEvents" >> beam.Map(lambda x: event("cluster", None, x.n_chars, x.n_chars)))

    docs = docs | "CountOut" >> beam.ParDo(CountOut())
    # the math and books sources go to OUTPUT/math/ and OUTPUT/books/ (stepcrawl.curate.publish);
    # one Filter per source rather than beam.Partition (a multi-output ParDo the DaskRunner
    # mixes up, see beam_pipelines.transforms.tagged_outputs)
    src_cfg = cfg
    web_docs = docs | "RouteWeb" >> beam.Filter(lambda d: _source_of(d, src_cfg) not in ("math", "books"))
    math_docs = docs | "RouteMath" >> beam.Filter(lambda d: _source_of(d, src_cfg) == "math")
    book_docs = docs | "RouteBooks" >> beam.Filter(lambda d: _source_of(d, src_cfg) == "books")
    root = output.rstrip("/")
    files = web_docs | "WriteParquet" >> bio.WriteDocuments(out_dir, num_shards=num_shards)
    math_files = math_docs | "WriteMathParquet" >> bio.WriteDocuments(FileSystems.join(root, "math"), num_shards=num_shards)
    books_files = book_docs | "WriteBooksParquet" >> bio.WriteDocuments(FileSystems.join(root, "books"), num_shards=num_shards)
    rejected_files = p | "NoRejected" >> beam.Create([])
    if keep_rejected:
        rejected_files = (
            tuple(dropped)
            | "AllDropped" >> beam.Flatten()
            | "WriteRejected" >> bio.WriteDocuments(FileSystems.join(output.rstrip("/"), "rejected"), rejected=True)
        )
    steps = tuple(events) | "AllEvents" >> beam.Flatten() | "StepAccounting" >> beam.CombinePerKey(AccountingFn())
    stats = docs | "OutputStats" >> beam.CombineGlobally(_StatsFn()).without_defaults()
    # The manifest's inputs are gathered into one element by a GroupByKey rather than read as
    # side inputs: on the DaskRunner every side input is a separate, nested computation of
    # the whole graph above it (five of them recomputed the pipeline five times).
    parts = (
        steps | "TagSteps" >> beam.Map(lambda kv: ("steps", kv)),
        stats | "TagStats" >> beam.Map(lambda x: ("stats", x)),
        files | "TagFiles" >> beam.Map(lambda f: ("files", f)),
        math_files | "TagMathFiles" >> beam.Map(lambda f: ("math_files", f)),
        books_files | "TagBooksFiles" >> beam.Map(lambda f: ("books_files", f)),
        read.damaged | "TagErrors" >> beam.Map(lambda e: ("errors", e)),
        n_units | "TagUnits" >> beam.Map(lambda n: ("n_units", n)),
        # not in the manifest, but gathered so that every runner writes them before it (the
        # DaskRunner computes only what the last transform depends on)
        rejected_files | "TagRejected" >> beam.Map(lambda f: ("rejected", f)),
        near_report | "TagNearReport" >> beam.Map(lambda f: ("near_report", f)),
    )
    return (
        parts
        | "ManifestParts" >> beam.Flatten()
        | "OneKey" >> beam.Map(lambda part: (None, part))
        | "Gather" >> beam.GroupByKey()
        | "WriteManifest" >> beam.ParDo(WriteManifest(out_dir, cfg, stages, t0, runner))
    )


def config_from_args(args: argparse.Namespace):
    """A ``CurateConfig`` from the same flags as ``stepcrawl curate``."""
    from stepcrawl.curate import CurateConfig
    from stepcrawl.extract import ExtractConfig
    from stepcrawl.quality import TierConfig

    tiers = TierConfig.from_yaml(bio.localize(args.tiers)) if args.tiers else TierConfig()
    langs = [x.strip() for x in args.langs.split(",") if x.strip()] if args.langs else None
    return CurateConfig(
        langs=langs,
        lang_threshold=args.lang_threshold,
        quality_model=args.quality_model,
        tiers=tiers,
        min_tier=args.min_tier,
        extract=ExtractConfig(max_html_bytes=args.max_html_bytes, extractor=args.extractor, math=not args.no_math),
        signals=args.signals,
        dedup=not args.no_dedup,
        decontam_sets=list(args.decontam or []),
        decontam_mode=args.decontam_mode,
        cluster=args.cluster,
        math_model=args.math_model,
        math_threshold=args.math_threshold,
    )


def _curate_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Curate's own flags (the same names as ``stepcrawl curate``, Beam's underscore style);
    everything else goes to Beam."""
    from stepcrawl.extract import ExtractConfig

    ap = argparse.ArgumentParser(
        prog="python -m beam_pipelines.curate",
        description="Curate WARC files into a Parquet corpus with Apache Beam (any runner).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="pipeline options (beam_pipelines/options.py):\n"
        "  --input PATH          WARC file, folder (recursive) or glob; local, gs://, s3://, hdfs:// (required)\n"
        "  --output PATH         output folder: OUTPUT/web/part-*.parquet + _manifest.json (required);\n"
        "                        math pages and PDF/ePub books go to OUTPUT/math/ and OUTPUT/books/\n"
        "  --cc_max_rounds N     Large-Star/Small-Star rounds for near-dup clusters (default 20; fails if not converged)\n"
        "  --keep_rejected       also write dropped documents to OUTPUT/rejected/ with drop_reason\n"
        "  --num_shards N        output Parquet files (default 0: the runner decides)\n"
        "Beam options (--runner, --temp_location, --num_workers, --setup_file, --extra_package,\n"
        "--direct_num_workers, --direct_running_mode, …) are passed through. Example:\n"
        "  python -m beam_pipelines.curate --input data/demo/crawl --output data/beam-corpus \\\n"
        "      --runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing\n",
    )
    ap.add_argument("--langs", help="comma-separated allowed languages (default: all)")
    ap.add_argument("--lang_threshold", "--lang-threshold", type=float, default=0.0)
    ap.add_argument("--quality_model", "--quality-model", help="fastText hq/lq model (local path or gs://…)")
    ap.add_argument("--math_model", "--math-model", help="fastText math/other model from `stepcrawl train-math` (local or gs://…)")
    ap.add_argument("--math_threshold", "--math-threshold", type=float, default=0.5, help="math_score routing a page to OUTPUT/math/")
    ap.add_argument("--tiers", help="TierConfig YAML")
    ap.add_argument("--min_tier", "--min-tier", default="Medium", choices=TIERS)
    ap.add_argument("--max_html_bytes", "--max-html-bytes", type=int, default=ExtractConfig.max_html_bytes)
    ap.add_argument("--extractor", default="trafilatura", choices=["trafilatura", "resiliparse"],
                    help="HTML main-content extractor (as stepcrawl curate --extractor)")
    ap.add_argument("--no_math", "--no-math", action="store_true", help="skip the math-preserving pre-pass")
    ap.add_argument("--signals", default="fast", choices=["fast", "datatrove"], help="quality signals mode (as stepcrawl curate --signals)")
    ap.add_argument("--no_dedup", "--no-dedup", action="store_true")
    ap.add_argument("--decontam", action="append", metavar="EVAL_SET", help="eval set (repeatable; name=path allowed)")
    ap.add_argument("--decontam_mode", "--decontam-mode", default="drop", choices=["drop", "flag"])
    ap.add_argument("--cluster", action="store_true", help="also set topic clusters (k-means fitted on a deterministic sample)")
    ap.add_argument("--cluster_sample", "--cluster-sample", type=int, default=DEFAULT_SAMPLE,
                    help=f"documents the k-means is fitted on (default {DEFAULT_SAMPLE})")
    return ap.parse_known_args(list(argv) if argv is not None else sys.argv[1:])


def run(argv: Sequence[str] | None = None, wait: bool = True):
    """Parse flags, build and run the pipeline; returns the ``PipelineResult``."""
    args, beam_argv = _curate_args(argv)
    opts, ours = make_options(beam_argv, "input", "output")
    cfg = config_from_args(args)
    runner = opts.get_all_options()["runner"]
    return run_pipeline(opts, lambda p: build_pipeline(
        p, ours.input, ours.output, cfg, keep_rejected=ours.keep_rejected, max_rounds=ours.cc_max_rounds,
        num_shards=ours.num_shards, runner=str(runner), cluster_sample=args.cluster_sample,
    ), wait=wait)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(argv)
    from beam_pipelines.transforms import NAMESPACE

    try:
        counters = result.metrics().query()["counters"]
        totals = {c.key.metric.name: c.committed for c in counters if c.key.metric.namespace == NAMESPACE}
        drops = ", ".join(f"{k[5:]}={v}" for k, v in sorted(totals.items()) if k.startswith("drop:"))
        print(f"curate (beam): {totals.get('docs_in', 0)} in → {totals.get('docs_out', 0)} out ({drops or 'no drops'})")
    except (NotImplementedError, KeyError, AttributeError):  # some runners do not report committed metrics
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
