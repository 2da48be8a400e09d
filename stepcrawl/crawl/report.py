"""The crawl summary: computed from the frontier alone, so it can be reprinted any time
(``stepcrawl stats OUT`` calls ``crawl_summary(OUT)``), even while a crawl runs."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from pathlib import Path

from stepcrawl.crawl.editions import edition_of, section_label
from stepcrawl.io import read_json, write_json

SUMMARY_NAME = "_crawl_summary.json"


def _counts(db: sqlite3.Connection, column: str, where: str = "1", limit: int = 25) -> dict:
    rows = db.execute(
        f"SELECT COALESCE({column}, '-'), COUNT(*) FROM urls WHERE {where} "
        f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}"
    )
    return {str(k): n for k, n in rows}


def _breadth(db: sqlite3.Connection, meta: dict, limit: int = 40) -> dict:
    """Fetched pages per language edition and per section (``editions.edition_of`` on each
    fetched URL, with the crawl's ``spread_depth``): how broadly the budget was spent. A
    section is shown as ``/tutorial/``, prefixed by its host when the crawl fetched from
    more than one."""
    try:
        depth = int(json.loads(meta.get("config") or "{}").get("spread_depth") or 1)
    except (ValueError, TypeError, AttributeError):
        depth = 1
    editions = [edition_of(u, depth) for (u,) in db.execute(
        "SELECT url FROM urls WHERE state='fetched' ORDER BY id")]
    multi_host = len({e.host for e in editions}) > 1
    langs = Counter(e.language for e in editions)
    sections = Counter((e.host + section_label(e.section)) if multi_host
                       else section_label(e.section) for e in editions)
    queues = Counter(e.key for e in editions)

    def top(c: Counter) -> dict:
        return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])

    return {
        "fetched_by_language": top(langs),
        "fetched_by_section": top(sections),
        "languages_reached": len(langs),
        "sections_reached": len(sections),
        "queues_reached": len(queues),  # distinct (host, language, section)
        "max_pages_one_queue": max(queues.values(), default=0),
    }


def _summary_from_db(db: sqlite3.Connection, out: Path, elapsed: float | None) -> dict:
    meta = dict(db.execute("SELECT key, value FROM meta"))
    counters = dict(db.execute("SELECT name, n FROM counters ORDER BY name"))
    fetched, n_bytes = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(n_bytes), 0) FROM urls WHERE state='fetched'").fetchone()
    warc_dir = out / "warc"
    warcs = sorted(p.name for p in warc_dir.glob("*.warc.gz")) if warc_dir.exists() else []
    if elapsed is None and "started_at" in meta:
        end = float(meta.get("finished_at", time.time()))
        elapsed = end - float(meta["started_at"])
    return {
        "out": str(out),
        "warc_dir": str(warc_dir),
        "warc_files": warcs,
        "urls": db.execute("SELECT COUNT(*) FROM urls").fetchone()[0],
        "fetched": fetched,
        "bytes_fetched": n_bytes,
        "elapsed_s": round(elapsed or 0.0, 2),
        "pages_per_s": round(fetched / elapsed, 2) if elapsed else None,
        "by_state": _counts(db, "state"),
        "failed_reasons": _counts(db, "reason", "state='failed'"),
        "skipped_reasons": _counts(db, "reason", "state IN ('skipped','out_of_scope',"
                                                 "'disallowed','invalid')"),
        "fetched_notes": _counts(db, "reason", "state='fetched' AND reason IS NOT NULL"),
        "fetched_by_category": _counts(db, "category", "state='fetched'"),
        "fetched_by_content_type": _counts(db, "content_type", "state='fetched'"),
        "fetched_by_host": _counts(db, "host", "state='fetched'", limit=10),
        "mean_score": db.execute(
            "SELECT ROUND(AVG(score), 4) FROM urls WHERE state='fetched'").fetchone()[0],
        "counters": counters,
        **_breadth(db, meta),
    }


def summary_dict(frontier, out: Path, elapsed: float | None = None) -> dict:
    return _summary_from_db(frontier.db, Path(out), elapsed)


def write_summary(out: Path, summary: dict) -> Path:
    path = Path(out) / SUMMARY_NAME
    write_json(path, summary)
    return path


def format_summary(s: dict) -> str:
    lines = [
        f"crawl {s['out']}: {s['fetched']} pages fetched "
        f"({s['bytes_fetched'] / 1e6:.1f} MB) of {s['urls']} URLs seen"
        + (f" in {s['elapsed_s']:.1f}s ({s['pages_per_s']} pages/s)" if s.get("pages_per_s")
           else ""),
        f"WARC files ({len(s['warc_files'])}) in {s['warc_dir']}",
    ]

    def block(title: str, d: dict) -> None:
        if d:
            lines.append(f"{title}:")
            width = max(len(k) for k in d)
            lines.extend(f"  {k:<{width}}  {v:>7}" for k, v in d.items())

    block("URL states", s["by_state"])
    block("failure reasons", s["failed_reasons"])
    block("not fetched (scope, robots, type, budget)", s["skipped_reasons"])
    block("notes on fetched pages", s["fetched_notes"])
    block("fetched by category", s["fetched_by_category"])
    block("fetched by content type", s["fetched_by_content_type"])
    block("top hosts", s["fetched_by_host"])
    if "fetched_by_language" in s:  # summaries written before breadth was recorded lack it
        lines.append(f"breadth: {s['languages_reached']} language edition(s), "
                     f"{s['sections_reached']} section(s), {s['queues_reached']} "
                     f"(host, language, section) queue(s); at most "
                     f"{s['max_pages_one_queue']} page(s) from one queue")
        block("fetched by language edition ('-' = no language in the URL)",
              s["fetched_by_language"])
        block("fetched by section", s["fetched_by_section"])
    block("counters", s["counters"])
    return "\n".join(lines)


def crawl_summary(crawl_dir: str | Path) -> str:
    """Human-readable summary of the crawl in ``crawl_dir`` (reads ``frontier.sqlite``)."""
    crawl_dir = Path(crawl_dir)
    db_path = crawl_dir / "frontier.sqlite"
    if not db_path.exists():
        raise FileNotFoundError(f"{crawl_dir}: no frontier.sqlite (not a crawl output folder)")
    db = sqlite3.connect(str(db_path))
    try:
        return format_summary(_summary_from_db(db, crawl_dir, None))
    finally:
        db.close()


def load_summary(crawl_dir: str | Path) -> dict:
    return read_json(Path(crawl_dir) / SUMMARY_NAME)
