"""Subcommand ``export``: a curated corpus in datatrove / Hugging Face / JSONL layout."""

from __future__ import annotations

import argparse
import sys

from stepcrawl.errors import EXIT_DROPPED_INPUT, EXIT_OK


def run_export(args) -> int:
    from stepcrawl.export import export_corpus

    rep = export_corpus(args.corpus, args.out, args.format, shard_docs=args.shard_docs)
    total = sum(rep.docs.values())
    by = ", ".join(f"{k}={v}" for k, v in sorted(rep.docs.items()))
    print(f"export ({args.format}): {total} documents ({by or 'none'}) in {len(rep.files)} file(s) → {args.out}")
    for e in rep.errors[:20]:
        print(f"  dropped input: {e}", file=sys.stderr)
    if rep.errors:
        print(f"  {len(rep.errors)} malformed record(s) not exported", file=sys.stderr)
        return EXIT_DROPPED_INPUT
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="write a curated corpus for other tools: datatrove (text/id/metadata), hf, jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  stepcrawl export data/corpus --format datatrove --out data/export/datatrove\n"
               "  stepcrawl export data/corpus --format jsonl --out data/export/jsonl\n",
    )
    p.add_argument("corpus", help="corpus folder (one sub-folder per source) or one source folder/file")
    p.add_argument("--format", required=True, choices=("datatrove", "hf", "jsonl"))
    p.add_argument("--out", required=True, help="output folder: OUT/<source>/part-*.{parquet,jsonl.gz}")
    p.add_argument("--shard-docs", type=int, default=10_000, help="documents per output file")
    p.set_defaults(func=run_export)
