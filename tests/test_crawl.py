"""End-to-end crawler tests against real HTTP servers on 127.0.0.1 (no mocks).

The test server logs every request it receives (time, path), so politeness and robots.txt
are checked from the *server's* point of view, not from what the crawler says it did.
"""

from __future__ import annotations

import gzip
import io
import os
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
from warcio.archiveiterator import ArchiveIterator

from stepcrawl.crawl.crawler import CrawlConfig, CrawlError, run_crawl
from stepcrawl.crawl.fetcher import GuardedResolver, PrivateAddressError
from stepcrawl.crawl.report import crawl_summary, load_summary
from stepcrawl.crawl.sample_server import start_sample_server

REPO = Path(__file__).resolve().parents[1]
SM_NS = "http://www.sitemaps.org/schemas/sitemap/0.9"


# ------------------------------------------------------------------------------------------
# a small threaded test server with the routes a crawler must survive


class LoggedSite:
    def __init__(self, robots: bytes | None = None, n_pages: int = 8, page_bytes: int = 200):
        self.log: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.robots = robots
        self.n_pages = n_pages
        self.page_bytes = page_bytes
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status, body=b"", ctype="text/html; charset=utf-8", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                with site.lock:
                    site.log.append((time.monotonic(), self.path))
                try:
                    site.route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, title: str, links: list[str], filler: int | None = None) -> bytes:
        # varied words so that WARC files grow (and rotate) like real ones
        words = [f"w{(hash(title) + k * k) % 997}" for k in range((filler or self.page_bytes) // 5)]
        text = " ".join(words)
        anchors = "".join(f'<a href="{h}">{h}</a> ' for h in links)
        return (f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"
                f"<p>{text}</p>{anchors}</body></html>").encode()

    def requests(self, path_prefix: str = "") -> list[tuple[float, str]]:
        with self.lock:
            return [(t, p) for t, p in self.log if p.startswith(path_prefix)]

    def route(self, h) -> None:
        path = h.path
        if path == "/robots.txt":
            with self.lock:
                self.robots_fail = getattr(self, "robots_fail", 0) - 1
                unreachable = self.robots_fail >= 0
            if unreachable:
                h.send(503, b"robots.txt unavailable")
            elif self.robots is None:
                h.send(404, b"no robots")
            else:
                h.send(200, self.robots, "text/plain")
        elif path == "/":
            links = [f"/page/{i}" for i in range(self.n_pages)] + [
                "/private/secret", "/redirect", "/loop/a", "/chain/0", "/missing", "/error",
                "/slow", "/huge", "/image.png", "/bad-links", "/gzip", "/empty",
                "http://example.com/outside", "/noloc", "/canon",
            ]
            h.send(200, self.page("index", links))
        elif path.startswith("/page/"):
            i = int(path.rsplit("/", 1)[1])
            n = self.n_pages
            h.send(200, self.page(f"page {i}", [f"/page/{(i + 1) % n}", f"/page/{(i + 2) % n}",
                                                "/"]))
        elif path.startswith("/private/"):
            h.send(200, self.page("secret", []))
        elif path == "/redirect":
            h.send(302, headers=[("Location", "/page/0")])
        elif path == "/loop/a":
            h.send(301, headers=[("Location", "/loop/b")])
        elif path == "/loop/b":
            h.send(301, headers=[("Location", "/loop/a")])
        elif path.startswith("/chain/"):
            i = int(path.rsplit("/", 1)[1])
            h.send(302, headers=[("Location", f"/chain/{i + 1}")])
        elif path == "/noloc":
            h.send(302)
        elif path == "/missing":
            h.send(404, b"not here")
        elif path == "/error":
            h.send(500, b"boom")
        elif path == "/slow":  # trickles 1 byte / 50 ms: never finishes within the timeout
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", "1000")
            h.end_headers()
            for _ in range(60):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(0.05)
        elif path == "/huge":
            h.send(200, self.page("huge", ["/page/1"], filler=400_000))
        elif path == "/image.png":
            h.send(200, b"\x89PNG\r\n\x1a\n" + b"0" * 100, "image/png")
        elif path == "/bad-links":
            h.send(200, self.page("bad links", [
                "http://[::1", "javascript:void(0)", "mailto:a@b.c", "http://exa mple.com/",
                "http://example.com:99999/", "", "#top", "/page/2?utm_source=x#frag",
            ]))
        elif path == "/gzip":
            body = gzip.compress(self.page("gzip", ["/page/3", "/gzip-only-link"]))
            h.send(200, body, headers=[("Content-Encoding", "gzip")])
        elif path == "/gzip-only-link":
            h.send(200, self.page("reached through a gzip page", []))
        elif path == "/empty":
            h.send(200, b"")
        elif path == "/canon":  # declares another URL canonical, linked from nowhere else
            h.send(200, b'<html><head><link rel="Canonical" href="/canonical-target#x">'
                        b"</head><body><p>a copy</p></body></html>")
        elif path == "/canonical-target":
            h.send(200, self.page("the canonical page", []))
        elif path == "/sitemap_index.xml":
            h.send(200, (f'<?xml version="1.0"?><sitemapindex xmlns="{SM_NS}">'
                         f"<sitemap><loc>{self.base}/sitemap-a.xml</loc></sitemap>"
                         "<sitemap><loc>/sitemap-b.xml.gz</loc></sitemap>"
                         "<sitemap><loc>/sitemap-broken.xml</loc></sitemap>"
                         "<sitemap><loc>http://example.com/sitemap.xml</loc></sitemap>"
                         "</sitemapindex>").encode(), "application/xml")
        elif path == "/sitemap-a.xml":
            h.send(200, (f'<urlset xmlns="{SM_NS}"><url><loc>{self.base}/hidden/1</loc></url>'
                         "<url><loc>/page/0</loc></url><url><loc>http://[bad</loc></url>"
                         "</urlset>").encode(), "text/xml")
        elif path == "/sitemap-b.xml.gz":
            h.send(200, gzip.compress(
                f"<urlset><url><loc>{self.base}/hidden/2</loc></url></urlset>".encode()),
                "application/x-gzip")
        elif path == "/sitemap-broken.xml":
            h.send(200, b"<html><body>not a sitemap</body></html>", "text/html")
        elif path.startswith("/hidden/"):  # reachable only through the sitemaps
            h.send(200, self.page(f"hidden {path}", []))
        elif path == "/busy":  # 503 + Retry-After: 1 the first time, then the page
            with self.lock:
                self.busy_hits = getattr(self, "busy_hits", 0) + 1
                first = self.busy_hits == 1
            if first:
                h.send(503, b"busy", headers=[("Retry-After", "1")])
            else:
                h.send(200, self.page("busy no more", []))
        elif path == "/ratelimited":  # asks for an hour: not waited for
            h.send(429, b"slow down", headers=[("Retry-After", "3600")])
        else:
            h.send(404, b"?")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def warc_records(warc_dir: Path) -> list[dict]:
    out = []
    for f in sorted(warc_dir.glob("*.warc.gz")):
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh):
                out.append({
                    "file": f.name, "type": rec.rec_type,
                    "url": rec.rec_headers.get_header("WARC-Target-URI"),
                    "status": rec.http_headers.get_statuscode() if rec.http_headers else None,
                    "truncated": rec.rec_headers.get_header("WARC-Truncated"),
                    "body": rec.content_stream().read(),
                })
    return out


def frontier_rows(out: Path) -> dict[str, dict]:
    db = sqlite3.connect(str(out / "frontier.sqlite"))
    db.row_factory = sqlite3.Row
    rows = {r["url"]: dict(r) for r in db.execute("SELECT * FROM urls")}
    db.close()
    return rows


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


# ------------------------------------------------------------------------------------------


@pytest.fixture
def site():
    s = LoggedSite(robots=b"User-agent: *\nDisallow: /private/\nCrawl-delay: 0.06\n")
    yield s
    s.close()


def test_crawl_records_every_outcome_and_obeys_robots(site, tmp_path):
    out = tmp_path / "crawl"
    cfg = CrawlConfig(out=out, seeds=[site.base + "/"], allow_private=True, concurrency=8,
                      per_host_delay=0.01, timeout=0.6, retries=1, backoff=0.05,
                      max_bytes=100_000, max_redirects=3, progress=False)
    result = run_crawl(cfg)
    rows = frontier_rows(out)
    u = lambda p: site.base + p  # noqa: E731

    # robots.txt: the disallowed path is recorded and was never requested
    assert rows[u("/private/secret")]["state"] == "disallowed"
    assert site.requests("/private") == []
    assert len(site.requests("/robots.txt")) == 1  # cached
    # Crawl-delay 0.06 s (larger than --per-host-delay 0.01) holds between requests
    times = [t for t, _ in site.requests()]
    assert len(times) > 15
    assert min(gaps(times)) >= 0.055, gaps(times)

    # redirects, loops, the redirect cap
    assert rows[u("/redirect")]["state"] == "redirected"
    assert rows[u("/redirect")]["redirect_to"] == u("/page/0")
    assert rows[u("/page/0")]["state"] == "fetched"
    loop = [rows[u("/loop/a")], rows[u("/loop/b")]]
    assert all(r["state"] == "redirected" for r in loop)
    assert any("target_seen" in r["reason"] for r in loop)
    chain = [r for url, r in rows.items() if "/chain/" in url]
    assert any("too_many_redirects" in (r["reason"] or "") for r in chain)
    assert max(r["redirects"] for r in chain) == 3
    assert rows[u("/noloc")]["reason"] == "redirect_without_location"

    # errors with reasons; 500 was retried once (2 requests in the server log)
    assert (rows[u("/missing")]["state"], rows[u("/missing")]["reason"]) == ("failed", "http_404")
    assert (rows[u("/error")]["state"], rows[u("/error")]["reason"]) == ("failed", "http_500")
    assert rows[u("/error")]["attempts"] == 2 and len(site.requests("/error")) == 2
    assert (rows[u("/slow")]["state"], rows[u("/slow")]["reason"]) == ("failed", "timeout")
    # size cap, content types, empty body
    assert rows[u("/huge")]["state"] == "fetched" and "truncated" in rows[u("/huge")]["reason"]
    assert rows[u("/huge")]["n_bytes"] == 100_000
    assert rows[u("/image.png")]["state"] == "skipped"
    assert rows[u("/image.png")]["reason"] == "content_type:image/png"
    assert rows[u("/empty")]["state"] == "fetched" and rows[u("/empty")]["reason"] == "empty_body"
    # gzip bodies are stored raw but their links are followed
    assert rows[u("/gzip-only-link")]["state"] == "fetched"
    # scope and invalid links: recorded, crawl goes on
    assert rows["http://example.com/outside"]["state"] == "out_of_scope"
    assert rows["http://example.com/outside"]["reason"] == "domain_not_allowed"
    invalid = {url: r["reason"] for url, r in rows.items() if r["state"] == "invalid"}
    assert invalid["http://[::1"].startswith("invalid_url")
    assert invalid["http://exa mple.com/"] == "invalid_url:bad_host"
    assert "port" in invalid["http://example.com:99999/"]
    assert u("/page/2?utm_source=x") not in rows  # normalised to /page/2

    # WARC files hold every fetched/redirected page exactly once, at the recorded offset
    recs = warc_records(out / "warc")
    responses = Counter(r["url"] for r in recs if r["type"] == "response")
    stored = {url for url, r in rows.items() if r["state"] in ("fetched", "redirected")}
    assert set(responses) == stored and set(responses.values()) == {1}
    assert {r["url"] for r in recs if r["type"] == "request"} == stored
    assert {r["url"] for r in recs if r["type"] == "metadata"} == stored
    huge = next(r for r in recs if r["type"] == "response" and r["url"] == u("/huge"))
    assert huge["truncated"] == "length"
    gz = next(r for r in recs if r["type"] == "response" and r["url"] == u("/gzip"))
    assert b"gzip-only-link" in gz["body"]  # warcio decodes Content-Encoding on read
    with open(out / "warc" / rows[u("/page/1")]["warc_file"], "rb") as fh:
        fh.seek(rows[u("/page/1")]["warc_offset"])
        rec = next(iter(ArchiveIterator(fh)))
        assert rec.rec_type == "response"
        assert rec.rec_headers.get_header("WARC-Target-URI") == u("/page/1")
    meta = next(r for r in recs if r["type"] == "metadata" and r["url"] == u("/page/1"))
    assert b"score: " in meta["body"] and b"category: " in meta["body"]
    assert b"depth: 1" in meta["body"] and b"canonical" not in meta["body"]
    # <link rel=canonical>: recorded (normalised) in the metadata record, and followed
    meta = next(r for r in recs if r["type"] == "metadata" and r["url"] == u("/canon"))
    assert f"canonical: {u('/canonical-target')}\r\n".encode() in meta["body"]
    assert rows[u("/canonical-target")]["state"] == "fetched"

    # summary: JSON file and the reprint from the frontier agree
    summary = load_summary(out)
    assert summary["fetched"] == result.fetched == sum(
        1 for r in rows.values() if r["state"] == "fetched")
    text = crawl_summary(out)
    assert f"{result.fetched} pages fetched" in text and "http_404" in text
    assert not list((out / "warc").glob(".*"))  # no temporary file left behind

    # the same --out again without --resume is refused (nothing overwritten)
    with pytest.raises(CrawlError, match="--resume"):
        run_crawl(CrawlConfig(out=out, seeds=[site.base + "/"], allow_private=True,
                              progress=False))


def test_per_host_delay_and_malformed_robots(tmp_path):
    # a robots.txt that is garbage apart from one rule protego can still read
    bad = LoggedSite(robots=b"<html>\x00\xff garbage\nDisallow /x\nUser-agent *\n::::\n"
                          b"User-agent: *\nDisallow: /private/\n", n_pages=6)
    other = LoggedSite(robots=None, n_pages=6)  # 404 robots.txt: everything allowed
    try:
        out = tmp_path / "c"
        run_crawl(CrawlConfig(out=out, seeds=[bad.base + "/page/0", other.base + "/page/0"],
                              allow_private=True, concurrency=4, per_host_delay=0.08,
                              include=(r"/page/",), progress=False))
        rows = frontier_rows(out)
        for s in (bad, other):
            times = [t for t, p in s.requests()]
            assert len(times) == 7  # robots.txt + 6 pages
            assert min(gaps(times)) >= 0.075, gaps(times)
            assert all(rows[f"{s.base}/page/{i}"]["state"] == "fetched" for i in range(6))
            assert rows[s.base + "/"]["reason"] == "not_included_pattern"
        # the two hosts were crawled in parallel: overall time ≈ one host's, not two
        first = min(bad.requests()[0][0], other.requests()[0][0])
        last = max(bad.requests()[-1][0], other.requests()[-1][0])
        assert last - first < 2 * 6 * 0.08
    finally:
        bad.close()
        other.close()


def test_retry_after_holds_the_host(tmp_path):
    a = LoggedSite(robots=None, n_pages=4)
    b = LoggedSite(robots=None, n_pages=4)
    try:
        out = tmp_path / "ra"
        run_crawl(CrawlConfig(
            out=out, seeds=[a.base + "/busy", a.base + "/page/0", b.base + "/ratelimited",
                            b.base + "/page/0"],
            allow_private=True, concurrency=4, per_host_delay=0.01, backoff=0.01, retries=2,
            max_retry_after=1.5, include=(r"/(page|busy|ratelimited)",), progress=False))
        rows = frontier_rows(out)
        # the 503 said "1 s": the retry waited that (not the 0.01 s back-off), and so did
        # every other request to that host — the server asked the host to slow down
        busy = a.requests("/busy")
        assert len(busy) == 2 and busy[1][0] - busy[0][0] >= 0.95
        after = [t for t, p in a.requests() if t > busy[0][0]]
        assert after and min(after) - busy[0][0] >= 0.95
        row = rows[a.base + "/busy"]
        assert (row["state"], row["attempts"], row["status"]) == ("fetched", 2, 200)
        assert all(rows[f"{a.base}/page/{i}"]["state"] == "fetched" for i in range(4))
        # 3600 s is over --max-retry-after: failed at once with the reason, not retried,
        # and the host was held for max_retry_after (1.5 s), not an hour
        row = rows[b.base + "/ratelimited"]
        assert row["state"] == "failed" and row["reason"] == "http_429:retry_after_too_long:3600s"
        limited = b.requests("/ratelimited")
        assert len(limited) == 1
        later = [t for t, p in b.requests() if t > limited[0][0]]
        assert later and min(later) - limited[0][0] >= 1.45
        assert all(rows[f"{b.base}/page/{i}"]["state"] == "fetched" for i in range(4))
    finally:
        a.close()
        b.close()


def test_unreachable_robots_txt_is_retried_then_disallows(tmp_path):
    flaky = LoggedSite(robots=b"User-agent: *\nDisallow: /private/\n", n_pages=4)
    flaky.robots_fail = 1  # one 503, then the real file
    down = LoggedSite(robots=None, n_pages=4)
    down.robots_fail = 10**6  # always 503
    try:
        out = tmp_path / "rb"
        run_crawl(CrawlConfig(out=out, seeds=[flaky.base + "/page/0", down.base + "/page/0"],
                              allow_private=True, per_host_delay=0.01, backoff=0.05, retries=2,
                              include=(r"/page/",), progress=False))
        rows = frontier_rows(out)
        # a transient 503 on robots.txt does not write the host off (RFC 9309: disallow
        # *until* it can be fetched): asked again, then the pages are crawled
        assert len(flaky.requests("/robots.txt")) == 2
        assert all(rows[f"{flaky.base}/page/{i}"]["state"] == "fetched" for i in range(4))
        assert rows[flaky.base + "/page/0"]["attempts"] == 2
        # a host whose robots.txt stays unreachable: asked 1 + retries times, no page
        # requested, the URL ends disallowed with the reason
        assert len(down.requests("/robots.txt")) == 3
        assert down.requests("/page/") == []
        row = rows[down.base + "/page/0"]
        assert (row["state"], row["reason"], row["attempts"]) == ("disallowed",
                                                                  "robots_http_503", 3)
    finally:
        flaky.close()
        down.close()


def test_sitemaps_from_robots_txt_find_unlinked_pages(tmp_path):
    site = LoggedSite(n_pages=2)
    site.robots = (f"User-agent: *\nDisallow: /private/\n"
                   f"Sitemap: {site.base}/sitemap_index.xml\n").encode()
    try:
        out = tmp_path / "sm"
        run_crawl(CrawlConfig(out=out, seeds=[site.base + "/page/0"], allow_private=True,
                              per_host_delay=0, exclude=(r"/(slow|huge|error|loop|chain)",),
                              progress=False))
        rows = frontier_rows(out)
        u = lambda p: site.base + p  # noqa: E731
        # pages no link reaches were found through the index → sitemap (plain and gzip)
        assert rows[u("/hidden/1")]["state"] == rows[u("/hidden/2")]["state"] == "fetched"
        assert rows[u("/hidden/1")]["depth"] == 1
        assert rows[u("/sitemap_index.xml")]["reason"] == "sitemap:index=4"
        assert rows[u("/sitemap-a.xml")]["reason"] == "sitemap:urls=3"
        assert rows[u("/sitemap-b.xml.gz")]["state"] == "sitemap"
        # bad input is recorded and the crawl goes on
        assert rows[u("/sitemap-broken.xml")]["state"] == "failed"
        assert rows[u("/sitemap-broken.xml")]["reason"] == "sitemap_not_a_sitemap:html"
        assert rows["http://example.com/sitemap.xml"]["state"] == "out_of_scope"
        assert rows["http://[bad"]["state"] == "invalid"
        # sitemaps are crawl control: in the frontier, not in the WARC files
        stored = {r["url"] for r in warc_records(out / "warc") if r["type"] == "response"}
        assert u("/hidden/1") in stored and not any("sitemap" in s for s in stored)
        assert len(site.requests("/sitemap_index.xml")) == 1

        out = tmp_path / "nosm"  # --no-sitemaps
        run_crawl(CrawlConfig(out=out, seeds=[site.base + "/page/0"], allow_private=True,
                              per_host_delay=0, include=(r"/page/",), sitemaps=False,
                              progress=False))
        assert not [p for p in frontier_rows(out) if "sitemap" in p or "hidden" in p]
    finally:
        site.close()


def test_category_budget_is_exact_with_concurrent_fetches(tmp_path):
    server, base = start_sample_server(access_log=io.StringIO())
    try:
        out = tmp_path / "bc"
        run_crawl(CrawlConfig(
            out=out, seeds=[base + f"shop/product-{i}.html" for i in range(12)],
            allow_private=True, concurrency=12, per_host_connections=12, per_host_delay=0,
            max_pages=40, category_budgets={"shop": 5}, include=(r"/shop/",), progress=False))
        rows = frontier_rows(out)
        fetched = Counter(r["category"] for r in rows.values() if r["state"] == "fetched")
        # 12 shop URLs could be in flight at once; the budget still holds exactly
        assert fetched["shop"] == 5, fetched
        assert sum(r["reason"] == "category_budget:shop" for r in rows.values()) >= 7
        assert not [r for r in rows.values() if r["state"] == "queued"]
    finally:
        server.shutdown()
        server.server_close()


def test_content_type_allow_list_is_configurable(site, tmp_path):
    out = tmp_path / "ct"
    run_crawl(CrawlConfig(out=out, seeds=[site.base + "/image.png", site.base + "/page/0"],
                          allow_private=True, per_host_delay=0, content_types=("image/png",),
                          include=(r"/(page|image)",), progress=False))
    rows = frontier_rows(out)
    png, page = rows[site.base + "/image.png"], rows[site.base + "/page/0"]
    assert (png["state"], png["content_type"], png["category"]) == ("fetched", "image/png",
                                                                    "other")
    assert (page["state"], page["reason"]) == ("skipped", "content_type:text/html")
    recs = [r for r in warc_records(out / "warc") if r["type"] == "response"]
    assert [r["url"] for r in recs] == [site.base + "/image.png"]
    assert recs[0]["body"].startswith(b"\x89PNG")
    with pytest.raises(CrawlError, match="not a MIME type"):
        CrawlConfig(out=out, content_types=("html",))


def test_a_scorer_with_only_score_still_works(site, tmp_path):
    """The PageScorer contract is ``score(url, html_text)``; ``score_document`` is optional."""

    class Custom:
        def __init__(self):
            self.seen = []

        def score(self, url, html_text):
            self.seen.append((url, html_text))
            return 0.42, "custom"

    scorer = Custom()
    out = tmp_path / "sc"
    run_crawl(CrawlConfig(out=out, seeds=[site.base + "/page/0"], allow_private=True,
                          per_host_delay=0, include=(r"/page/",), progress=False), scorer)
    rows = [r for r in frontier_rows(out).values() if r["state"] == "fetched"]
    assert len(rows) == 8 and {(r["score"], r["category"]) for r in rows} == {(0.42, "custom")}
    assert all("<h1>page " in html for _, html in scorer.seen)


def test_crawl_cli_defaults_match_the_crawler():
    from stepcrawl.commands.crawl import DEFAULT_CONTENT_TYPES
    from stepcrawl.crawl.fetcher import KEPT_TYPES

    assert DEFAULT_CONTENT_TYPES.split(",") == list(KEPT_TYPES)
    assert CrawlConfig(out=Path("x")).content_types == tuple(KEPT_TYPES)


def test_private_addresses_refused_by_default(site, tmp_path):
    out = tmp_path / "p"
    result = run_crawl(CrawlConfig(out=out, seeds=[site.base + "/",
                                                   f"http://localhost:{site.port}/page/1"],
                                   per_host_delay=0, progress=False))
    rows = frontier_rows(out)
    assert result.fetched == 0
    assert rows[site.base + "/"]["reason"] == "private_address:127.0.0.1"
    assert rows[f"http://localhost:{site.port}/page/1"]["reason"].startswith("private_address")
    assert site.requests() == []  # not even robots.txt was requested


async def _resolve(host):
    return await GuardedResolver(allow_private=False).resolve(host, 80)


def test_guarded_resolver_refuses_names_resolving_to_loopback():
    import asyncio

    with pytest.raises(PrivateAddressError):
        asyncio.run(_resolve("localhost"))


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    site = LoggedSite(robots=b"User-agent: *\nDisallow: /private/\n", n_pages=120,
                    page_bytes=3000)
    try:
        out = tmp_path / "r"
        cmd = [sys.executable, "-m", "stepcrawl", "crawl", "--seed", f"{site.base}/page/0",
               "--out", str(out), "--allow-private", "--per-host-delay", "0.005",
               "--warc-max-bytes", "6000", "--no-progress", "--include", "/page/",
               "--max-depth", "500", "--concurrency", "4"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if len(site.requests("/page/")) >= 50:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(site.requests("/page/")) < 120, "crawl finished before it was killed"
        # what was safely stored before the kill: pages in completed WARC files
        before = {r["url"] for r in warc_records(out / "warc") if r["type"] == "response"}
        assert before, "no WARC file completed before the kill"
        n_logged = len(site.requests("/page/"))
        # the window the resume logic exists for: rows committed as fetched whose records sit
        # in the WARC file that was still open (and is now a discarded .open leftover)
        stale = [r for r in frontier_rows(out).values()
                 if r["state"] == "fetched" and r["url"] not in before]
        assert stale and list((out / "warc").glob(".*.open"))

        subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        recs = [r for r in warc_records(out / "warc") if r["type"] == "response"]
        counts = Counter(r["url"] for r in recs)
        expected = {f"{site.base}/page/{i}" for i in range(120)}
        assert set(counts) == expected  # nothing lost
        assert set(counts.values()) == {1}  # nothing twice
        rows = frontier_rows(out)
        assert all(rows[url]["state"] == "fetched" for url in expected)
        assert not [r for r in rows.values() if r["state"] == "queued"]
        # pages stored before the kill were not requested again after it
        after = Counter(p for _, p in site.requests("/page/")[n_logged:])
        assert not {f"{site.base}{p}" for p in after} & before
        assert not list((out / "warc").glob(".*"))
    finally:
        site.close()


def test_crawl_order_is_deterministic(tmp_path):
    site = LoggedSite(robots=None, n_pages=10)
    try:
        orders = []
        for k in range(2):
            out = tmp_path / f"d{k}"
            run_crawl(CrawlConfig(out=out, seeds=[site.base + "/"], allow_private=True,
                                  concurrency=1, per_host_delay=0, timeout=0.3, retries=0,
                                  exclude=(r"/slow",), progress=False))
            db = sqlite3.connect(str(out / "frontier.sqlite"))
            orders.append([r[0].split("/", 3)[3] for r in db.execute(
                "SELECT url FROM urls WHERE fetched_at IS NOT NULL ORDER BY fetched_at")])
            db.close()
        assert orders[0] == orders[1] and len(orders[0]) > 10
    finally:
        site.close()


def test_sample_site_crawl_priorities_and_budgets(tmp_path):
    log = io.StringIO()
    server, base = start_sample_server(access_log=log)
    try:
        # (a) the real sample site, limited: the pure priority order (--no-spread) spends the
        # page budget on documentation before the shop/SEO link farms linked from the same
        # index page (the default spread order first visits every section once, shop and SEO
        # included: tests/test_crawl_breadth.py)
        out = tmp_path / "s"
        result = run_crawl(CrawlConfig(
            out=out, seeds=[base], allow_private=True, concurrency=4, per_host_connections=4,
            per_host_delay=0, max_pages=150, min_expand_score=0.1, progress=False,
            spread=False))
        assert result.fetched == 150
        rows = frontier_rows(out)
        fetched = {u: r for u, r in rows.items() if r["state"] == "fetched"}
        cats = Counter(r["category"] for r in fetched.values())
        assert cats["docs"] >= 140 and cats["shop"] == 0, cats
        assert "/private/" not in log.getvalue()
        recs = [r for r in warc_records(out / "warc") if r["type"] == "response"]
        assert {r["url"] for r in recs} == set(fetched)

        # (b) a per-category budget stops the shop from eating the crawl, and low-scoring
        # pages are stored but not expanded
        out = tmp_path / "b"
        run_crawl(CrawlConfig(
            out=out, seeds=[base + "shop/product-0.html", base + "seo/page-0.html"],
            allow_private=True, concurrency=1, per_host_delay=0, max_pages=30,
            category_budgets={"shop": 5}, min_expand_score=0.0, progress=False))
        rows = frontier_rows(out)
        fetched = [r for r in rows.values() if r["state"] == "fetched"]
        assert Counter(r["category"] for r in fetched)["shop"] == 5
        assert sum(r["reason"] == "category_budget:shop" for r in rows.values()) >= 10
        out = tmp_path / "m"
        run_crawl(CrawlConfig(out=out, seeds=[base + "seo/page-0.html"], allow_private=True,
                              per_host_delay=0, min_expand_score=0.1, progress=False))
        rows = frontier_rows(out)
        assert [r["reason"] for r in rows.values() if r["state"] == "fetched"] == [
            "not_expanded:low_score"]
        assert len(rows) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_serve_sample_cli_and_crawl_cli_errors(tmp_path):
    import urllib.request

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    url_file, log = tmp_path / "url.txt", tmp_path / "access.log"
    proc = subprocess.Popen([sys.executable, "-m", "stepcrawl", "serve-sample", "--port", "0",
                             "--url-file", str(url_file), "--access-log", str(log)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        base = url_file.read_text().strip()
        robots = urllib.request.urlopen(base + "robots.txt", timeout=5).read()
        assert b"Disallow: /private/" in robots
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "no-such-page", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert '"GET /robots.txt HTTP/1.1" 200' in log.read_text()
    assert '"GET /no-such-page HTTP/1.1" 404' in log.read_text()

    bad = subprocess.run([sys.executable, "-m", "stepcrawl", "crawl", "--out",
                          str(tmp_path / "x")], cwd=REPO, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--seeds FILE or --seed URL" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "stepcrawl", "crawl", "--out",
                          str(tmp_path / "x"), "--seed", "http://example.com/",
                          "--category-budget", "shop"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "CATEGORY=N" in bad.stderr
