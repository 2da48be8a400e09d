"""Subcommands ``curate``, ``extract``, ``annotate``, ``filter``, ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stepcrawl.document import TIERS

RAW = argparse.RawDescriptionHelpFormatter


def _langs(value: str | None) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-rejected", action="store_true", help="also write dropped documents with their drop_reason under OUT/rejected/")
    p.add_argument("--workers", type=int, default=1, help="input files processed in parallel (processes; default 1)")
    p.add_argument("--shard-docs", type=int, default=5000, help="documents per Parquet shard")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _extract_args(p: argparse.ArgumentParser) -> None:
    """The extraction flags ``curate`` and ``extract`` share (read back by :func:`_extract_cfg`)."""
    p.add_argument("--max-html-bytes", type=int, default=10_000_000,
                   help="larger HTML/text pages are dropped as extract:too-large, never cut (default 10 MB)")
    p.add_argument("--extract-timeout", type=float, default=20.0, metavar="SECONDS",
                   help="per-record extraction time limit; slower records are dropped as extract:timeout (0: none; default 20)")
    p.add_argument("--max-decoded-bytes", type=int, default=20_000_000,
                   help="cap on a body after undoing its Content-Encoding; larger ones (compression bombs) are "
                        "dropped as extract:decompressed-too-large, never inflated past it (default 20 MB)")
    p.add_argument("--warc-split-bytes", type=int, default=None, metavar="BYTES",
                   help="split per-record gzip WARCs larger than this into record-range work units, so --workers "
                        "scales within one file (default 16 MiB; 0: one unit per file)")
    p.add_argument("--extractor", default="trafilatura", choices=["trafilatura", "resiliparse"],
                   help="HTML main-content extractor (default trafilatura; resiliparse is ~20x faster, see docs/CURATION.md)")
    p.add_argument("--no-math", action="store_true", help="skip the math pre-pass that keeps formulas as $…$/$$…$$ LaTeX")


def _extract_cfg(args):
    from stepcrawl.extract import ExtractConfig

    return ExtractConfig(max_html_bytes=args.max_html_bytes, timeout_s=args.extract_timeout,
                         max_decoded_bytes=args.max_decoded_bytes,
                         extractor=getattr(args, "extractor", "trafilatura"), math=not getattr(args, "no_math", False))


def _split_bytes(args) -> int:
    from stepcrawl.curate import DEFAULT_SPLIT_BYTES

    value = getattr(args, "warc_split_bytes", None)
    return DEFAULT_SPLIT_BYTES if value is None else value


def _tier_cfg(args):
    from stepcrawl.quality import TierConfig

    return TierConfig.from_yaml(args.tiers) if getattr(args, "tiers", None) else TierConfig()


def _print_manifest(m, out) -> int:
    """Print the stage summary and its input errors; returns the exit code (stepcrawl.errors):
    0 done, 1 done but input was dropped as malformed/unreadable, 2 when nothing at all could
    be read (an empty, damaged or non-WARC/Parquet/JSONL input)."""
    from stepcrawl.errors import EXIT_REFUSED, dropped_input, exit_code

    d = m.to_dict()
    drops = ", ".join(f"{k}={v}" for k, v in sorted(d.get("drops", {}).items()))
    print(f"{d['stage']}: {d['docs_in']} in → {d['docs_out']} out ({drops or 'no drops'}) → {out}")
    errors = d.get("extra", {}).get("errors", [])
    for e in errors[:20]:
        print(f"  input error: {e.get('error') if isinstance(e, dict) else e}", file=sys.stderr)
    if len(errors) > 20:
        print(f"  … {len(errors) - 20} more input errors (see {out}/_manifest.json)", file=sys.stderr)
    if d["docs_in"] == 0 or (d["docs_out"] == 0 and d["docs_in"] == dropped_input(d)):
        print(f"stepcrawl {d['stage']}: error: no readable input records "
              f"(empty, damaged, or not WARC/Parquet/JSONL input){'' if errors else '; nothing was read'}", file=sys.stderr)
        return EXIT_REFUSED
    code = exit_code(d)
    if code:
        print(f"stepcrawl {d['stage']}: {dropped_input(d)} malformed/unreadable input item(s) dropped (exit code {code})", file=sys.stderr)
    return code


def run_curate(args) -> int:
    from stepcrawl.curate import CurateConfig, curate

    cfg = CurateConfig(
        langs=_langs(args.langs), lang_threshold=args.lang_threshold, quality_model=args.quality_model,
        tiers=_tier_cfg(args), min_tier=args.min_tier,
        extract=_extract_cfg(args),
        dedup=not args.no_dedup, decontam_sets=args.decontam or [], decontam_mode=args.decontam_mode,
        cluster=args.cluster, cluster_k=args.cluster_k, shard_docs=args.shard_docs, signals=getattr(args, "signals", "fast"),
        math_model=args.math_model, math_threshold=args.math_threshold,
    )
    m = curate(args.inputs, args.out, cfg, keep_rejected=args.keep_rejected, workers=args.workers, progress=not args.no_progress,
               split_bytes=_split_bytes(args))
    from stepcrawl.stats import format_stats, load_stats

    print(format_stats(load_stats(Path(args.out) / cfg.source)))
    return _print_manifest(m, Path(args.out) / cfg.source)


def run_extract(args) -> int:
    from dataclasses import asdict

    from stepcrawl.curate import run_single_stage

    ecfg = _extract_cfg(args)
    m = run_single_stage(args.inputs, args.out, "extract", [], {"extract": asdict(ecfg)}, extract=ecfg, keep_rejected=args.keep_rejected,
                         shard_docs=args.shard_docs, workers=args.workers, progress=not args.no_progress,
                         split_bytes=_split_bytes(args))
    return _print_manifest(m, args.out)


def run_annotate(args) -> int:
    from stepcrawl.curate import CurateConfig, annotate_steps, run_single_stage

    cfg = CurateConfig(langs=_langs(args.langs), lang_threshold=args.lang_threshold, quality_model=args.quality_model)
    part = cfg.filter_part()
    config = {k: part[k] for k in ("langs", "lang_threshold", "langid_model", "quality_model_sha256")}
    m = run_single_stage(args.inputs, args.out, "annotate", [("annotate", annotate_steps(cfg))], config, keep_rejected=args.keep_rejected,
                         shard_docs=args.shard_docs, workers=args.workers, progress=not args.no_progress)
    return _print_manifest(m, args.out)


def run_filter(args) -> int:
    from stepcrawl.curate import run_single_stage
    from stepcrawl.quality import TierStep
    from stepcrawl.quality.signals import FILTER_NAMES, QualitySignalsStep
    from stepcrawl.steps import DocumentStep

    class SignalsIfMissing(DocumentStep):
        """Compute datatrove signals only for documents that were not annotated before."""

        name = "signals_if_missing"

        def setup(self) -> None:
            self.inner = QualitySignalsStep()

        def process(self, doc):
            return doc if all(k in doc.quality for k in FILTER_NAMES) else self.inner(doc)

    tiers = _tier_cfg(args)
    m = run_single_stage(args.inputs, args.out, "filter", [("filter", [SignalsIfMissing(), TierStep(tiers, min_tier=args.min_tier)])],
                         {"tiers": tiers.to_dict(), "min_tier": args.min_tier}, keep_rejected=args.keep_rejected,
                         shard_docs=args.shard_docs, workers=args.workers, progress=not args.no_progress)
    return _print_manifest(m, args.out)


def run_stats(args) -> int:
    path = Path(args.path)
    if (path / "frontier.sqlite").exists() or path.name == "frontier.sqlite":
        from stepcrawl.crawl.report import crawl_summary

        print(crawl_summary(path.parent if path.name == "frontier.sqlite" else path))
        return 0
    from stepcrawl.stats import format_stats, load_stats, plot_stats

    s = load_stats(path)
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(format_stats(s))
    if args.plot:
        print(f"wrote {plot_stats(s, args.plot)}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "curate", help="WARC → extract → langid → quality tiers → dedup → decontam → Parquet corpus",
        formatter_class=RAW,
        description="Turn WARC files (ours or Common Crawl's) into a curated Parquet corpus OUT/web/.\n"
                    "Resumable: re-running with the same config skips finished input files.",
        epilog="examples:\n"
               "  stepcrawl train-quality --positive samples/quality/positive.jsonl --negative samples/quality/negative.jsonl --out data/quality.bin\n"
               "  stepcrawl curate data/crawl --out data/corpus --quality-model data/quality.bin\n"
               "  stepcrawl curate CC-MAIN-*.warc.gz --out data/cc --langs en,de --min-tier Medium-High --keep-rejected\n",
    )
    p.add_argument("inputs", nargs="+", help="WARC files or folders (searched recursively); or Parquet/JSONL of Documents")
    p.add_argument("--out", required=True, help="output folder (corpus in OUT/web, intermediates in OUT/_work)")
    p.add_argument("--langs", help="comma-separated allowed languages, e.g. en,zh (default: all)")
    p.add_argument("--lang-threshold", type=float, default=0.0, help="minimum langid score (default 0)")
    p.add_argument("--quality-model", help="fastText hq/lq model from `stepcrawl train-quality` (adds quality['fasttext_hq'])")
    p.add_argument("--tiers", help="YAML with TierConfig (weights, classifier_weight, thresholds)")
    p.add_argument("--min-tier", default="Medium", choices=TIERS, help="keep documents of this tier or better (default Medium)")
    p.add_argument("--math-model", help="fastText math/other model from `stepcrawl train-math` (without it: formula signals only)")
    p.add_argument("--math-threshold", type=float, default=0.5, help="math_score routing a page to OUT/math/ (default 0.5)")
    _extract_args(p)
    p.add_argument("--no-dedup", action="store_true", help="skip URL/exact/MinHash dedup")
    p.add_argument("--decontam", action="append", metavar="EVAL_SET", help="eval set file to decontaminate against (repeatable)")
    p.add_argument("--decontam-mode", default="drop", choices=["drop", "flag"])
    p.add_argument("--cluster", action="store_true", help="also run the topic clustering stage")
    p.add_argument("--cluster-k", type=int, default=64, help="number of k-means topics for --cluster (default 64)")
    p.add_argument("--signals", default="fast", choices=["fast", "datatrove"],
                   help="quality signals: fast (one tokenization, datatrove's thresholds) or datatrove (its own filters; exact, slower)")
    _common(p)
    p.set_defaults(func=run_curate)

    p = sub.add_parser("extract", help="WARC response records → Documents (trafilatura/pypdf/EbookLib)", formatter_class=RAW,
                       epilog="example:\n  stepcrawl extract data/crawl --out data/extracted --keep-rejected\n")
    p.add_argument("inputs", nargs="+", help="WARC files or folders")
    p.add_argument("--out", required=True)
    _extract_args(p)
    _common(p)
    p.set_defaults(func=run_extract)

    p = sub.add_parser("annotate", help="language ID + datatrove quality signals + fastText quality score on Documents", formatter_class=RAW,
                       epilog="example:\n  stepcrawl annotate data/extracted --out data/annotated --langs en,fr --quality-model data/quality.bin\n")
    p.add_argument("inputs", nargs="+", help="Parquet/JSONL Documents (files or folders; need `text`)")
    p.add_argument("--out", required=True)
    p.add_argument("--langs")
    p.add_argument("--lang-threshold", type=float, default=0.0)
    p.add_argument("--quality-model")
    _common(p)
    p.set_defaults(func=run_annotate)

    p = sub.add_parser("filter", help="assign quality tiers from stored signals and drop those below --min-tier", formatter_class=RAW,
                       epilog="example:\n  stepcrawl filter data/annotated --out data/filtered --min-tier Medium-High --tiers tiers.yaml\n")
    p.add_argument("inputs", nargs="+", help="Parquet/JSONL Documents (signals computed where missing)")
    p.add_argument("--out", required=True)
    p.add_argument("--tiers")
    p.add_argument("--min-tier", default="Medium", choices=TIERS)
    _common(p)
    p.set_defaults(func=run_filter)

    p = sub.add_parser("stats", help="funnel, drops, languages and tiers of a curated corpus (or a crawl's summary)", formatter_class=RAW,
                       epilog="examples:\n  stepcrawl stats data/corpus --plot funnel.png\n  stepcrawl stats data/crawl      # folder with frontier.sqlite\n")
    p.add_argument("path", help="curate output folder (or its web/), or a crawl folder with frontier.sqlite")
    p.add_argument("--plot", help="write the funnel as a PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run_stats)
