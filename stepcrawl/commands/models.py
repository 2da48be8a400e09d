"""Subcommands ``train-quality`` (fastText hq/lq classifier), ``train-math`` (math/other) and ``train-langid``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

RAW = argparse.RawDescriptionHelpFormatter


def run_train_quality(args) -> int:
    from stepcrawl.quality import QualityTrainConfig, train_quality

    return _run_training("train-quality", train_quality, QualityTrainConfig, args, args.positive, args.negative)


def run_train_math(args) -> int:
    from stepcrawl.quality.math import MathTrainConfig, train_math

    return _run_training("train-math", train_math, MathTrainConfig, args, args.math, args.other)


def _run_training(prog: str, train, config_cls, args, first, second) -> int:
    """Train a two-class fastText model from the CLI's options (_add_training_options); print the
    report as JSON; exit 2 on refused input, 1 (done, input dropped: stepcrawl.errors) when
    malformed records were skipped, each listed on stderr as FILE:LINE."""
    from stepcrawl.errors import EXIT_DROPPED_INPUT, EXIT_OK

    cfg = config_cls(epoch=args.epoch, word_ngrams=args.word_ngrams, dim=args.dim, bucket=args.bucket, seed=args.seed)
    try:
        report = train(first, second, args.out, cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2))
    for err in report.errors:
        print(f"{prog}: skipped malformed record: {err}", file=sys.stderr)
    if report.n_malformed > len(report.errors):
        print(f"{prog}: … and {report.n_malformed - len(report.errors)} more", file=sys.stderr)
    return EXIT_DROPPED_INPUT if report.n_malformed else EXIT_OK


def run_train_langid(args) -> int:
    from stepcrawl.langid import train_langid

    print(f"wrote {train_langid(args.train, args.out, epoch=args.epoch)}")
    return 0


def _add_training_options(p, defaults) -> None:
    """The fastText options both classifiers take, defaulting to their config's values."""
    p.add_argument("--out", required=True, help="model path (.bin)")
    p.add_argument("--epoch", type=int, default=defaults.epoch)
    p.add_argument("--word-ngrams", type=int, default=defaults.word_ngrams)
    p.add_argument("--dim", type=int, default=defaults.dim)
    p.add_argument("--bucket", type=int, default=defaults.bucket, help="n-gram hash buckets (model size ≈ bucket × dim × 4 bytes)")
    p.add_argument("--seed", type=int, default=defaults.seed)


def register(sub) -> None:
    from stepcrawl.quality.classifier import QualityTrainConfig
    from stepcrawl.quality.math import MathTrainConfig

    p = sub.add_parser(
        "train-quality", help="train the DCLM-style fastText quality classifier (labels hq/lq, word bigrams)", formatter_class=RAW,
        epilog="example:\n  stepcrawl train-quality --positive samples/quality/positive.jsonl \\\n"
               "      --negative samples/quality/negative.jsonl --out data/quality.bin\n"
               "inputs: Parquet/JSONL Documents (need `text`) or .txt (one document per blank-line-separated block)\n",
    )
    p.add_argument("--positive", required=True, help="high-quality examples")
    p.add_argument("--negative", required=True, help="low-quality examples")
    _add_training_options(p, QualityTrainConfig())
    p.set_defaults(func=run_train_quality)

    p = sub.add_parser(
        "train-math", help="train the MegaMath/DCLM-style fastText math classifier (labels math/other) for curate --math-model",
        formatter_class=RAW,
        epilog="example:\n  stepcrawl train-math --math samples/math/math.jsonl --other samples/math/other.jsonl --out data/math.bin\n"
               "  stepcrawl curate data/crawl --out data/corpus --math-model data/math.bin   # → OUT/math/\n"
               "inputs: Parquet/JSONL Documents (need `text`) or .txt (one document per blank-line-separated block);\n"
               "training is deterministic (one thread, --seed)\n",
    )
    p.add_argument("--math", required=True, help="math pages (samples/math/math.jsonl: SciPy/Maxima docs)")
    p.add_argument("--other", required=True, help="non-math pages")
    _add_training_options(p, MathTrainConfig())
    p.set_defaults(func=run_train_math)

    p = sub.add_parser(
        "train-langid", help="train a fastText language-ID model (the default is the bundled lid.176.ftz)", formatter_class=RAW,
        epilog="example:\n  stepcrawl train-langid --train langid.txt --out data/langid.bin\n"
               "langid.txt: one `__label__<lang> <text>` line per example\n",
    )
    p.add_argument("--train", required=True, help="fastText-format training file")
    p.add_argument("--out", required=True)
    p.add_argument("--epoch", type=int, default=10)
    p.set_defaults(func=run_train_langid)
