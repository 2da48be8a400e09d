"""``stepcrawl train-tokenizer`` and ``stepcrawl tokenize``."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console
from rich.table import Table


def _train(args: argparse.Namespace) -> int:
    from tokenizer.train import TokenizerConfig, train_tokenizer

    cfg = TokenizerConfig(
        vocab_size=args.vocab_size,
        sample_docs=args.sample_docs,
        character_coverage=args.character_coverage,
        seed=args.seed,
        threads=args.threads,
    )
    try:
        info = train_tokenizer(args.corpus, args.out, cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"stepcrawl train-tokenizer: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"tokenizer: {info['vocab_size']} pieces (embedding padded to {info['padded_vocab_size']}), "
        f"trained on {info['trained_on']['documents']} documents → {args.out}"
    )
    if info["trained_on"].get("malformed"):  # done, but malformed input was skipped: exit 1
        print(f"train-tokenizer: {info['trained_on']['malformed']} malformed record(s) skipped "
              f"(listed in {args.out}/tokenizer.json)", file=sys.stderr)
        return 1
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    from tokenizer.encode import tokenize_corpus

    try:
        manifests = tokenize_corpus(
            args.corpus,
            args.tokenizer,
            args.out,
            workers=args.workers,
            sources=args.sources.split(",") if args.sources else None,
            with_meta=not args.no_meta,
            split_tiers=args.split_tiers,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"stepcrawl tokenize: error: {exc}", file=sys.stderr)
        return 2
    table = Table(title=f"token shards in {args.out}")
    for col in ("source", "documents", "tokens", "shards", "tokens by tier"):
        table.add_column(col, justify="right" if col in ("documents", "tokens", "shards") else "left")
    for name, m in manifests.items():
        tiers = ", ".join(f"{k}:{v:,}" for k, v in m["by_tier"].items())
        table.add_row(name, f"{m['n_docs']:,}", f"{m['n_tokens']:,}", str(len(m["shards"])), tiers)
    Console().print(table)
    bad = [e for m in manifests.values() for e in m.get("errors", [])]
    n_bad = sum(sum(m.get("drops", {}).values()) for m in manifests.values())
    if n_bad:
        for e in bad:
            print(f"  dropped input: {e}", file=sys.stderr)
        print(f"tokenize: {n_bad} malformed record(s) dropped (manifest.json: drops, errors)", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a sentencepiece BPE tokenizer (byte fallback, our special tokens) on a corpus sample",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  stepcrawl train-tokenizer data/corpus --vocab-size 32000 --out data/tokenizer\n",
    )
    p.add_argument("corpus", nargs="+", help="corpus folder(s) of Parquet/JSONL documents")
    p.add_argument("--out", required=True, help="output folder (tokenizer.model + tokenizer.json)")
    p.add_argument("--vocab-size", type=int, default=32_000, help="pieces (the report's embedding has 128,896)")
    p.add_argument("--sample-docs", type=int, default=200_000, help="documents sampled (deterministic)")
    p.add_argument("--character-coverage", type=float, default=0.9995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "tokenize",
        help="encode a corpus into Megatron .bin/.idx token shards + loss/meta masks + manifest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  stepcrawl tokenize data/corpus --tokenizer data/tokenizer --out data/tokens --workers 2\n"
        "  stepcrawl tokenize data/corpus --tokenizer data/tokenizer --out data/tokens_by_tier --split-tiers\n"
        "    → data/tokens_by_tier/web.High/, web.Medium-High/, …, code/ (untiered sources keep their name)\n",
    )
    p.add_argument("corpus", help="corpus folder: one sub-folder per source (or a single source folder)")
    p.add_argument("--tokenizer", required=True, help="folder written by train-tokenizer")
    p.add_argument("--out", required=True, help="output folder: one sub-folder per source")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    p.add_argument("--sources", help="comma-separated subset of sources")
    p.add_argument("--no-meta", action="store_true", help="do not prepend the meta string")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--split-tiers",
        action="store_true",
        help="one token dataset per source and quality tier: OUT/<source>.<Tier>/ (e.g. web.High), "
        "each with its own manifest; untiered documents stay in OUT/<source>/",
    )
    p.set_defaults(func=_tokenize)
