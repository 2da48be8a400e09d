"""Extract + quality filters: stepcrawl vs an equivalent datatrove pipeline, same WARC input.

One run, side by side, single process (documents/second/core):

- ``datatrove``: ``WarcReader → Trafilatura → GopherRepetition → GopherQuality → C4Quality →
  FineWebQuality`` run by its ``LocalPipelineExecutor`` (1 task). Its filters stop at the first
  failure, so a dropped page costs it less.
- ``stepcrawl extract+filters``: ``iter_warc_records → extract_record → QualitySignalsStep(values=False)``
  — the same extractor library and the same four datatrove ``filter()`` calls, but on *every*
  page (all verdicts are stored, none short-circuits); the filters tokenize with
  ``stepcrawl.quality.signals.ZonedSpaCyTokenizer`` (same output as datatrove's, cheaper).
- ``stepcrawl full annotate``: also fastText language ID, the stored signal values and tiers
  (what ``curate`` runs per document; no datatrove equivalent).

Input: Python docs + Debian Reference pages when those Debian packages are installed
(python3.11-doc, debian-reference-*), else the pages in tests/data repeated. Plus a MinHash
section from the dedup helper's ``bench/minhash.py`` when present.

Usage: ``.venv/bin/python bench/curate.py [--pages 240] [--md docs/benchmarks/curate.md]``
"""

from __future__ import annotations

import os
import sys

# run as a script, bench/ is sys.path[0] and bench/tokenize.py would shadow the stdlib module
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
if os.path.dirname(_HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(_HERE).parent
SOURCES = [Path("/usr/share/doc/python3.11/html/library"), Path("/usr/share/doc/python3.11/html/tutorial"), Path("/usr/share/debian-reference")]


def collect_pages(n: int) -> tuple[list[tuple[str, bytes]], str]:
    files = [f for d in SOURCES if d.is_dir() for f in sorted(d.glob("*.html"))]
    origin = "Python 3.11 docs + Debian Reference (Debian packages)"
    if not files:
        files = sorted((ROOT / "tests" / "fixtures" / "curate" / "html").glob("*.html"))
        origin = "tests/fixtures/curate/html (repeated)"
    pages, i = [], 0
    while len(pages) < n:
        f = files[i % len(files)]
        pages.append((f"http://bench.test/{i}/{f.name}", f.read_bytes()))
        i += 1
    return pages, origin


def write_warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for url, body in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http))


def cpu_seconds() -> float:
    """User+system CPU time of this process and its reaped children (datatrove's Trafilatura
    extractor runs in a forked sandbox process, so wall time alone would hide a second core)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float, int]:
    """(wall s, CPU s, result) of one call."""
    w, c = time.perf_counter(), cpu_seconds()
    n = fn(*args)
    return time.perf_counter() - w, cpu_seconds() - c, n


def run_datatrove(warc_dir: Path, logs: Path) -> int:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.readers import WarcReader

    kept = []

    def sink(data, rank=0, world_size=1):
        for doc in data:
            kept.append(doc.id)
            yield doc

    pipeline = [WarcReader(str(warc_dir), glob_pattern="*.warc.gz"), Trafilatura(favour_precision=True, timeout=10.0),
                GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter(), sink]
    LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=str(logs), skip_completed=False).run()
    return len(kept)


def run_stepcrawl(warc: Path, full: bool, quality_model: str | None) -> int:
    from stepcrawl.curate import CurateConfig, annotate_steps, filter_steps
    from stepcrawl.extract import ExtractConfig, extract_record, iter_warc_records
    from stepcrawl.quality import QualitySignalsStep
    from stepcrawl.quality.signals import FILTER_NAMES
    from stepcrawl.steps import Drop, apply_steps

    if full:
        cfg = CurateConfig(quality_model=quality_model, min_tier="Low")
        steps = annotate_steps(cfg) + filter_steps(cfg)
    else:
        steps = [QualitySignalsStep(values=False)]
    ecfg = ExtractConfig()
    n = 0
    for raw in iter_warc_records(warc):
        doc = extract_record(raw, ecfg)
        if isinstance(doc, Drop):
            continue
        result = apply_steps(doc, steps)
        n += not isinstance(result, Drop) and all(result.quality[f] == 1.0 for f in FILTER_NAMES)
    return n


def minhash_section(n_docs: int) -> str | None:
    path = ROOT / "bench" / "minhash.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_minhash", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.table(mod.run(n_docs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=240)
    ap.add_argument("--minhash-docs", type=int, default=1000)
    ap.add_argument("--md", help="also write the tables to this Markdown file")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from loguru import logger  # datatrove logs every step's stats through loguru

    logger.remove()
    from stepcrawl.quality import train_quality

    pages, origin = collect_pages(args.pages)
    mb = sum(len(b) for _, b in pages) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "warc").mkdir()
        warc = tmp / "warc" / "bench.warc.gz"
        write_warc(warc, pages)
        model = str(tmp / "quality.bin")
        train_quality(ROOT / "samples/quality/positive.jsonl", ROOT / "samples/quality/negative.jsonl", model)
        # warm both sides (imports, spaCy blank pipeline, model loads) on a few pages
        warm = tmp / "warm"
        warm.mkdir()
        write_warc(warm / "w.warc.gz", pages[:3])
        run_datatrove(warm, tmp / "logs-warm")
        run_stepcrawl(warm / "w.warc.gz", True, model)
        rows = [
            ("datatrove WarcReader→Trafilatura→Gopher/C4/FineWeb", *timed(run_datatrove, tmp / "warc", tmp / "logs")),
            ("stepcrawl extract + same 4 datatrove filters (all run)", *timed(run_stepcrawl, warc, False, None)),
            ("stepcrawl full annotate (+langid, signal values, fastText, tier)", *timed(run_stepcrawl, warc, True, model)),
        ]
    base = len(pages) / rows[0][2]
    lines = [f"Input: {len(pages)} HTML pages, {mb:.1f} MB ({origin}), one gzipped WARC; one process "
             "(datatrove's extractor sandbox adds a child process: CPU time counts both).", "",
             "| pipeline | pages | wall s | CPU s | docs/s/core (CPU) | MB/s/core | × datatrove (CPU) | × datatrove (wall) | docs passing all 4 filters |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base_wall = rows[0][1]
    for name, wall, cpu, k in rows:
        rate = len(pages) / cpu
        lines.append(f"| {name} | {len(pages)} | {wall:.2f} | {cpu:.2f} | {rate:.1f} | {mb / cpu:.2f} | {rate / base:.2f} | {base_wall / wall:.2f} | {k} |")
    table = "\n".join(lines)
    print(table)
    mh = minhash_section(args.minhash_docs)
    if mh:
        print("\nMinHash signing (bench/minhash.py):\n" + mh)
    if args.md:
        from stepcrawl.io import atomic_open

        with atomic_open(args.md, "w", encoding="utf-8") as fh:
            fh.write("# Curate benchmark: extract + quality filters vs datatrove\n\n"
                     f"Command: `.venv/bin/python bench/curate.py --pages {args.pages} --md {args.md}`  \n"
                     f"Machine: {platform.machine()}, Python {platform.python_version()}, shared 2-core box "
                     "(compare ratios within one run, not seconds across runs).\n\n"
                     f"{table}\n\n"
                     "Reading the table:\n\n"
                     "* **docs/s/core** divides by CPU seconds of the process *and its children*: datatrove runs "
                     "trafilatura in a forked sandbox process (for its per-page timeout), so its wall time overlaps "
                     "two processes and its wall-clock rate is not a per-core rate; the wall column is given too.\n"
                     "* Same extractor library and the same four datatrove `filter()` calls with datatrove's default "
                     "thresholds on both sides; “docs passing all 4 filters” is the cross-check that both sides "
                     "extract and judge the same text (a difference of a page or two comes from datatrove's "
                     "`deduplicate=True` trafilatura option).\n"
                     "* Where the CPU goes: extraction costs the same on both sides (same trafilatura settings; "
                     "we skip htmldate's metadata pass and datatrove's sandbox IPC, datatrove skips nothing else). "
                     "stepcrawl runs **all four filters on every page** because it stores every verdict (and, in "
                     "the full row, every signal value) so that tiers can be re-thresholded later without "
                     "re-extracting, where datatrove stops at the first failing filter. We still spend less CPU "
                     "on filtering because the filters get our `ZonedSpaCyTokenizer` (stepcrawl/quality/signals.py) "
                     "as their datatrove `WordTokenizer`: same tokens and verdicts as datatrove's spaCy tokenizer, "
                     "but without a spaCy memory zone per call (datatrove's C4 filter tokenizes every line "
                     "separately, and each zone rebuilds the lexemes of common words and drops spaCy's "
                     "tokenizer cache); memory stays bounded by a permanent-vocabulary budget and renewed zones.\n"
                     "* Both sides are warmed on the same three pages first; our tokenizer keeps the "
                     "vocabulary it built there (that is the point of it), datatrove's per-call zones keep "
                     "nothing. The full row runs after the extract+filters row in the same process, so its "
                     "vocabulary is warmer still.\n"
                     "* History: before the tokenizer change (same command, same input) the extract+filters row "
                     "measured 0.94× datatrove and the full row 0.91×.\n")
            if mh:
                fh.write(f"\n## MinHash signing (from bench/minhash.py)\n\n{mh}\n")


if __name__ == "__main__":
    main()
