"""``stepcrawl dedup``, ``stepcrawl decontam`` and ``stepcrawl cluster``."""

from __future__ import annotations

import argparse
import json
import sys

EPILOG_DEDUP = """\
examples:
  stepcrawl dedup data/filtered --out data/dedup
  stepcrawl dedup docs.parquet --out data/dedup --shingle 5 --bands 14 --rows 8 --keep-rejected
  stepcrawl dedup docs.jsonl --out data/dedup --no-url --hash sha1   # datasketch-identical signatures

Order: URL (normalised) → exact (normalised text) → MinHash-LSH near duplicates. Dropped
documents are counted under dup:url / dup:exact / dup:near (and written to OUT/rejected/ with
--keep-rejected); kept members of a duplicate cluster get dup_cluster = the survivor's id.
"""

EPILOG_DECONTAM = """\
examples:
  stepcrawl decontam data/dedup --eval-set evals/gsm8k.jsonl --eval-set mmlu=evals/mmlu_test.jsonl --out data/clean
  stepcrawl decontam data/dedup --eval-set evals/humaneval.jsonl --out data/flagged --mode flag --n 8

A document sharing ≥ --min-matches distinct word n-grams (normalised text) with an evaluation
set is dropped as decontam:<set> (--mode drop) or kept with quality.contam_ngrams and
meta.contam_sets (--mode flag).
"""

EPILOG_CLUSTER = """\
examples:
  stepcrawl cluster data/clean --out data/clustered --k 64
  stepcrawl cluster data/clean --out data/clustered --k 256 --epochs 2 --seed 1

Writes every document with its cluster id, the model (OUT/_cluster_model.npz) and the cluster
sizes in OUT/_manifest.json.
"""


def _print_manifest(m) -> int:
    """Print the summary; returns the exit code: 1 when malformed input was dropped (duplicate
    and contamination drops are ordinary work: 0)."""
    from stepcrawl.errors import dropped_input, exit_code

    acc = m.accounting
    print(f"{m.stage}: {acc.docs_in} in, {acc.docs_out} out, drops {dict(acc.drops)} ({m.wall_time_s:.1f}s)")
    if m.extra.get("cluster_sizes"):
        print(f"  cluster sizes: {json.dumps(m.extra['cluster_sizes'])}")
    d = m.to_dict()
    for e in (m.extra.get("errors") or [])[:20]:
        print(f"  dropped input: {e}", file=sys.stderr)
    if code := exit_code(d):
        print(f"{m.stage}: {dropped_input(d)} malformed input record(s) dropped", file=sys.stderr)
    return code


def run_dedup_cmd(args: argparse.Namespace) -> int:
    from stepcrawl.dedup import DedupConfig, run_dedup

    cfg = DedupConfig(
        url=not args.no_url,
        exact=not args.no_exact,
        near=not args.no_near,
        shingle_size=args.shingle,
        bands=args.bands,
        rows=args.rows,
        seed=args.seed,
        hash=args.hash,
        shard_docs=args.shard_docs,
    )
    return _print_manifest(run_dedup(args.input, args.out, cfg, keep_rejected=args.keep_rejected, force=args.force,
                                     workers=args.workers))


def run_decontam_cmd(args: argparse.Namespace) -> int:
    from stepcrawl.decontam import DEFAULT_FIELDS, DecontamStep, run_decontam

    fields = args.fields.split(",") if args.fields else DEFAULT_FIELDS
    step = DecontamStep(args.eval_set, n=args.n, mode=args.mode, min_matches=args.min_matches, fields=fields)
    return _print_manifest(run_decontam(args.input, args.out, step, keep_rejected=args.keep_rejected, force=args.force))


def run_cluster_cmd(args: argparse.Namespace) -> int:
    from stepcrawl.cluster import ClusterConfig, run_cluster

    cfg = ClusterConfig(k=args.k, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, dim=args.dim)
    return _print_manifest(run_cluster(args.input, args.out, cfg, force=args.force))


def register(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "dedup", help="URL, exact and MinHash-LSH near-duplicate removal", epilog=EPILOG_DEDUP, formatter_class=fmt
    )
    p.add_argument("input", help="Parquet/JSONL file or folder of documents")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-url", action="store_true", help="skip URL dedup")
    p.add_argument("--no-exact", action="store_true", help="skip exact (normalised text) dedup")
    p.add_argument("--no-near", action="store_true", help="skip MinHash-LSH near-dup removal")
    p.add_argument("--shingle", type=int, default=5, help="words per shingle (default 5)")
    p.add_argument("--bands", type=int, default=14, help="LSH bands (default 14)")
    p.add_argument("--rows", type=int, default=8, help="rows per band (default 8; permutations = bands×rows)")
    p.add_argument("--seed", type=int, default=1, help="permutation seed (datasketch's default 1)")
    p.add_argument("--hash", choices=("fast", "sha1"), default="fast", help="shingle hash (sha1 = datasketch-identical)")
    p.add_argument("--shard-docs", type=int, default=10_000, help="documents per output shard")
    p.add_argument("--keep-rejected", action="store_true", help="write dropped documents to OUT/rejected/")
    p.add_argument("--force", action="store_true", help="re-run even if OUT is up to date")
    p.add_argument("--workers", type=int, default=1, help="processes for the signing pass over a folder's files (same output)")
    p.set_defaults(func=run_dedup_cmd)

    p = subparsers.add_parser(
        "decontam", help="drop/flag documents overlapping evaluation sets (n-grams)", epilog=EPILOG_DECONTAM, formatter_class=fmt
    )
    p.add_argument("input", help="Parquet/JSONL file or folder of documents")
    p.add_argument("--eval-set", action="append", required=True, metavar="[NAME=]FILE.jsonl", help="evaluation set (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=13, help="n-gram size in normalised words (default 13)")
    p.add_argument("--mode", choices=("drop", "flag"), default="drop")
    p.add_argument("--min-matches", type=int, default=1, help="distinct matching n-grams that count as contaminated")
    p.add_argument("--fields", default=None, help="comma-separated record fields to index (default: text,question,problem,…)")
    p.add_argument("--keep-rejected", action="store_true", help="write dropped documents to OUT/rejected/")
    p.add_argument("--force", action="store_true", help="re-run even if OUT is up to date")
    p.set_defaults(func=run_decontam_cmd)

    p = subparsers.add_parser(
        "cluster", help="annotate documents with mini-batch k-means topic clusters", epilog=EPILOG_CLUSTER, formatter_class=fmt
    )
    p.add_argument("input", help="Parquet/JSONL file or folder of documents")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--k", type=int, default=64, help="number of clusters (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1, help="passes over the input while fitting")
    p.add_argument("--batch-size", type=int, default=2048, help="documents per mini-batch")
    p.add_argument("--dim", type=int, default=256, help="random-projection dimension")
    p.add_argument("--force", action="store_true", help="re-run even if OUT is up to date")
    p.set_defaults(func=run_cluster_cmd)
