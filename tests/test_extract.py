"""Extraction from real WARC files (built here with warcio) of real HTML pages (tests/fixtures/curate)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from stepcrawl.document import Document
from stepcrawl.extract import (
    ExtractConfig,
    RawRecord,
    WarcReadError,
    decode_html,
    extract_record,
    iter_warc_documents,
    iter_warc_records,
)
from stepcrawl.steps import Drop

DATA = Path(__file__).parent / "fixtures" / "curate" / "html"
DATE = "2026-01-02T03:04:05Z"


def make_warc(path: Path, pages: list[tuple], gz: bool = True) -> Path:
    """pages: (url, body bytes, content type[, status]). Also writes a request record per page,
    as real crawlers do, to check that only responses become documents."""
    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=gz)
        w.write_record(w.create_warcinfo_record(path.name, {"software": "stepcrawl-tests"}))
        for page in pages:
            url, body, ctype = page[:3]
            status = page[3] if len(page) > 3 else 200
            req = w.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                       http_headers=StatusAndHeaders(f"GET {url} HTTP/1.1", [("Host", "x")], is_http_request=True))
            w.write_record(req)
            http = StatusAndHeaders(f"{status} X", [("Content-Type", ctype)], protocol="HTTP/1.1")
            rec = w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http, warc_headers_dict={"WARC-Date": DATE})
            w.write_record(rec)
    return path


def real_pages() -> list[tuple]:
    return [(f"http://docs.test/{f.name}", f.read_bytes(), "text/html; charset=utf-8") for f in sorted(DATA.glob("*.html"))]


def raw(body: bytes, ctype: str = "text/html", status: int | None = 200, url: str = "http://t.test/p") -> RawRecord:
    return RawRecord("t.warc.gz", 0, "<urn:uuid:1>", url, DATE, status, ctype, body)


def test_real_pages_extract_with_provenance(tmp_path):
    warc = make_warc(tmp_path / "a.warc.gz", real_pages())
    results = list(iter_warc_documents(warc))
    docs = [r for r in results if isinstance(r, Document)]
    assert len(results) == len(docs) == len(real_pages())  # requests/warcinfo are not documents
    by_url = {d.url: d for d in docs}
    copy = by_url["http://docs.test/py-copy.html"]
    assert "deepcopy" in copy.text and copy.meta["title"].startswith("copy")
    # main content only: the Python docs' navigation/footer boilerplate is gone
    assert "Navigation" not in copy.text and "Found a bug?" not in copy.text
    assert "Debian" in by_url["http://docs.test/debref-pr01.en.html"].text
    offsets = [d.warc_offset for d in docs]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert all(d.warc_file == "a.warc.gz" and d.fetched_at == DATE and d.kind == "web" for d in docs)
    # the offset points at the record: warcio reads it back from there
    from warcio.archiveiterator import ArchiveIterator

    with open(warc, "rb") as fh:
        fh.seek(copy.warc_offset)
        rec = next(iter(ArchiveIterator(fh)))
        assert rec.rec_headers.get_header("WARC-Target-URI") == copy.url
    # ids are stable: a second read gives the same ids
    assert [d.id for d in docs] == [r.id for r in iter_warc_documents(warc)]


def test_broken_markup_still_extracts():
    body = ("<html><head><title>Broken page</title><body><div><p>" + "This paragraph is never closed and the markup is broken. " * 8
            + "<p><b>Bold <i>nested wrongly</b></i> and <table><tr><td>cell" + "<div>").encode()
    doc = extract_record(raw(body))
    assert isinstance(doc, Document) and "never closed" in doc.text


def test_wrong_and_missing_charsets():
    text = "Le café est prêt, déjà servi à côté de la crème brûlée. " * 10
    page = f"<html><head><title>Café</title></head><body><article><p>{text}</p></article></body></html>"
    # declared utf-8, actually cp1252
    d1 = extract_record(raw(page.encode("cp1252"), "text/html; charset=utf-8"))
    # declared latin-1, actually utf-8
    d2 = extract_record(raw(page.encode("utf-8"), "text/html; charset=iso-8859-1"))
    # no declaration at all, cp1252 bytes
    d3 = extract_record(raw(page.encode("cp1252"), "text/html"))
    for d in (d1, d2, d3):
        assert isinstance(d, Document)
        assert "crème brûlée" in d.text and "Ã" not in d.text
    assert d2.meta["encoding"] == "utf-8" and d1.meta["encoding"] != "utf-8"


def test_drops_have_reasons():
    assert extract_record(raw(b"")) == Drop("extract:empty")
    assert extract_record(raw(b"<html><body><script>var x = 1;</script>  </body></html>")).reason == "extract:empty"
    assert extract_record(raw(b"\x89PNG\r\n", "image/png")).reason == "extract:unsupported-type"
    assert extract_record(raw(b"<html>gone</html>", status=404)).reason == "extract:http-status"
    assert extract_record(raw(b"%PDF-1.4 garbage", "application/pdf")).reason in ("extract:parse-error", "extract:empty")


def test_a_page_above_the_size_limit_is_dropped_not_cut():
    """A cut page would be a document with its end missing: above max_html_bytes the record is
    dropped as extract:too-large (a limit: exit 0); at the limit it is extracted whole."""
    paras = "".join(f"<p>Paragraph {i}: " + "a long but perfectly reasonable sentence about software packaging. " * 20 + "</p>\n"
                    for i in range(300))
    body = ("<html><head><title>Huge</title></head><body><article>" + paras + "</article></body></html>").encode()
    assert len(body) > 400_000
    assert extract_record(raw(body), ExtractConfig(max_html_bytes=len(body) - 1)).reason == "extract:too-large"
    doc = extract_record(raw(body), ExtractConfig(max_html_bytes=len(body)))
    assert isinstance(doc, Document) and doc.text.count("packaging") == 300 * 20 and "Paragraph 299:" in doc.text
    assert extract_record(raw(b"plain " * 100, "text/plain"), ExtractConfig(max_html_bytes=100)).reason == "extract:too-large"
    assert extract_record(raw(b"%PDF-" + b"0" * 2000, "application/pdf"), ExtractConfig(max_bytes=1000)).reason == "extract:too-large"


def _pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF with a text stream (xref offsets computed)."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({ln}) '" for ln in lines) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{o}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_and_epub(tmp_path):
    pdf = extract_record(raw(_pdf(["Portable documents carry text too.", "Second line of the report."]), "application/pdf", url="http://t.test/r.pdf"))
    assert isinstance(pdf, Document) and "Portable documents carry text too." in pdf.text and pdf.meta["format"] == "pdf"

    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("id1")
    book.set_title("A Small Book")
    book.set_language("en")
    ch = epub.EpubHtml(title="One", file_name="one.xhtml", lang="en")
    ch.content = "<html><body><h1>Chapter one</h1><p>It was a bright cold day in April.</p></body></html>"
    book.add_item(ch)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [ch]
    epub.write_epub(str(tmp_path / "b.epub"), book)
    d = extract_record(raw((tmp_path / "b.epub").read_bytes(), "application/epub+zip", url="http://t.test/b.epub"))
    assert isinstance(d, Document) and "bright cold day in April" in d.text and d.meta["title"] == "A Small Book"


def test_truncated_and_corrupt_warc_report_file_and_offset(tmp_path):
    """Damage is reported with file and byte range, and reading resynchronises after it."""
    pages = real_pages()[:4]
    good = make_warc(tmp_path / "good.warc.gz", pages)
    data = good.read_bytes()
    offsets = [r.offset for r in iter_warc_records(good)]
    # truncated in the middle of the third response record
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[: offsets[2] + 300])
    errors: list[WarcReadError] = []
    got = list(iter_warc_records(cut, on_damage=errors.append))
    assert [r.offset for r in got if not r.drop_reason] == offsets[:2]  # everything before the damage
    assert [(r.drop_reason, r.offset, r.end) for r in got if r.drop_reason] == [("warc:damaged", offsets[2], offsets[2] + 300)]
    assert len(errors) == 1 and "cut.warc.gz" in str(errors[0]) and errors[0].offset == offsets[2]
    assert str(errors[0].offset) in str(errors[0]) and errors[0].end == offsets[2] + 300
    with pytest.raises(WarcReadError):  # without on_error: raised after the readable records
        list(iter_warc_documents(cut))
    # garbage in the middle (corrupt gzip member): the records after it are kept
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(data[: offsets[1]] + b"\x1f\x8b\x08\x00garbage-not-deflate" * 10 + data[offsets[2]:])
    errors = []
    results = list(iter_warc_documents(bad, on_error=errors.append))
    docs = [r for r in results if isinstance(r, Document)]
    assert [d.url for d in docs] == [pages[i][0] for i in (0, 2, 3)]
    assert [r for r in results if isinstance(r, Drop)] == [Drop("warc:damaged")]
    assert len(errors) == 1 and errors[0].warc_file.endswith("bad.warc.gz") and errors[0].offset == offsets[1]
    # uncompressed WARC works too
    plain = make_warc(tmp_path / "p.warc", pages, gz=False)
    assert len(list(iter_warc_documents(plain))) == 4


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["text/html", "text/html; charset=utf-8", "text/html; charset=bogus-x", "text/html; charset=shift_jis"]))
def test_decode_never_raises(body, ctype):
    text, enc = decode_html(body, ctype)
    assert isinstance(text, str) and enc
    if body:
        assert text  # no bytes silently lost to an empty string


def test_title_and_published_date_metadata():
    body = (b'<html><head><title>A &amp; B</title><meta property="article:published_time" content="2024-03-05T10:00:00Z"></head>'
            b"<body><article><p>" + b"Some words about the release of a package. " * 20 + b"</p></article></body></html>")
    doc = extract_record(raw(body, url="http://t.test/news"))
    assert doc.meta["title"] == "A & B" and doc.meta["date"] == "2024-03-05" and doc.url == "http://t.test/news"
    rich = extract_record(raw(body), ExtractConfig(rich_metadata=True))
    assert rich.meta["title"] == "A & B" and rich.meta["date"] == "2024-03-05"


def _slow_page() -> bytes:
    """~1.5 MB of nested, link-heavy markup: trafilatura needs well over a second for it."""
    block = "<div class='c'><p>Some text about packages and <a href='/x'>a link</a> here.</p><ul>" + "<li><a href='/y'>item</a></li>" * 5 + "</ul></div>\n"
    return ("<html><head><title>Slow</title></head><body>" + block * 6000 + "</body></html>").encode()


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_pathological_page_hits_the_time_limit(in_thread):
    """A page that runs past ExtractConfig.timeout_s is dropped as extract:timeout, in the main
    thread (local executor) and in a worker thread (Beam's SDK harness), and nothing leaks: the
    next records extract normally and no stray exception surfaces later."""
    import threading
    import time

    from stepcrawl.extract import EXTRACT_DROP_REASONS

    assert "extract:timeout" in EXTRACT_DROP_REASONS
    cfg = ExtractConfig(timeout_s=0.1)
    good = real_pages()[0][1]
    out: list = []

    def work():
        # CPU time of this thread, not wall time: under load the wall clock of a 0.1 s limit
        # stretches (the watchdog is woken late), but the CPU the page got before the stop
        # stays far below the > 1 s the whole extraction needs.
        t0 = time.thread_time()
        out.append(extract_record(raw(_slow_page()), cfg))
        out.append(time.thread_time() - t0)
        out.append(extract_record(raw(good), ExtractConfig(timeout_s=30)))  # the limit is per record
        time.sleep(0.3)  # a late exception would land here and fail the thread
        out.append(extract_record(raw(good), ExtractConfig(timeout_s=0)))  # 0 = no limit

    if in_thread:
        th = threading.Thread(target=work)
        th.start()
        th.join(30)
    else:
        work()
    assert len(out) == 4, out
    assert out[0] == Drop("extract:timeout")
    assert out[1] < 1.0  # stopped near the limit, not after the whole extraction
    assert isinstance(out[2], Document) and isinstance(out[3], Document) and out[2].text == out[3].text


def test_iter_warc_records_reads_binary_streams(tmp_path):
    """Beam opens remote WARCs with FileSystems.open(): a binary, possibly non-seekable stream."""
    pages = real_pages()[:3]
    gz = make_warc(tmp_path / "s.warc.gz", pages)
    from_path = list(iter_warc_records(gz))

    class Unseekable:  # only read(), like a network stream
        def __init__(self, data: bytes):
            self._b = io.BytesIO(data)

        def read(self, n=-1):
            return self._b.read(n)

    with open(gz, "rb") as fh:
        from_file = list(iter_warc_records(fh))
    from_stream = list(iter_warc_records(Unseekable(gz.read_bytes()), warc_name="remote.warc.gz"))
    assert [r.offset for r in from_file] == [r.offset for r in from_path] == [r.offset for r in from_stream]
    assert [r.payload for r in from_stream] == [r.payload for r in from_path]
    assert {r.warc_file for r in from_file} == {"s.warc.gz"} and {r.warc_file for r in from_stream} == {"remote.warc.gz"}
    plain = make_warc(tmp_path / "p.warc", pages, gz=False)
    assert len(list(iter_warc_records(io.BytesIO(plain.read_bytes()), warc_name="p.warc"))) == 3
    # damage is reported with the stream's name and offset, after the good records
    data = gz.read_bytes()
    errors: list[WarcReadError] = []
    got = list(iter_warc_records(Unseekable(data[: from_path[2].offset + 200]), warc_name="remote.warc.gz",
                                 source_name="gs://bucket/crawl/remote.warc.gz", on_damage=errors.append))
    assert [r.offset for r in got if not r.drop_reason] == [r.offset for r in from_path[:2]]
    assert errors[0].warc_file == "gs://bucket/crawl/remote.warc.gz" and errors[0].offset == from_path[2].offset
    pdata = plain.read_bytes()
    got = list(iter_warc_records(io.BytesIO(pdata[: len(pdata) - 500]), warc_name="p.warc"))
    assert [r.drop_reason for r in got] == [None, None, "warc:damaged"] and got[-1].warc_file == "p.warc"
