"""The ``stepcrawl`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in the package that owns its work and exposes
``register(subparsers) -> None`` (adding one or more parsers whose ``func`` is set to a
``run(args) -> int``). Modules are named here by dotted path and imported only to build the
parser, so the data packages (tokenizer, curricula) never import stepcrawl's CLI back.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order shown in --help: the data path from crawl to mix.
COMMAND_MODULES = [
    "stepcrawl.commands.crawl",       # crawl, serve-sample
    "stepcrawl.commands.curate",      # curate, extract, annotate, filter, stats
    "stepcrawl.commands.models",      # train-langid, train-quality, train-math
    "stepcrawl.commands.dedup",       # dedup, decontam, cluster
    "stepcrawl.commands.ingest",      # ingest code|git|issues|pr-dialogue|tool-use|reasoning
    "stepcrawl.commands.export",      # export --format datatrove|hf|jsonl
    "tokenizer.cli",                  # train-tokenizer, tokenize
    "curricula.cli",                  # plan, build-mix, lineage
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepcrawl",
        description="Crawl, curate, tokenize and mix a Step-3.5-Flash-style training curriculum.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  stepcrawl crawl --seeds seeds.txt --out data/crawl --max-pages 500\n"
            "  stepcrawl curate data/crawl --out data/corpus\n"
            "  stepcrawl ingest git . --out data/corpus/commits\n"
            "  stepcrawl plan --curriculum curricula/full.yaml\n"
            "  stepcrawl build-mix --curriculum curricula/tiny.yaml --stage mid --out data/mix\n"
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for dotted in COMMAND_MODULES:
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            # A subcommand module not written yet is left out; any other missing import is a bug.
            if exc.name == dotted:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(f"stepcrawl {args.command}", args.func, args, verbose=args.verbose)


# Errors a command refuses with (exit 2, one line) instead of a traceback: our own error types
# (BadRecord, CurriculumError, MixError, … are ValueErrors; StepcrawlError carries file+field),
# a missing/unreadable file (OSError names it), a config that is not YAML/JSON/UTF-8.
def _refusal_types() -> tuple[type[BaseException], ...]:
    import yaml

    from stepcrawl.errors import StepcrawlError

    return (StepcrawlError, OSError, ValueError, yaml.YAMLError)


def run_command(prog: str, func, args, verbose: bool = False) -> int:
    """Run one subcommand under the exit-code convention (``stepcrawl.errors``): its own return
    code (0 done, 1 done with dropped input), 2 with a one-line ``PROG: error: …`` for a
    refusal, 130 when interrupted. ``-v`` shows the traceback of a refusal too."""
    from stepcrawl.errors import EXIT_INTERRUPTED, EXIT_REFUSED, one_line

    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; re-run with the same arguments (or --resume) to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _refusal_types() as exc:
        if verbose:
            logging.getLogger(__name__).exception("%s failed", prog)
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
