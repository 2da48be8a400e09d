"""``stepcrawl crawl`` and ``stepcrawl serve-sample``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

# = stepcrawl.crawl.fetcher.KEPT_TYPES (spelled out: importing the crawler costs ~0.5 s on
# every `stepcrawl --help`; test_crawl_cli_defaults_match_the_crawler checks they agree)
DEFAULT_CONTENT_TYPES = "text/html,application/xhtml+xml,application/pdf,application/epub+zip"


def _budget(text: str) -> tuple[str, int]:
    name, sep, n = text.partition("=")
    if not sep or not name or not n.isdigit():
        raise argparse.ArgumentTypeError(f"expected CATEGORY=N (e.g. shop=100), got {text!r}")
    return name, int(n)


def _size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().rstrip("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 5000000, 512k or 5m, got "
                                         f"{text!r}") from None


def read_seeds(path: str, errors: list[str] | None = None) -> list[str]:
    """Seed URLs, one per line (``#`` comments, blank lines skipped). A line that is not UTF-8
    costs only itself: it is reported as ``FILE:LINE: reason`` (appended to ``errors`` and
    logged) and the crawl goes on with the other seeds. Decoded line by line from bytes: a
    text-mode reader fails on a whole buffered chunk and names no line."""
    seeds = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                msg = f"{path}:{lineno}: seed line is not valid UTF-8 (byte {exc.start}); skipped"
                log.warning("%s", msg)
                if errors is not None:
                    errors.append(msg)
                continue
            if line and not line.startswith("#"):
                seeds.append(line)
    return seeds


def run_crawl_cmd(args: argparse.Namespace) -> int:
    from stepcrawl.crawl.crawler import CrawlConfig, CrawlError, run_crawl
    from stepcrawl.crawl.report import format_summary

    seeds = list(args.seed or [])
    seed_errors: list[str] = []
    if args.seeds:
        seeds += read_seeds(args.seeds, seed_errors)
    if not seeds and not args.resume:
        print("stepcrawl crawl: give --seeds FILE or --seed URL (or --resume)", file=sys.stderr)
        return 2
    try:
        cfg = CrawlConfig(
            out=Path(args.out), seeds=seeds, max_pages=args.max_pages, resume=args.resume,
            allow_private=args.allow_private, concurrency=args.concurrency,
            per_host_connections=args.per_host_connections,
            per_host_delay=args.per_host_delay, max_crawl_delay=args.max_crawl_delay,
            max_depth=args.max_depth, allowed_domains=tuple(args.allow_domain or ()),
            include=tuple(args.include or ()), exclude=tuple(args.exclude or ()),
            max_bytes=args.max_bytes, timeout=args.timeout, retries=args.retries,
            max_redirects=args.max_redirects, warc_max_bytes=args.warc_max_bytes,
            warc_gzip_level=args.warc_gzip_level, max_retry_after=args.max_retry_after,
            content_types=tuple(args.content_types.split(",")), sitemaps=not args.no_sitemaps,
            min_expand_score=args.min_expand_score,
            category_budgets=dict(args.category_budget or ()),
            scorer_model=args.scorer_model, progress=not args.no_progress,
            user_agent=args.user_agent, spread=args.spread,
            spread_strength=args.spread_strength, spread_depth=args.spread_depth,
        )
        result = run_crawl(cfg)
    except CrawlError as exc:
        print(f"stepcrawl crawl: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result.summary))
    print(f"\nWARC files: {result.warc_dir}/ ({len(result.warc_files)} file(s)); "
          f"frontier: {result.out / 'frontier.sqlite'}")
    if result.interrupted:
        print(f"interrupted — continue with: stepcrawl crawl --out {result.out} --resume")
        return 130
    if seed_errors:  # done, but some input was dropped (stepcrawl.errors: exit 1)
        for e in seed_errors[:20]:
            print(f"  dropped input: {e}", file=sys.stderr)
        return 1
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from stepcrawl.crawl.sample_server import DEFAULT_SITE, serve_forever

    serve_forever(args.host, args.port, args.site or DEFAULT_SITE, args.access_log,
                  args.url_file)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "crawl",
        help="polite, resumable crawl into WARC files (priority frontier, robots.txt)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Crawl from seed URLs into gzip WARC files. The frontier (OUT/frontier.sqlite) is a\n"
            "priority queue: every fetched page is scored and its outlinks inherit the score;\n"
            "low-value pages are not expanded and per-category budgets cap kinds of site.\n"
            "The queue is spread over each site's language editions and sections (every\n"
            "section's first page before any second; --no-spread for pure priority).\n"
            "Kill it at any time; --resume continues without refetching or losing URLs.\n"
            "Private/loopback addresses are refused unless --allow-private."
        ),
        epilog=(
            "examples:\n"
            "  stepcrawl crawl --seeds seeds.txt --out data/crawl --max-pages 500\n"
            "  stepcrawl serve-sample --port 8000 &\n"
            "  stepcrawl crawl --seed http://127.0.0.1:8000/ --out data/crawl --allow-private \\\n"
            "      --per-host-delay 0 --concurrency 4 --category-budget shop=20\n"
            "  stepcrawl crawl --out data/crawl --resume\n"
            "output: OUT/warc/*.warc.gz, OUT/frontier.sqlite, OUT/_crawl_summary.json"
        ),
    )
    src = p.add_argument_group("what to crawl")
    src.add_argument("--seeds", metavar="FILE", help="file with one seed URL per line (# comments)")
    src.add_argument("--seed", action="append", metavar="URL", help="a seed URL (repeatable)")
    src.add_argument("--out", required=True, help="output folder")
    src.add_argument("--resume", action="store_true", help="continue the crawl in --out")
    src.add_argument("--max-pages", type=int, default=None, help="stop after N stored pages")
    src.add_argument("--max-depth", type=int, default=5, help="link depth from the seeds (5)")
    src.add_argument("--allow-domain", action="append", metavar="DOMAIN",
                     help="allowed domain incl. sub-domains (repeatable; default: seeds' hosts)")
    src.add_argument("--no-sitemaps", action="store_true",
                     help="do not read the sitemaps that robots.txt names (read by default)")
    src.add_argument("--include", action="append", metavar="REGEX",
                     help="only URLs matching one of these regexes (repeatable)")
    src.add_argument("--exclude", action="append", metavar="REGEX",
                     help="skip URLs matching any of these regexes (repeatable)")
    pol = p.add_argument_group("politeness and limits")
    pol.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    pol.add_argument("--per-host-connections", type=int, default=1,
                     help="connections per host (1)")
    pol.add_argument("--per-host-delay", type=float, default=1.0,
                     help="seconds between requests to one host (1.0; robots Crawl-delay wins "
                          "if larger)")
    pol.add_argument("--max-crawl-delay", type=float, default=30.0,
                     help="cap on a robots.txt Crawl-delay (30 s)")
    pol.add_argument("--timeout", type=float, default=20.0, help="per request, seconds (20)")
    pol.add_argument("--retries", type=int, default=2,
                     help="retries for timeouts/5xx/429, exponential back-off or the server's "
                          "Retry-After, whichever is longer (2)")
    pol.add_argument("--max-retry-after", type=float, default=300.0,
                     help="longest Retry-After (429/503) waited for; the host is held that "
                          "long and a longer one fails the URL (300 s)")
    pol.add_argument("--max-redirects", type=int, default=5, help="redirect hops (5)")
    pol.add_argument("--max-bytes", type=_size, default=5 * 1024 * 1024,
                     help="max body size; longer bodies are truncated and marked (5m)")
    pol.add_argument("--content-types", metavar="MIME,MIME",
                     default=DEFAULT_CONTENT_TYPES,
                     help="content types stored (comma list; HTML is parsed and scored, others "
                          "archived as is); other types are recorded as skipped without "
                          "downloading the body (default: %(default)s)")
    pol.add_argument("--allow-private", action="store_true",
                     help="allow private, loopback and link-local addresses (local tests)")
    pol.add_argument("--user-agent", default="stepcrawl/0.1 (+https://github.com/stepcrawl/stepcrawl)")
    sc = p.add_argument_group("scoring (StepCrawl's priority frontier)")
    sc.add_argument("--scorer-model", metavar="MODEL.bin",
                    help="fastText model with __label__hq/__label__lq (default: heuristic)")
    sc.add_argument("--min-expand-score", type=float, default=0.0,
                    help="do not follow links of pages scoring below this (0.0)")
    sc.add_argument("--category-budget", action="append", type=_budget, metavar="CAT=N",
                    help="max fetched pages of a category, e.g. shop=100 (repeatable)")
    br = p.add_argument_group("breadth (spread over language editions and sections)")
    br.add_argument("--spread", action=argparse.BooleanOptionalAction, default=True,
                    help="one queue per (host, language edition, section): every queue's "
                         "first page before any queue's second, then pages in proportion to "
                         "each queue's value; --no-spread: the pure priority order (default: "
                         "spread)")
    br.add_argument("--spread-strength", type=float, default=1.0, metavar="S",
                    help="a queue that gave k pages ranks at value/(1+k)^S: 0 = by value "
                         "after the first visit, 1 = shares in proportion to value, larger = "
                         "closer to round-robin (1.0)")
    br.add_argument("--spread-depth", type=int, default=1, metavar="N",
                    help="path segments (after language and version) that name a section (1)")
    out = p.add_argument_group("output")
    out.add_argument("--warc-max-bytes", type=_size, default=100 * 1024 * 1024,
                     help="rotate WARC files at this size (100m)")
    out.add_argument("--warc-gzip-level", type=int, default=6, choices=range(1, 10),
                     metavar="1-9", help="gzip level of WARC records (6: level 9 is ~1.3x "
                                         "slower for <1%% smaller files)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_crawl_cmd)

    s = subparsers.add_parser(
        "serve-sample",
        help="serve the bundled sample website (for demos and tests)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve samples/site/site.tar.gz (Python docs, multilingual Debian reference,\n"
                    "duplicates, spam, PDFs, broken pages; see samples/site/README.md).",
        epilog="example:\n  stepcrawl serve-sample --port 8000 --access-log /tmp/access.log",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    s.add_argument("--site", help="a .tar.gz or folder to serve instead of the bundled site")
    s.add_argument("--access-log", metavar="FILE", help="access log file (default: stderr)")
    s.add_argument("--url-file", metavar="FILE",
                   help="write the base URL here once listening (scripts using --port 0)")
    s.set_defaults(func=run_serve)
