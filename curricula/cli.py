"""``stepcrawl plan``, ``stepcrawl build-mix`` and ``stepcrawl lineage``.

Thin wrappers: parse arguments, call ``curricula.planner.plan`` / ``curricula.mixer.build_mix``
/ ``curricula.lineage.sequence_lineage``, print. A bad curriculum (schema, unknown source,
budget beyond the data under the epoch caps) exits with status 2 and a message naming the
stage, phase and field, before any work.
"""

from __future__ import annotations

import argparse
import json
import sys

from curricula.schema import CurriculumError


def _console():
    from rich.console import Console

    c = Console()
    if not c.is_terminal:  # pipes/CI: wide enough for the tables instead of 80 columns
        c = Console(width=160)
    return c


def _plan(args: argparse.Namespace) -> int:
    from curricula.planner import plan, plot, render
    from curricula.schema import load_curriculum

    try:
        cur = load_curriculum(args.curriculum)
        p = plan(cur, args.tokens, args.scale)
    except CurriculumError as exc:
        print(f"stepcrawl plan: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(p.to_json(), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        render(p, _console())
    if args.plot:
        plot(p, cur, args.plot)
        print(f"schedule plot → {args.plot}", file=sys.stderr)
    if p.errors:  # the curriculum does not fit the data: build-mix would refuse it (exit 2)
        if args.json:
            for e in p.errors:
                print(f"stepcrawl plan: error: {e}", file=sys.stderr)
        return 2
    return 0


def _build_mix(args: argparse.Namespace) -> int:
    from curricula.mixer import build_mix

    try:
        mix = build_mix(
            args.curriculum,
            args.stage,
            args.tokens,
            args.out,
            scale=args.scale,
            seed=args.seed,
            eval_sets=args.eval_set or [],
            phases=args.phase or None,
            overwrite=args.overwrite,
            ngram=args.ngram,
            progress=not args.quiet,
        )
    except (CurriculumError, FileNotFoundError) as exc:
        print(f"stepcrawl build-mix: error: {exc}", file=sys.stderr)
        return 2
    from rich.table import Table

    t = Table(title=f"mix {args.out}: curriculum {mix['curriculum']!r} stage {mix['stage']!r} seed {mix['seed']}")
    for col in ("phase", "seq_len", "sequences", "tokens"):
        t.add_column(col, justify="left" if col == "phase" else "right")
    for ph in mix["phases"]:
        t.add_row(ph["name"], str(ph["seq_len"]), f"{ph['n_sequences']:,}", f"{ph['tokens']:,}")
    _console().print(t)
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from curricula.lineage import render, sequence_lineage

    try:
        info = sequence_lineage(args.mix, args.sequence, args.phase, args.tokens)
    except (CurriculumError, FileNotFoundError) as exc:
        print(f"stepcrawl lineage: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        render(info, _console())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "plan",
        help="budget arithmetic of a curriculum: tokens, epochs, shortfalls, steps",
        description="Allocate every phase of a curriculum exactly (per source entry: tokens, replay, "
        "implied epochs, shortfall against token manifests under the epoch caps; per phase: steps "
        "implied by the batch ramp). Reads only manifests: works at full scale.",
        formatter_class=fmt,
        epilog="examples:\n"
        "  stepcrawl plan --curriculum curricula/full.yaml\n"
        "  stepcrawl plan --curriculum curricula/tiny.yaml --tokens data/demo/tokens --json\n"
        "  stepcrawl plan --curriculum full --plot schedule.png\n",
    )
    p.add_argument("--curriculum", required=True, help="YAML file (or a bundled name: full, tiny)")
    p.add_argument("--tokens", help="token shards folder (TOKENS/<source>/manifest.json) to check supply")
    p.add_argument("--scale", default=None, help="multiply every budget (e.g. 1e-9)")
    p.add_argument("--json", action="store_true", help="machine-readable plan on stdout")
    p.add_argument("--plot", metavar="PNG", help="write tokens-by-source / seq_len / LR / batch plot")
    p.set_defaults(func=_plan)

    b = sub.add_parser(
        "build-mix",
        help="materialise a stage as packed sequences (tokens/mask/segments + lineage)",
        description="Materialise every phase of a stage as packed fixed-length sequences in a "
        "deterministic seeded order whose realised mixture matches the curriculum. Streaming "
        "(mmap, memory independent of corpus size), atomic and resumable per phase.",
        formatter_class=fmt,
        epilog="examples:\n"
        "  stepcrawl build-mix --curriculum curricula/tiny.yaml --stage pretrain \\\n"
        "      --tokens data/demo/tokens --out data/demo/mix/pretrain\n"
        "  stepcrawl build-mix --curriculum full --stage mid --tokens data/tokens \\\n"
        "      --out data/mix/mid --scale 1e-9 --seed 1 --eval-set evals/swebench.jsonl\n",
    )
    b.add_argument("--curriculum", required=True)
    b.add_argument("--stage", required=True)
    b.add_argument("--tokens", required=True, help="token shards folder")
    b.add_argument("--out", required=True, help="mix folder (one sub-folder per phase)")
    b.add_argument("--scale", default=None, help="multiply every budget (e.g. 1e-9 for a laptop)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--phase", action="append", help="build only this phase (repeatable)")
    b.add_argument("--eval-set", nargs="+", action="extend", metavar="JSONL",
                   help="evaluation set(s) for the contamination report (JSONL/Parquet/txt)")
    b.add_argument("--ngram", type=int, default=13, help="n-gram length for contamination (words; tokens for pre-tokenised sets)")
    b.add_argument("--overwrite", action="store_true", help="rebuild phases built with another config")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=_build_mix)

    lin = sub.add_parser(
        "lineage",
        help="trace a training sequence back to its documents and source records",
        description="Print the documents of one packed sequence (source, doc id, token range) and "
        "each document's source record (URL, WARC file@offset, or repo/commit/path).",
        formatter_class=fmt,
        epilog="examples:\n"
        "  stepcrawl lineage --mix data/demo/mix/mid --sequence 12\n"
        "  stepcrawl lineage --mix data/demo/mix/mid --sequence 0 --phase mid2 --json\n",
    )
    lin.add_argument("--mix", required=True, help="mix folder written by build-mix")
    lin.add_argument("--sequence", type=int, required=True)
    lin.add_argument("--phase", help="phase name (default: the mix's first phase)")
    lin.add_argument("--tokens", help="token shards folder (default: the one recorded in the mix)")
    lin.add_argument("--json", action="store_true")
    lin.set_defaults(func=_lineage)
