"""WARC/ARC reading: resynchronisation after damage (no good record lost), ARC, whole-stream
gzip, crawler-log records, record-range work units, the content-decoding cap (a bomb test
that bounds its own memory) and a fuzz test over the reader.

WARCs are written here with warcio (an outside implementation); one fixture was written by GNU
Wget (tests/fixtures/warc/README.md)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from stepcrawl.document import Document
from stepcrawl.extract import ExtractConfig, extract_record, iter_warc_documents, record_doc_id
from stepcrawl.readers.content import DecodedTooLarge, decode_body
from stepcrawl.readers.warc import DAMAGED, NON_CONTENT, RawRecord, iter_warc_records, split_points
from stepcrawl.steps import Drop

FIXTURES = Path(__file__).parent / "fixtures" / "warc"
DATE = "2026-01-02T03:04:05Z"


def page(i: int) -> bytes:
    return (f"<html><head><title>Page {i}</title></head><body><article><p>Page number {i} talks about "
            f"archives and the records crawlers write, sentence {i}.</p><p>" + "More words here. " * 8 +
            "</p></article></body></html>").encode()


def record_bytes(i: int, gz: bool = True, body: bytes | None = None, headers: list | None = None,
                 with_request: bool = False) -> bytes:
    """One response record (optionally preceded by its request) as its own bytes."""
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    url = f"http://site.test/{i}"
    if with_request:
        req = w.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                   http_headers=StatusAndHeaders(f"GET /{i} HTTP/1.1", [("Host", "site.test")], is_http_request=True))
        w.write_record(req)
    body = page(i) if body is None else body
    http = StatusAndHeaders("200 OK", headers or [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
    w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
                                        warc_headers_dict={"WARC-Date": DATE, "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>"}))
    return buf.getvalue()


def warcinfo(gz: bool = True) -> bytes:
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("t.warc", {"software": "stepcrawl-tests"}))
    return buf.getvalue()


def build(n: int = 20, gz: bool = True) -> tuple[bytes, list[bytes], list[int]]:
    """(file bytes, the records' bytes, their offsets): a warcinfo then n response records."""
    recs = [warcinfo(gz)] + [record_bytes(i, gz) for i in range(n)]
    offsets, pos = [], 0
    for r in recs:
        offsets.append(pos)
        pos += len(r)
    return b"".join(recs), recs[1:], offsets[1:]


def set_length(rec: bytes, delta: int, gz: bool) -> bytes:
    raw = gzip.decompress(rec) if gz else rec
    i = raw.index(b"Content-Length: ") + len(b"Content-Length: ")
    j = raw.index(b"\r\n", i)
    raw = raw[:i] + str(int(raw[i:j]) + delta).encode() + raw[j:]
    return gzip.compress(raw) if gz else raw


def read(data: bytes, name: str = "t.warc.gz", **kw) -> list[RawRecord]:
    return list(iter_warc_records(io.BytesIO(data), warc_name=name, **kw))


def good_urls(records: list[RawRecord]) -> list[str]:
    return [r.url for r in records if not r.drop_reason]


def damaged(records: list[RawRecord]) -> list[tuple[int, int]]:
    return [(r.offset, r.end) for r in records if r.drop_reason == DAMAGED]


URLS = [f"http://site.test/{i}" for i in range(20)]
GARBAGE = b"\x00garbage\xff" * 20


def faults(gz: bool) -> dict[str, tuple[bytes, list[str], tuple[int, int]]]:
    """name → (damaged file, the URLs that must survive, the damaged byte range expected).
    Record 10 (of 20) is the bad one; every other record must be read."""
    data, recs, offs = build(20, gz)
    a, b = offs[10], offs[11]
    head, tail = data[:a], data[b:]
    other = record_bytes(10, not gz)
    cases = {
        "garbage-between-records": (head + recs[10] + GARBAGE + tail, URLS, (b, b + len(GARBAGE))),
        # gzip: zeros inside the deflate data; uncompressed: over the WARC/1.0 version line
        "corrupt-member": (head + (recs[10][:30] + b"\x00" * 40 + recs[10][70:] if gz else b"\x00" * 40 + recs[10][40:]) + tail,
                           URLS[:10] + URLS[11:], (a, b)),
        "content-length-too-big": (head + set_length(recs[10], 60, gz) + tail, URLS[:10] + URLS[11:], None),
        "content-length-too-small": (head + set_length(recs[10], -60, gz) + tail, URLS[:10] + URLS[11:], None),
        "truncated-member": (head + recs[10][: len(recs[10]) // 2] + tail, URLS[:10] + URLS[11:], (a, a + len(recs[10]) // 2)),
        "other-compression-member": (head + other + tail, URLS, None),  # an uncompressed member among gzip ones (or the reverse)
        "file-cut-short": (data[: a + len(recs[10]) // 2], URLS[:10], (a, a + len(recs[10]) // 2)),
    }
    return cases


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("fault", ["garbage-between-records", "corrupt-member", "content-length-too-big",
                                   "content-length-too-small", "truncated-member", "other-compression-member",
                                   "file-cut-short"])
@pytest.mark.parametrize("engine", ["fastwarc", "resync"])
def test_one_bad_record_loses_no_good_record(fault, gz, engine):
    data, expected, span = faults(gz)[fault]
    records = read(data, engine=engine)
    if engine == "fastwarc":
        assert records == read(data, engine="resync")  # same records, offsets, spans either way
    assert good_urls(records) == expected  # every good record, in order
    spans = damaged(records)
    if fault == "other-compression-member":
        assert spans == []  # an uncompressed record among gzip members is a good record
        return
    assert len(spans) == 1
    if span is not None:
        assert spans[0] == span
    start, end = spans[0]
    assert 0 < start < end <= len(data)
    # every byte is accounted for: good records and the damaged span tile the file
    covered = sorted((r.offset, r.end) for r in records)
    assert all(x[1] <= y[0] for x, y in zip(covered, covered[1:]))
    # the payloads of the survivors are intact
    clean = {r.url: r.payload for r in read(build(20, gz)[0])}
    assert all(r.payload == clean[r.url] for r in records if not r.drop_reason)


def test_fastwarc_reads_clean_files_and_hands_over_at_damage(monkeypatch):
    """On a clean file FastWARC reads every record (the resynchronising reader only re-checks
    the last one); on a damaged file it hands over at the damaged record."""
    import stepcrawl.readers.warc as reader

    starts: list[int] = []
    scan = reader._scan

    def spy(fh, start, end, ctx):
        starts.append(start)
        yield from scan(fh, start, end, ctx)

    monkeypatch.setattr(reader, "_scan", spy)
    data, _, offs = build(20)
    assert good_urls(read(data)) == URLS and starts == [offs[-1]]
    starts.clear()
    bad, _, _ = faults(True)["corrupt-member"]
    records = read(bad)
    assert good_urls(records) == URLS[:10] + URLS[11:]
    assert starts == [records[9].offset]  # record 9 is confirmed only by a good record 10


def test_damage_is_counted_and_reported_with_byte_ranges_by_the_extract_stage(tmp_path):
    """Through ``stepcrawl extract``: in = out + drops, warc:damaged counted, the manifest lists
    each span (file, offset, end, bytes) and sums the skipped bytes; the survivors' ids are
    those of a clean read."""
    from stepcrawl.curate import run_single_stage
    from stepcrawl.io import read_documents

    data, expected, _ = faults(True)["corrupt-member"]
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "bad.warc.gz").write_bytes(data)
    m = run_single_stage([crawl], tmp_path / "out", "extract", [], {}, extract=ExtractConfig(), progress=False,
                         keep_rejected=True).to_dict()
    assert m["docs_in"] == 20 and m["docs_out"] == 19 and m["drops"] == {DAMAGED: 1}
    (err,) = m["extra"]["errors"]
    assert err["file"].endswith("bad.warc.gz") and err["end"] - err["offset"] == err["bytes"] > 0
    assert err["reason"] == DAMAGED and f"offset {err['offset']}" in err["error"]
    assert m["extra"]["damaged_bytes"] == err["bytes"]
    # --keep-rejected: the span is written as a provenance stub with its byte range
    import pyarrow.parquet as pq

    rej = [r for f in sorted((tmp_path / "out" / "rejected").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert [(r["drop_reason"], r["warc_offset"], json.loads(r["meta"])["span_end"]) for r in rej] == [
        (DAMAGED, err["offset"], err["end"])]
    ids = sorted(d.id for d in read_documents(tmp_path / "out"))
    assert ids == sorted(record_doc_id(f"<urn:uuid:00000000-0000-0000-0000-{i:012d}>") for i in range(20) if i != 10)


def test_wget_written_warc():
    """GNU Wget's WARC: its pages are documents; its log/arguments/manifest records are
    counted as warc:non-content, never documents."""
    path = FIXTURES / "wget-loopback.warc.gz"
    results = list(iter_warc_documents(path))
    docs = [r for r in results if isinstance(r, Document)]
    assert sorted(d.url for d in docs) == ["http://127.0.0.1:8765/about.html", "http://127.0.0.1:8765/index.html",
                                           "http://127.0.0.1:8765/notes.txt"]
    assert results.count(Drop(NON_CONTENT)) == 3
    index = next(d for d in docs if d.url.endswith("index.html"))
    assert "archived with wget" in index.text and index.meta["title"] == "Loopback test site"
    logs = [r for r in iter_warc_records(path) if r.drop_reason == NON_CONTENT]
    assert {r.url.rsplit("/", 1)[1] for r in logs} == {"MANIFEST.txt", "wget_arguments.txt", "wget.log"}
    # offsets point at records warcio reads back
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as fh:
        fh.seek(index.warc_offset)
        assert next(iter(ArchiveIterator(fh))).rec_headers.get_header("WARC-Target-URI") == index.url


def arc_bytes(pages: list[tuple[str, bytes]], gz: bool) -> bytes:
    """An ARC v1 file (the published Internet Archive format): filedesc header, then one
    ``URL IP date type length`` line + HTTP message per record."""
    desc = b"1 0 StepCrawl tests\nURL IP-address Archive-date Content-type Archive-length\n"
    parts = [b"filedesc://t.arc 0.0.0.0 20260102030405 text/plain %d\n" % len(desc) + desc + b"\n"]
    for url, body in pages:
        http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        parts.append(f"{url} 127.0.0.1 20260102030405 text/html {len(http)}\n".encode() + http + b"\n")
    return b"".join(gzip.compress(p) for p in parts) if gz else b"".join(parts)


@pytest.mark.parametrize("gz", [True, False], ids=["arc.gz", "arc"])
def test_arc_files_are_read_in_folders_and_by_name(tmp_path, gz):
    from stepcrawl.curate import discover_units

    pages = [(f"http://arc.test/{i}", page(i)) for i in range(3)]
    name = "old.arc.gz" if gz else "old.arc"
    (tmp_path / "crawl").mkdir()
    path = tmp_path / "crawl" / name
    path.write_bytes(arc_bytes(pages, gz))
    assert [u.kind for u in discover_units([tmp_path / "crawl"])] == ["warc"]  # found in a folder
    assert [u.kind for u in discover_units([path])] == ["warc"]  # never read as JSONL
    docs = list(iter_warc_documents(path))
    assert [d.url for d in docs] == [u for u, _ in pages] and all(isinstance(d, Document) for d in docs)
    assert "Page number 1 talks" in docs[1].text and docs[1].fetched_at == DATE
    assert [d.id for d in docs] == [d.id for d in iter_warc_documents(path)]  # stable ids (no random record ids)


def test_whole_stream_gzip_warc_is_read():
    data, _, _ = build(5, gz=False)
    records = read(gzip.compress(data))
    assert good_urls(records) == URLS[:5] and damaged(records) == []


def test_record_ranges_read_exactly_what_one_reader_reads(tmp_path):
    """Split points are valid record starts; the ranges together give the one-reader records,
    damaged spans included, whatever the split size."""
    data, _, _ = faults(True)["corrupt-member"]
    path = tmp_path / "big.warc.gz"
    path.write_bytes(data + faults(True)["garbage-between-records"][0][len(warcinfo()):])
    whole = list(iter_warc_records(path))
    for target in (300, 1000, 2500):
        points = split_points(path, target)
        assert len(points) > 2 and points[0] == 0
        parts = []
        for s, e in zip(points, points[1:] + [None]):
            parts += list(iter_warc_records(path, start=s, end=e))
        assert parts == whole
    assert split_points(path, 0) == [0] and split_points(path, 10**9) == [0]


def test_record_range_units_give_the_one_unit_output_and_resume(tmp_path):
    from stepcrawl.curate import run_single_stage
    from stepcrawl.io import read_documents

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "a.warc.gz").write_bytes(faults(True)["content-length-too-small"][0])

    def run(out, split, workers=1):
        m = run_single_stage([crawl], out, "extract", [], {}, extract=ExtractConfig(), progress=False, split_bytes=split,
                             workers=workers)
        docs = [(d.id, d.text, d.warc_file, d.warc_offset) for d in read_documents(out)]
        return m.to_dict(), docs

    one, docs_one = run(tmp_path / "one", 0)
    split, docs_split = run(tmp_path / "split", 2000, workers=2)
    assert split["extra"]["units"] > 2 and one["extra"]["units"] == 1
    assert docs_split == docs_one  # same ids, texts, provenance, order
    for k in ("docs_in", "docs_out", "drops", "chars_in", "chars_out"):
        assert split[k] == one[k]
    assert [(e["offset"], e["end"]) for e in split["extra"]["errors"]] == [(e["offset"], e["end"]) for e in one["extra"]["errors"]]
    # resume: a unit without its done marker is redone, the others are skipped
    units = sorted(p for p in (tmp_path / "split").iterdir() if p.name.startswith("a.warc.gz.bytes-"))
    keep = units[0] / "_manifest.json"
    before = keep.stat().st_mtime_ns
    (units[1] / "_manifest.json").unlink()
    again, docs_again = run(tmp_path / "split", 2000)
    assert docs_again == docs_one and keep.stat().st_mtime_ns == before
    assert again["docs_in"] == one["docs_in"]


# ---------------------------------------------------------------------------------- bombs


def test_decode_body_caps_output():
    body = gzip.compress(b"x" * 5_000_000)
    assert decode_body(body, "gzip", "", 5_000_000) == b"x" * 5_000_000
    with pytest.raises(DecodedTooLarge):
        decode_body(body, "gzip", "", 1_000_000)
    with pytest.raises(DecodedTooLarge):
        decode_body(zlib.compress(b"y" * 3_000_000), "deflate", "", 1_000_000)
    brotli = pytest.importorskip("brotli")

    assert decode_body(brotli.compress(b"z" * 1000), "br", "", 2000) == b"z" * 1000
    with pytest.raises(DecodedTooLarge):
        decode_body(brotli.compress(b"z" * 3_000_000), "br", "", 1_000_000)
    # multi-member gzip (what a bomb made of small members looks like) is inflated member by member
    assert decode_body(gzip.compress(b"a") + gzip.compress(b"b"), "gzip", "", 10) == b"ab"
    # a body under a wrong coding header is read as is (as warcio does)
    assert decode_body(b"<html>plain</html>", "gzip", "", 100) == b"<html>plain</html>"
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert decode_body(chunked, "", "chunked", 100) == b"hello world"


def test_content_encoding_is_decoded_and_bombs_are_dropped():
    html = page(1)
    raw = RawRecord("t.warc.gz", 0, "<urn:uuid:1>", "http://t.test/", DATE, 200, "text/html", gzip.compress(html),
                    content_encoding="gzip")
    doc = extract_record(raw)
    assert isinstance(doc, Document) and "Page number 1 talks" in doc.text
    bomb = RawRecord("t.warc.gz", 0, "<urn:uuid:2>", "http://t.test/b", DATE, 200, "text/html",
                     gzip.compress(b"<html>" + b" " * 30_000_000), content_encoding="gzip")
    assert extract_record(bomb) == Drop("extract:decompressed-too-large")
    # inflated within a larger budget, the 30 MB page is still above the page-size limit …
    assert extract_record(bomb, ExtractConfig(max_decoded_bytes=40_000_000)) == Drop("extract:too-large")
    # … and within both, it is extracted (to nothing: it is all spaces)
    assert extract_record(bomb, ExtractConfig(max_decoded_bytes=40_000_000, max_html_bytes=40_000_000)) == Drop("extract:empty")
    corrupt = RawRecord("t.warc.gz", 0, "<urn:uuid:3>", "http://t.test/c", DATE, 200, "text/html",
                        gzip.compress(html)[:20] + b"\x00" * 50, content_encoding="gzip")
    assert extract_record(corrupt) == Drop("extract:bad-content-encoding")


def _bomb_member(n_members: int) -> bytes:
    """A gzip Content-Encoding body of n × 16 MiB of zeros (multi-member: quick to build)."""
    one = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return one * n_members


@pytest.mark.timeout(120)
def test_a_3_gib_gzip_bomb_in_a_warc_is_dropped_under_a_memory_limit(tmp_path):
    """A small WARC whose one record inflates to 3 GiB, curated (extract) in a subprocess
    limited to 1.5 GiB of address space: the bomb is counted as
    extract:decompressed-too-large, its neighbours are kept, nothing runs out of memory."""
    bomb = _bomb_member(192)  # 192 × 16 MiB = 3 GiB decoded, ~3 MB stored
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    (crawl / "bomb.warc.gz").write_bytes(
        warcinfo() + record_bytes(0) +
        record_bytes(1, body=bomb, headers=[("Content-Type", "text/html"), ("Content-Encoding", "gzip")]) +
        record_bytes(2))
    code = textwrap.dedent(f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, ({3 << 29}, {3 << 29}))
        from stepcrawl.curate import run_single_stage
        from stepcrawl.extract import ExtractConfig
        m = run_single_stage([{str(crawl)!r}], {str(tmp_path / 'out')!r}, "extract", [], {{}}, extract=ExtractConfig(), progress=False)
        print(json.dumps(m.to_dict()))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["drops"] == {"extract:decompressed-too-large": 1} and m["docs_out"] == 2


def test_payloads_are_capped_per_record():
    big = b"<html><body><p>" + b"word " * 400_000 + b"</p></body></html>"  # 2 MB
    data = warcinfo() + record_bytes(0, body=big) + record_bytes(1)
    records = read(data, max_payload=100_000)
    assert [len(r.payload) for r in records] == [100_000, len(page(1))]
    assert records[0].full_body_bytes == len(big)
    # a payload capped by the reader is never extracted as a page: the full size decides
    assert extract_record(records[0], ExtractConfig(max_html_bytes=50_000)).reason == "extract:too-large"


def test_crawler_refuses_to_store_a_compression_bomb():
    """fetch() against a loopback server that serves a 512 MiB gzip bomb: the fetch fails with
    decompressed_too_large and no body is kept (so nothing reaches the WARC)."""
    import asyncio
    import http.server
    import threading

    from stepcrawl.crawl.fetcher import fetch, make_session

    bomb = _bomb_member(32)  # 512 MiB decoded, ~0.5 MB on the wire

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = bomb if self.path == "/bomb" else gzip.compress(page(1))
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def go():
        async with make_session(2, 2, True, "test") as session:
            return (await fetch(session, base + "/bomb", timeout=30, max_bytes=5 << 20),
                    await fetch(session, base + "/ok", timeout=30, max_bytes=5 << 20))

    try:
        bad, ok = asyncio.run(go())
    finally:
        server.shutdown()
    assert bad.error == "decompressed_too_large" and bad.body == b""
    assert ok.error is None and gzip.decompress(ok.body) == page(1)


# ---------------------------------------------------------------------------------- Beam


def test_beam_reader_gives_the_local_records_and_reports_spans(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from beam_pipelines.io import ReadWarcFile, iter_warc_records_any

    path = tmp_path / "bad.warc.gz"
    path.write_bytes(faults(True)["truncated-member"][0])
    local = list(iter_warc_records(path))
    assert list(iter_warc_records_any(str(path))) == local
    spans = [(r.offset, r.end) for r in local if r.drop_reason == DAMAGED]
    with beam.Pipeline("DirectRunner") as p:
        out = p | beam.Create([str(path)]) | beam.ParDo(ReadWarcFile()).with_outputs(ReadWarcFile.DAMAGED, main="records")
        assert_that(out.records | "Ids" >> beam.Map(lambda r: (r.offset, r.url, r.drop_reason)),
                    equal_to([(r.offset, r.url, r.drop_reason) for r in local]), label="records")
        assert_that(out[ReadWarcFile.DAMAGED] | beam.Map(lambda e: (e["offset"], e["end"])), equal_to(spans), label="spans")


# ---------------------------------------------------------------------------------- fuzz

_FUZZ_GZ, _FUZZ_RECS_GZ, _FUZZ_OFFS_GZ = build(8, True)
_FUZZ_PLAIN, _FUZZ_RECS_PLAIN, _FUZZ_OFFS_PLAIN = build(8, False)


@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(gz=st.booleans(), op=st.sampled_from(["flip", "delete", "insert", "truncate", "replace"]),
       where=st.floats(0, 1), size=st.integers(1, 400), filler=st.binary(min_size=1, max_size=64))
def test_fuzz_reader_never_loses_an_untouched_record(gz, op, where, size, filler):
    """One random corruption of a good WARC: neither reader engine hangs or raises; every
    record whose bytes were not touched comes back with its offset and payload; damaged spans
    and records never overlap (each input byte is accounted for once); FastWARC and the
    resynchronising reader give the same untouched records."""
    data, recs, offs = (_FUZZ_GZ, _FUZZ_RECS_GZ, _FUZZ_OFFS_GZ) if gz else (_FUZZ_PLAIN, _FUZZ_RECS_PLAIN, _FUZZ_OFFS_PLAIN)
    a = int(where * (len(data) - 1))
    b = min(len(data), a + size)
    if op == "flip":
        new = bytes(x ^ 0xFF for x in data[a:b])
    elif op == "delete":
        new = b""
    elif op == "insert":
        b, new = a, (filler * (size // len(filler) + 1))[:size]
    elif op == "truncate":
        b, new = len(data), b""
    else:
        new = (filler * (size // len(filler) + 1))[: b - a]
    corrupted = data[:a] + new + data[b:]
    delta = len(new) - (b - a)
    records = read(corrupted, engine="resync")
    fast = read(corrupted, engine="fastwarc")
    _check_fuzzed(records, data, recs, offs, a, b, delta)
    _check_fuzzed(fast, data, recs, offs, a, b, delta)
    untouched = {f"http://site.test/{i}" for i, (rec, off) in enumerate(zip(recs, offs))
                 if not _touched(off, off + len(rec), a, b)}
    assert [r for r in fast if r.url in untouched] == [r for r in records if r.url in untouched]  # same ids either way


def _touched(off: int, end: int, a: int, b: int) -> bool:
    return (a < end and b > off) if b > a else off < a < end


def _check_fuzzed(records, data, recs, offs, a, b, delta):
    spans = sorted((r.offset, r.end) for r in records)
    assert all(x[1] <= y[0] or x[0] == y[0] == 0 for x, y in zip(spans, spans[1:]))
    got = {r.url: (r.offset, r.payload) for r in records if not r.drop_reason}
    for i, (rec, off) in enumerate(zip(recs, offs)):
        end = off + len(rec)
        if _touched(off, end, a, b):
            continue
        shift = delta if off >= b else 0
        assert f"http://site.test/{i}" in got, (a, b, i)
        assert got[f"http://site.test/{i}"][0] == off + shift
    clean = {r.url: r.payload for r in read(data)}
    for i, (rec, off) in enumerate(zip(recs, offs)):
        if not _touched(off, off + len(rec), a, b):
            assert got[f"http://site.test/{i}"][1] == clean[f"http://site.test/{i}"]


def test_cli_flags_split_and_cap(tmp_path, capsys):
    """``stepcrawl extract --warc-split-bytes --workers --max-decoded-bytes``: split units, the
    one-unit documents, the cap applied."""
    from stepcrawl.cli import main
    from stepcrawl.io import read_documents

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    zipped = gzip.compress(page(99) * 200)  # ~60 KB of HTML, gzip Content-Encoding
    (crawl / "a.warc.gz").write_bytes(build(12)[0] + record_bytes(99, body=zipped, headers=[
        ("Content-Type", "text/html"), ("Content-Encoding", "gzip")]))
    assert main(["extract", str(crawl), "--out", str(tmp_path / "one"), "--no-progress", "--warc-split-bytes", "0"]) == 0
    assert main(["extract", str(crawl), "--out", str(tmp_path / "split"), "--no-progress", "--warc-split-bytes", "1500",
                 "--workers", "2", "--max-decoded-bytes", "50000"]) == 0
    one = json.loads((tmp_path / "one" / "_manifest.json").read_text())
    split = json.loads((tmp_path / "split" / "_manifest.json").read_text())
    assert one["docs_out"] == 13 and split["extra"]["units"] > 2
    assert split["drops"] == {"extract:decompressed-too-large": 1} and split["docs_out"] == 12
    assert [d.id for d in read_documents(tmp_path / "split")] == [d.id for d in read_documents(tmp_path / "one")][:12]
