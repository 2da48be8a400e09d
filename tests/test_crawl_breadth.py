"""Crawl breadth: a budget-limited crawl of a multilingual documentation site reaches every
top-level section and every language edition (frontier ``Spread``), where the pure priority
order follows the best-scoring section down; category budgets stay exact; a stopped crawl
resumed fetches what the uninterrupted one fetches.

The site is generated here and served on 127.0.0.1 by the standard library (no mocks). It is
built so that the pure priority order is led astray the way the issue describes: the English
API reference is long and code-heavy (the heuristic scorer's favourite) and links to all of
itself, while translations are short pages reached through a language switcher.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.crawl.crawler import CrawlConfig, CrawlError, run_crawl
from stepcrawl.crawl.editions import Spread, edition_of, language_tag
from stepcrawl.crawl.frontier import HostScheduler, QueueItem
from stepcrawl.crawl.report import crawl_summary, load_summary
from stepcrawl.crawl.sample_server import start_sample_server

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("api", "guide", "tutorial", "faq")
PATH_EDITIONS = ("de", "fr", "es", "ja", "pt-br", "zh-cn", "ru", "ko")
QUERY_EDITION = "it"  # served as ?lang=it on the default paths
LANGUAGES = {"-", *PATH_EDITIONS, QUERY_EDITION}
PAGES_PER_SECTION = 6
API_PAGES = 60  # the English API reference: the section a pure priority order sinks into
SHOP_PAGES = 10


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"{rng.choice('bcdfgklmnprstvz')}{rng.choice('aeiou')}"
                    f"{rng.choice('bcdfgklmnprstvz')}{rng.randrange(1000)}" for _ in range(n))


def _html(title: str, words: str, links: list[str], code: bool = False) -> bytes:
    body = f"<p>{words}</p>" + ("<pre><code>import os\nos.listdir('.')</code></pre>"
                                if code else "")
    nav = "".join(f'<li><a href="{h}">{h}</a></li>' for h in links)
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head>'
            f"<body><h1>{title}</h1>{body}<ul>{nav}</ul></body></html>").encode()


def build_site() -> dict[str, bytes]:
    """``{request path: page}`` of the multilingual documentation site (~330 pages)."""
    rng = random.Random(14)
    pages: dict[str, bytes] = {}

    def url(lang: str, path: str) -> str:
        if lang == "-":
            return path
        if lang == QUERY_EDITION:
            return f"{path}?lang={lang}"
        return f"/{lang}{path}"

    for lang in ["-", *PATH_EDITIONS, QUERY_EDITION]:
        section_home = [url(lang, f"/{s}/") for s in SECTIONS]
        home_links = list(section_home)
        if lang == "-":
            home_links.append("/store/")
            home_links += [f"/{e}/" for e in PATH_EDITIONS] + [url(QUERY_EDITION, "/")]
        pages[url(lang, "/")] = _html(f"docs home ({lang})", _words(rng, 20), home_links)
        for s in SECTIONS:
            english_api = lang == "-" and s == "api"
            n = API_PAGES if english_api else PAGES_PER_SECTION
            members = [url(lang, f"/{s}/p{i}.html") for i in range(n)]
            size = 700 if english_api else 60
            pages[url(lang, f"/{s}/")] = _html(f"{s} ({lang})", _words(rng, size), members,
                                               code=english_api)
            for i, m in enumerate(members):
                links = [members[(i + 1) % n], members[(i + 2) % n], url(lang, f"/{s}/"),
                         url(lang, "/")]
                pages[m] = _html(f"{s} {i} ({lang})", _words(rng, size), links,
                                 code=english_api)
    products = [f"/store/product-{i}.html" for i in range(SHOP_PAGES)]
    pages["/store/"] = _html("store", "add to cart buy now free shipping " + _words(rng, 40),
                             products)
    for i, p in enumerate(products):
        pages[p] = _html(f"product {i}", "add to cart buy now free shipping in stock € 9 "
                         + _words(rng, 40), products)
    return pages


class DocsSite:
    """The generated site on a threaded local server; logs requested paths."""

    def __init__(self) -> None:
        self.pages = build_site()
        self.log: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                site.log.append(self.path)
                body = site.pages.get(self.path)
                status = 200 if body is not None else 404
                body = body if body is not None else b"not found"
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def docs_site():
    site = DocsSite()
    yield site
    site.close()


def crawl(site: DocsSite, out: Path, **kw):
    cfg = dict(out=out, seeds=[site.base + "/"], allow_private=True, concurrency=1,
               per_host_delay=0, progress=False, sitemaps=False)
    cfg.update(kw)
    return run_crawl(CrawlConfig(**cfg))


def fetched(out: Path) -> list[tuple[str, str]]:
    """(url, category) of fetched pages, in fetch order."""
    db = sqlite3.connect(str(out / "frontier.sqlite"))
    try:
        return [(u, c) for u, c in db.execute(
            "SELECT url, category FROM urls WHERE state='fetched' ORDER BY fetched_at, id")]
    finally:
        db.close()


def coverage(urls) -> tuple[set[str], set[str]]:
    eds = [edition_of(u) for u in urls]
    return {e.language for e in eds}, {e.section for e in eds if e.section}


def test_site_editions_are_what_the_detector_reads(docs_site):
    langs, sections = coverage(docs_site.base + p for p in docs_site.pages)
    assert langs == LANGUAGES
    assert sections == {*SECTIONS, "store"}


def test_spread_reaches_every_section_and_language_where_priority_order_does_not(
        docs_site, tmp_path):
    budget = 45  # of ~330 pages
    spread = crawl(docs_site, tmp_path / "spread", max_pages=budget)
    pure = crawl(docs_site, tmp_path / "pure", max_pages=budget, spread=False)
    assert spread.fetched == pure.fetched == budget

    langs, sections = coverage(u for u, _ in fetched(tmp_path / "spread"))
    assert langs == LANGUAGES
    assert sections == {*SECTIONS, "store"}

    # the old order: the English API reference eats the budget, nothing else is reached
    pure_rows = fetched(tmp_path / "pure")
    langs, sections = coverage(u for u, _ in pure_rows)
    assert langs == {"-"} and sections == {"api"}
    assert sum("/api/" in u for u, _ in pure_rows) == budget - 1  # all but the home page

    # the site has 51 (language, section) queues: under 51 pages, each page is another's
    per_queue = Counter(edition_of(u).key for u, _ in fetched(tmp_path / "spread"))
    assert len(per_queue) == budget and max(per_queue.values()) == 1

    # stats and the summary manifest show pages per language and section
    summary = load_summary(tmp_path / "spread")
    assert set(summary["fetched_by_language"]) == LANGUAGES
    assert sum(summary["fetched_by_language"].values()) == budget
    assert set(summary["fetched_by_section"]) == {"/", *(f"/{s}/" for s in SECTIONS),
                                                  "/store/"}
    assert sum(summary["fetched_by_section"].values()) == budget
    assert summary["languages_reached"] == len(LANGUAGES)
    text = crawl_summary(tmp_path / "spread")
    assert "fetched by language edition" in text and "pt-br" in text and "/tutorial/" in text
    pure_summary = load_summary(tmp_path / "pure")
    assert pure_summary["fetched_by_language"] == {"-": budget}
    assert json.loads(sqlite3.connect(str(tmp_path / "pure" / "frontier.sqlite")).execute(
        "SELECT value FROM meta WHERE key='config'").fetchone()[0])["spread"] is False


def test_spread_order_is_deterministic(docs_site, tmp_path):
    a = crawl(docs_site, tmp_path / "a", max_pages=30)
    b = crawl(docs_site, tmp_path / "b", max_pages=30)
    assert a.fetched == b.fetched == 30
    assert fetched(tmp_path / "a") == fetched(tmp_path / "b")  # same URLs, same order


def test_category_budget_stays_exact_with_spread_and_concurrency(docs_site, tmp_path):
    out = tmp_path / "budget"
    # six shop seeds at priority 1 can all be in flight at once; the gate still holds
    seeds = [docs_site.base + "/"] + [docs_site.base + f"/store/product-{i}.html"
                                      for i in range(6)]
    result = crawl(docs_site, out, seeds=seeds, max_pages=80, concurrency=6,
                   per_host_connections=6, category_budgets={"shop": 2})
    assert result.fetched == 80
    rows = fetched(out)
    cats = Counter(c for _, c in rows)
    assert cats["shop"] == 2, cats
    langs, sections = coverage(u for u, _ in rows)
    assert langs == LANGUAGES and sections == {*SECTIONS, "store"}
    db = sqlite3.connect(str(out / "frontier.sqlite"))
    n_budget = db.execute("SELECT COUNT(*) FROM urls WHERE reason='category_budget:shop'"
                          ).fetchone()[0]
    db.close()
    assert n_budget >= 1


def test_stopped_then_resumed_crawl_fetches_what_an_uninterrupted_one_does(
        docs_site, tmp_path):
    whole = tmp_path / "whole"
    crawl(docs_site, whole, max_pages=60)
    part = tmp_path / "part"
    crawl(docs_site, part, max_pages=25)
    # a new process: the scheduler is rebuilt from the database, per-queue counts included
    crawl(docs_site, part, max_pages=60, resume=True, seeds=[])
    order = lambda out: [u for u, _ in fetched(out)]  # noqa: E731
    assert order(part) == order(whole)
    assert len(set(order(part))) == 60
    # past the first visit of all 51 queues, the pages go by value: the English API
    # reference (long, code-heavy: the best-scoring section) gets the most
    per_queue = Counter((edition_of(u).language, edition_of(u).section) for u in order(whole))
    assert len(per_queue) == 51
    assert per_queue.most_common(1)[0] == (("-", "api"), 3), per_queue


def test_sample_site_spread_visits_every_section_once_and_spends_the_rest_on_docs(tmp_path):
    """The bundled sample site (what ``make demo`` crawls), limited to 150 of its ~360 pages:
    every top-level section gets its page, the shop and the SEO farm no more than that (their
    pages score low, which caps their queues' value), documentation keeps most of the budget."""
    server, base = start_sample_server(access_log=io.StringIO())
    try:
        out = tmp_path / "s"
        run_crawl(CrawlConfig(out=out, seeds=[base], allow_private=True, concurrency=1,
                              per_host_delay=0, max_pages=150, min_expand_score=0.1,
                              progress=False))
    finally:
        server.shutdown()
        server.server_close()
    rows = fetched(out)
    langs, sections = coverage(u for u, _ in rows)
    assert sections == {"python", "debian-reference", "dups", "boilerplate", "broken", "files",
                        "seo", "shop", "spam"}  # /private/ is robots-disallowed
    assert langs == {"-", "en", "de", "fr", "es", "it", "ja", "zh-cn"}
    per_section = Counter(edition_of(u).section for u, _ in rows)
    assert per_section["shop"] == per_section["seo"] == 1, per_section
    cats = Counter(c for _, c in rows)
    assert cats["docs"] >= 100 and cats["shop"] == 1, cats


def test_crawl_cli_spread_flags():
    from stepcrawl.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["crawl", "--out", "x", "--seed", "http://example.com/"])
    assert args.spread is True and args.spread_strength == 1.0 and args.spread_depth == 1
    args = parser.parse_args(["crawl", "--out", "x", "--no-spread", "--spread-strength", "2",
                              "--spread-depth", "2"])
    assert (args.spread, args.spread_strength, args.spread_depth) == (False, 2.0, 2)


def test_sigkill_then_resume_with_spread_loses_and_duplicates_nothing(docs_site, tmp_path):
    """The CLI killed mid-crawl (WARC files rotating every few pages) and resumed: the budget
    is met exactly, every fetched page is in exactly one completed WARC record, no page stored
    before the kill is requested again, and the resumed crawl still covers every language
    edition and section."""
    from warcio.archiveiterator import ArchiveIterator

    def stored(warc: Path) -> list[str]:
        urls = []
        for f in sorted(warc.glob("*.warc.gz")):
            with open(f, "rb") as fh:
                urls += [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(fh)
                         if r.rec_type == "response"]
        return urls

    out, budget = tmp_path / "k", 90
    cmd = [sys.executable, "-m", "stepcrawl", "crawl", "--seed", docs_site.base + "/",
           "--out", str(out), "--allow-private", "--per-host-delay", "0.005", "--no-sitemaps",
           "--warc-max-bytes", "8000", "--no-progress", "--concurrency", "2",
           "--max-pages", str(budget)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = len(docs_site.log)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(docs_site.log) - start < 40:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(docs_site.log) - start < budget, "crawl finished before it was killed"
    before = set(stored(out / "warc"))
    assert before, "no WARC file completed before the kill"
    n_logged = len(docs_site.log)
    subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = stored(out / "warc")
    assert len(urls) == len(set(urls)) == budget  # nothing twice, budget exact
    rows = fetched(out)
    assert {u for u, _ in rows} == set(urls)  # nothing lost: fetched iff archived
    again = {docs_site.base + p for p in docs_site.log[n_logged:]}
    assert not again & before
    langs, sections = coverage(urls)
    assert langs == LANGUAGES and sections == {*SECTIONS, "store"}


def test_spread_options_are_checked(tmp_path):
    with pytest.raises(CrawlError, match="spread"):
        CrawlConfig(out=tmp_path, spread_strength=-1)
    with pytest.raises(CrawlError, match="spread"):
        CrawlConfig(out=tmp_path, spread_depth=0)
    assert CrawlConfig(out=tmp_path).spread_policy() == Spread(1.0, 1)
    assert CrawlConfig(out=tmp_path, spread=False).spread_policy() is None


# ------------------------------------------------------------------------------------------
# the detector


@pytest.mark.parametrize("url,language,section", [
    ("https://docs.python.org/3/library/os.html", "-", "library"),
    ("https://docs.python.org/de/3/tutorial/index.html", "de", "tutorial"),
    ("https://docs.python.org/pt-br/3/", "pt-br", ""),
    ("https://docs.python.org/zh_CN/3/howto/", "zh-cn", "howto"),
    ("http://h/debian-reference/ch04.zh-cn.html", "zh-cn", "debian-reference"),
    ("http://h/manual/intro.html.fr", "fr", "manual"),
    ("http://de.example.org/guide/a.html", "de", "guide"),
    ("http://x.org/a/b?lang=pt_BR", "pt-br", "a"),
    ("http://x.org/a/b?hl=ja&q=1", "ja", "a"),
    ("http://x.org/de", "de", ""),
    ("http://x.org/", "-", ""),
    ("http://x.org/index.html", "-", ""),
    ("http://x.org/js/app/main.js", "-", "js"),        # not a CLDR language
    ("http://x.org/api/v2/users/", "-", "api"),
    ("http://x.org/docs/zh-hans-cn/api/x", "zh-hans-cn", "docs"),
    ("http://x.org/en/latest/api/", "en", "api"),      # version segments are skipped
    ("http://127.0.0.1:8000/it/faq/", "it", "faq"),
    ("http://1.2.3.4/x/", "-", "x"),
    ("not a url", "-", ""),
])
def test_edition_of(url, language, section):
    e = edition_of(url)
    assert (e.language, e.section) == (language, section)


def test_language_tags_come_from_cldr():
    assert language_tag("pt_BR") == "pt-br"
    assert language_tag("zh-Hant") == "zh-hant"
    assert language_tag("sr-latn-rs") == "sr-latn-rs"
    for junk in ("js", "py", "qq", "en-aa", "en-gb-us", "english", "", "e"):
        assert language_tag(junk) is None, junk
    assert edition_of("http://x.org/docs/de/a/b/c.html", depth=2).section == "docs/a"


# ------------------------------------------------------------------------------------------
# the scheduler (fake clock, hypothesis)

HOSTS = ("a", "b")
KEYS = ("/api/", "/guide/", "/de/api/", "/fr/", "/")


def _item(i: int, host: str, path: str, prio: float, attempts: int = 0) -> QueueItem:
    return QueueItem(-prio, i, f"http://{host}{path}p{i}.html", host, 0, "x", attempts, 0)


entries = st.lists(st.tuples(st.sampled_from(HOSTS), st.sampled_from(KEYS),
                             st.sampled_from([0.1, 0.4, 0.5, 0.9, 1.0])),
                   min_size=1, max_size=40)


def _drain(sched: HostScheduler, delay: float) -> list[QueueItem]:
    now, popped = 0.0, []
    while len(sched):
        it = sched.pop(now)
        if it is None:
            now = sched.next_wakeup()
            assert now is not None
            continue
        popped.append(it)
        now += 0.1
        sched.release(it.host, now)
    return popped


@settings(max_examples=100, deadline=None, derandomize=True)
@given(entries, st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 0.3]))
def test_spread_scheduler_pops_the_best_spread_rank(entries, strength, delay):
    spread = Spread(strength=strength)
    sched = HostScheduler(per_host_connections=1, default_delay=delay, spread=spread)
    for i, (host, path, prio) in enumerate(entries):
        sched.push(_item(i, host, path, prio), 0.0)
    now, popped = 0.0, []
    while len(sched):
        it = sched.pop(now)
        if it is None:
            now = sched.next_wakeup()
            continue
        key = (it.host, *spread.key(it.url))
        taken = sched.taken[key] - 1  # pages of its queue handed out before this one
        mine = (taken > 0, -(it.priority / (1 + taken) ** strength), taken, it.neg_priority,
                it.id)
        # nothing that could be fetched now outranks it: the best URL of every queue of an
        # eligible host, at its queue's decayed priority; inside its own queue, priority
        for host, q in sched.queues.items():
            if not q or not sched._eligible(host, now):
                continue
            for k, heap in q._heaps.items():
                head, t = min(heap), sched.taken.get(k, 0)
                assert mine <= (t > 0, -(head.priority / (1 + t) ** strength), t,
                                head.neg_priority, head.id)
                if k == key:
                    assert (it.neg_priority, it.id) < (head.neg_priority, head.id)
        popped.append(it.id)
        now += 0.1
        sched.release(it.host, now)
    assert sorted(popped) == list(range(len(entries)))  # each exactly once


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(KEYS), min_size=1, max_size=40))
def test_equal_priorities_go_round_robin_over_queues(paths):
    sched = HostScheduler(per_host_connections=1, default_delay=0.0, spread=Spread())
    for i, path in enumerate(paths):
        sched.push(_item(i, "a", path, 0.5), 0.0)
    left = Counter(paths)
    taken: Counter = Counter()
    for it in _drain(sched, 0.0):
        path = next(p for p in KEYS if it.url == f"http://a{p}p{it.id}.html")
        # it comes from a queue taken from least among those that still have URLs
        assert taken[path] == min(taken[p] for p in left if left[p])
        taken[path] += 1
        left[path] -= 1


def test_a_retry_or_a_parked_url_does_not_count_twice():
    spread = Spread()
    sched = HostScheduler(per_host_connections=4, default_delay=0.0, spread=spread)
    sched.push(_item(0, "a", "/api/", 0.9), 0.0)
    sched.push(_item(1, "a", "/api/", 0.9), 0.0)
    first = sched.pop(0.0)
    key = ("a", "-", "api")
    assert sched.taken[key] == 1
    sched.push(first, 0.0, returned=True)  # parked by the budget gate: not taken
    assert sched.taken[key] == 0
    assert sched.pop(0.0).id == first.id and sched.taken[key] == 1
    retry = QueueItem(first.neg_priority, first.id, first.url, "a", 0, "x", 1, 0)
    sched.push(retry, 0.0)
    assert {sched.pop(0.0).id, sched.pop(0.0).id} == {0, 1}
    assert sched.taken[key] == 2  # url 0 (once, its retry not again) and url 1


def test_restore_taken_gives_a_resumed_scheduler_the_same_order():
    spread = Spread()
    items = [_item(i, h, p, pr) for i, (h, p, pr) in enumerate(
        [("a", "/api/", 0.9)] * 6 + [("a", "/guide/", 0.5)] * 3 + [("a", "/de/", 0.4)] * 3)]
    whole = HostScheduler(1, 0.0, spread)
    for it in items:
        whole.push(it, 0.0)
    order = _drain(whole, 0.0)
    assert [it.url.split("/")[3] for it in order[:4]] == ["api", "guide", "de", "api"]
    # stop after 4, rebuild from the "database": started URLs + the still queued items
    resumed = HostScheduler(1, 0.0, spread)
    resumed.restore((it.url, it.host, None) for it in order[:4])
    for it in order[4:]:
        resumed.push(it, 0.0)
    rest = _drain(resumed, 0.0)
    assert [it.id for it in rest] == [it.id for it in order[4:]]


def test_without_spread_the_scheduler_is_pure_priority():
    sched = HostScheduler(per_host_connections=1, default_delay=0.0)
    for i, (p, pr) in enumerate([("/api/", 0.9)] * 4 + [("/de/", 0.4)]):
        sched.push(_item(i, "a", p, pr), 0.0)
    assert [it.id for it in _drain(sched, 0.0)] == [0, 1, 2, 3, 4]
    sched = HostScheduler(per_host_connections=1, default_delay=0.0, spread=Spread())
    for i, (p, pr) in enumerate([("/api/", 0.9)] * 4 + [("/de/", 0.4)]):
        sched.push(_item(i, "a", p, pr), 0.0)
    # the unvisited /de/ queue first, then 0.9·0.5 > 0.4 > 0.9·0.25
    assert [it.id for it in _drain(sched, 0.0)] == [0, 4, 1, 2, 3]
