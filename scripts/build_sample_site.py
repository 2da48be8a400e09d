#!/usr/bin/env python3
"""Build ``samples/site/site.tar.gz``: the sample website ``stepcrawl serve-sample`` serves.

Real pages come from Debian packages installed on the build machine:
  - ``python3.11-doc``   → /usr/share/doc/python3.11/html     (PSF License)
  - ``debian-reference-*`` → /usr/share/debian-reference/*.{en,de,fr,es,it,ja,zh-cn}.html
                                                               (GPL-2+)
Static assets (JS, CSS, images, search forms) are stripped; links between kept pages keep
working, links to pages not kept are unlinked (``<a>`` without ``href``).

Generated on purpose, plainly labelled in ``/_meta/pages.json``:
  exact duplicates, near-duplicates at measured Jaccard (word 5-grams) ≈ 0.95 / 0.85 / 0.7,
  boilerplate-heavy pages, keyword-stuffed spam, a shop/SEO link farm, PDFs and an ePub
  (hand-written generators below: no PDF library needed), broken pages (bogus charset, wrong
  charset, malformed markup, empty body, invalid links), a robots.txt-disallowed /private/.

Deterministic: fixed seeds, sorted inputs, fixed tar mtimes. Run:
    .venv/bin/python scripts/build_sample_site.py [--out samples/site/site.tar.gz]
"""

from __future__ import annotations

import argparse
import html
import io
import json
import posixpath
import random
import re
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html

PYDOC = Path("/usr/share/doc/python3.11/html")
DEBREF = Path("/usr/share/debian-reference")
LANGS = ["en", "de", "fr", "es", "it", "ja", "zh-cn"]
DEBREF_PAGES = ["pr01", "apa", "ch04", "ch08"]
ROOT = Path(__file__).resolve().parents[1]
MTIME = 1_700_000_000  # fixed, so the tarball is reproducible

README = """\
# The stepcrawl sample website

Served by `stepcrawl serve-sample` straight from `samples/site/site.tar.gz` (built by
`scripts/build_sample_site.py` from Debian packages; no build step is needed to serve it).
`/_meta/pages.json` lists every page with its kind (and, for near-duplicates, the measured
Jaccard similarity on word 5-grams to its source).

| path | what | licence |
| --- | --- | --- |
| `/python/` | Python 3.11 documentation pages (tutorial, FAQ, how-tos, reference, library), JS/CSS/images stripped | PSF License Version 2 (© Python Software Foundation), from Debian package python3.11-doc |
| `/debian-reference/` | Debian Reference in en, de, fr, es, it, ja, zh-cn (preface, 2 chapters, appendix) | GPL-2+ (© Osamu Aoki and translators), from Debian packages debian-reference-* |
| `/dups/` | exact copies and edited near-copies (Jaccard ≈ 0.95, 0.85, 0.7) of Python-doc text | derived from PSF-licensed text |
| `/boilerplate/` | pages that are mostly navigation, cookie banner and legal footer around one paragraph | generated; paragraphs from the Python docs |
| `/spam/`, `/shop/`, `/seo/` | keyword-stuffed pages, a fake shop and an SEO link farm (generated, nonsense) | generated, CC0 |
| `/files/` | two small PDFs, an ePub, a JSON file and a PNG (not-kept content types) | generated, CC0 |
| `/broken/` | bogus charset declaration, wrong charset, malformed markup, empty body, invalid links, a dead link | generated, CC0 |
| `/private/` | pages disallowed by `/robots.txt` (a polite crawler never requests them) | generated, CC0 |

The generated pages are test material for the crawler, extraction, quality filters and
deduplication; they are deliberately bad, not real offers.
"""


# ------------------------------------------------------------------------------------------
# real pages: strip assets, rewrite links to kept pages


def _clean(doc) -> None:
    for el in doc.xpath("//script|//style|//link|//img|//form|//iframe|//noscript|"
                        "//div[@class='mobile-nav']|//div[@id='searchbox']"):
        el.drop_tree()


def _rewrite_links(doc, page_rel: str, kept: set[str]) -> None:
    """Keep hrefs that point at kept pages (or off-site), unlink the rest."""
    here = posixpath.dirname(page_rel)
    for a in doc.xpath("//a[@href]"):
        href = a.get("href")
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            continue  # external link: kept (out of scope for a crawl of this site)
        if not parts.path:
            continue  # fragment-only link
        target = posixpath.normpath(posixpath.join(here, parts.path))
        if target not in kept:
            del a.attrib["href"]


def real_page(src: Path, rel: str, kept: set[str]) -> bytes:
    raw = src.read_bytes()
    doc = lxml.html.document_fromstring(raw)
    _clean(doc)
    _rewrite_links(doc, rel, kept)
    return lxml.html.tostring(doc, doctype="<!DOCTYPE html>", encoding="utf-8")


def select_python() -> list[str]:
    rels = []
    for sub, limit in [("tutorial", 150_000), ("faq", 150_000), ("using", 150_000),
                       ("extending", 150_000), ("reference", 150_000), ("howto", 150_000),
                       ("library", 60_000)]:
        for p in sorted((PYDOC / sub).glob("*.html")):
            if p.stat().st_size <= limit:
                rels.append(f"{sub}/{p.name}")
    return rels


def page_text(html_bytes: bytes) -> tuple[str, list[str]]:
    doc = lxml.html.document_fromstring(html_bytes)
    _clean(doc)
    body = doc.xpath("//div[@role='main']") or doc.xpath("//body")
    title = (doc.findtext(".//title") or "").strip()
    paras = [" ".join(p.text_content().split()) for p in body[0].xpath(".//p")]
    return title, [p for p in paras if len(p.split()) >= 8]


# ------------------------------------------------------------------------------------------
# near-duplicates at a measured similarity


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i:i + n]) for i in range(max(0, len(w) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


FILLER = ("alpha beta gamma delta module value object method function system result "
          "example string number change update version option output input").split()


def edit_paragraphs(paras: list[str], rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for p in paras:
        words = p.split()
        new = []
        for w in words:
            r = rng.random()
            if r < rate * 0.6:
                new.append(rng.choice(FILLER))       # substitute
            elif r < rate * 0.8:
                continue                             # delete
            elif r < rate:
                new.extend([w, rng.choice(FILLER)])  # insert
            else:
                new.append(w)
        out.append(" ".join(new))
    return out


def near_dup(paras: list[str], target: float, seed: int) -> tuple[list[str], float]:
    """Bisect the edit rate until Jaccard(word 5-grams) is within 0.01 of ``target``."""
    base = "\n".join(paras)
    lo, hi = 0.0, 0.5
    best = (paras, 1.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        edited = edit_paragraphs(paras, mid, seed)
        j = jaccard(base, "\n".join(edited))
        best = (edited, j)
        if abs(j - target) <= 0.01:
            break
        if j > target:
            lo = mid
        else:
            hi = mid
    return best


def simple_page(title: str, paras: list[str], extra: str = "", lang: str = "en") -> bytes:
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{body}\n{extra}</body></html>\n").encode("utf-8")


# ------------------------------------------------------------------------------------------
# hand-written PDF and ePub generators (tiny, valid; why: no PDF library needed at build)


def make_pdf(title: str, lines: list[str]) -> bytes:
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = ["BT", "/F1 16 Tf", "72 760 Td", f"({esc(title)}) Tj", "/F1 11 Tf", "0 -24 Td"]
    for line in lines:
        text += [f"({esc(line)}) Tj", "0 -15 Td"]
    text.append("ET")
    stream = "\n".join(text).encode("latin-1", "replace")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Title (" + esc(title).encode("latin-1", "replace") + b") /Producer (stepcrawl) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += (f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Info 6 0 R >>\n"
            f"startxref\n{xref}\n%%EOF\n").encode()
    return bytes(out)


def make_epub(title: str, paras: list[str]) -> bytes:
    buf = io.BytesIO()
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paras)
    chapter = ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
               f"<head><title>{html.escape(title)}</title></head><body><h1>"
               f"{html.escape(title)}</h1>{body}</body></html>")
    nav = ('<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml" '
           'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>nav</title></head><body>'
           '<nav epub:type="toc"><ol><li><a href="chapter.xhtml">Chapter</a></li></ol></nav>'
           "</body></html>")
    opf = ('<?xml version="1.0" encoding="utf-8"?>\n<package xmlns="http://www.idpf.org/2007/opf" '
           'version="3.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
           f'<dc:identifier id="id">stepcrawl-sample-epub</dc:identifier><dc:title>{html.escape(title)}'
           '</dc:title><dc:language>en</dc:language><meta property="dcterms:modified">'
           '2024-01-01T00:00:00Z</meta></metadata><manifest>'
           '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
           '<item id="ch" href="chapter.xhtml" media-type="application/xhtml+xml"/></manifest>'
           '<spine><itemref idref="ch"/></spine></package>')
    container = ('<?xml version="1.0"?>\n<container version="1.0" '
                 'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                 "</rootfiles></container>")
    with zipfile.ZipFile(buf, "w") as z:
        def add(name, data, compress=zipfile.ZIP_DEFLATED):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compress
            z.writestr(info, data)
        add("mimetype", "application/epub+zip", zipfile.ZIP_STORED)  # must be first, stored
        add("META-INF/container.xml", container)
        add("OEBPS/content.opf", opf)
        add("OEBPS/nav.xhtml", nav)
        add("OEBPS/chapter.xhtml", chapter)
    return buf.getvalue()


PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


# ------------------------------------------------------------------------------------------


def build(out: Path) -> dict:
    files: dict[str, bytes] = {}
    meta: list[dict] = []

    def add(path: str, data: bytes, kind: str, **info) -> None:
        files[path] = data
        meta.append({"path": "/" + path, "kind": kind, "bytes": len(data), **info})

    # --- Python docs ----------------------------------------------------------------------
    py_rels = select_python()
    kept_py = set(py_rels)
    for rel in py_rels:
        add(f"python/{rel}", real_page(PYDOC / rel, rel, kept_py), "python-docs", lang="en",
            licence="PSF-2.0")
    # --- Debian reference, 7 languages --------------------------------------------------------
    deb_rels = [f"{p}.{lang}.html" for lang in LANGS for p in DEBREF_PAGES]
    kept_deb = set(deb_rels)
    for rel in deb_rels:
        lang = rel.split(".")[1]
        add(f"debian-reference/{rel}", real_page(DEBREF / rel, rel, kept_deb),
            "debian-reference", lang=lang, licence="GPL-2.0-or-later")

    # --- duplicates and near-duplicates ---------------------------------------------------------
    sources = ["tutorial/controlflow.html", "tutorial/datastructures.html",
               "howto/sorting.html"]
    for i, rel in enumerate(sources):
        title, paras = page_text((PYDOC / rel).read_bytes())
        paras = paras[:40]
        orig = f"dups/source-{i}.html"
        add(orig, simple_page(title, paras), "dup-source", source=f"/python/{rel}")
        add(f"dups/exact-{i}.html", files[orig], "exact-duplicate", source="/" + orig,
            jaccard=1.0)
        # a byte-identical copy next to the original, so its relative links still resolve
        add(f"python/{rel[:-5]}-copy.html", files[f"python/{rel}"], "exact-duplicate",
            source=f"/python/{rel}", jaccard=1.0)
        for target in (0.95, 0.85, 0.7):
            edited, j = near_dup(paras, target, seed=1000 * i + int(target * 100))
            tag = f"{int(round(target * 100)):03d}"
            add(f"dups/near-{tag}-{i}.html", simple_page(title, edited), "near-duplicate",
                source="/" + orig, target_jaccard=target, jaccard=round(j, 4))

    # --- boilerplate-heavy ---------------------------------------------------------------------
    _, para_pool = page_text((PYDOC / "tutorial/introduction.html").read_bytes())
    nav = "".join(f'<li><a href="/boilerplate/page-{k}.html">Section {k}</a></li>'
                  for k in range(8))
    nav += "".join(f"<li><a>Menu item {k}</a></li>" for k in range(60))
    legal = ("All rights reserved. Terms of use. Privacy policy. Cookie policy. Imprint. "
             "Contact us. Newsletter. Follow us on social media. ") * 12
    for k in range(8):
        extra = (f'<div class="cookie-banner">We use cookies to improve your experience. '
                 f'Accept all cookies. Manage preferences.</div><nav><ul>{nav}</ul></nav>'
                 f'<footer>{legal}</footer>')
        add(f"boilerplate/page-{k}.html",
            simple_page(f"Portal page {k}", [para_pool[k % len(para_pool)]], extra),
            "boilerplate")

    # --- spam, shop, SEO link farm -----------------------------------------------------------
    rng = random.Random(7)
    stuff = ["cheap", "python", "hosting", "best", "price", "download", "free", "casino"]
    for k in range(8):
        words = [rng.choice(stuff) for _ in range(600)]
        add(f"spam/stuffed-{k}.html",
            simple_page(f"CHEAP PYTHON HOSTING best price {k}",
                        [" ".join(words[j:j + 60]) for j in range(0, 600, 60)]),
            "spam-keyword-stuffing")
    n_products = 40
    for k in range(n_products):
        links = "".join(f'<li><a href="/shop/product-{(k + d) % n_products}.html">'
                        f"Buy product {(k + d) % n_products} now $9.99</a></li>"
                        for d in range(1, 16))
        add(f"shop/product-{k}.html",
            simple_page(f"Product {k} - best price - free shipping",
                        [f"Product {k}. Add to cart. Buy now for $19.99. Free shipping. In "
                         f"stock. Order now, discount 50%."],
                        f"<ul>{links}</ul>"),
            "shop")
    farm = "".join(f'<a href="/seo/page-{k}.html">best cheap deal {k}</a> ' for k in range(12))
    farm += "".join(f'<a href="/shop/product-{k}.html">top {k} discount</a> '
                    for k in range(n_products))
    for k in range(12):
        add(f"seo/page-{k}.html", simple_page(f"Top {k} best deals", ["Click here."], farm),
            "seo-link-farm")

    # --- files: PDF, ePub and types a crawler does not keep ------------------------------------
    add("files/python-tutorial-summary.pdf",
        make_pdf("The Python Tutorial (summary)", para_pool[0][:90].split(". ")[:1] +
                 ["Python is an easy to learn, powerful programming language.",
                  "It has efficient high-level data structures."]), "pdf")
    add("files/debian-notes.pdf",
        make_pdf("Debian notes", ["Debian is a free operating system.",
                                  "The Debian Reference is a broad overview of Debian."]), "pdf")
    add("files/sample-book.epub", make_epub("A sample book", para_pool[:5]), "epub")
    add("files/data.json", json.dumps({"hello": "world"}).encode(), "not-kept-type")
    add("files/pixel.png", PNG_1x1, "not-kept-type")

    # --- broken pages ----------------------------------------------------------------------------
    add("broken/bogus-charset.html",
        b'<html><head><meta charset="x-bogus-charset-9"><title>Bogus charset</title></head>'
        b"<body><p>Caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve r\xe9sum\xe9 (latin-1 bytes under an "
        b'unknown charset name).</p><a href="/broken/malformed.html">next</a></body></html>',
        "broken-charset")
    add("broken/wrong-charset.html",
        b'<html><head><meta charset="utf-8"><title>Wrong charset</title></head>'
        b"<body><p>Stra\xdfe, \xe0 bient\xf4t, \xa1hola! (latin-1 bytes declared as UTF-8)"
        b"</p></body></html>", "broken-charset")
    add("broken/malformed.html",
        b"<html><head><title>Malformed<title></head><body><div><p>Unclosed <b>bold <i>italic"
        b"<table><tr><td>cell<td>cell</tr><<<>>> <a href=/broken/empty.html>link without quotes"
        b'</a><a href="/python/tutorial/index.html"<p>tag soup</div></div></span>',
        "broken-markup")
    add("broken/empty.html", b"", "broken-empty")
    add("broken/invalid-links.html",
        simple_page("Invalid links", ["Links a crawler must survive."],
                    '<a href="http://[::1">bad ipv6</a> <a href="javascript:alert(1)">js</a> '
                    '<a href="mailto:someone@example.org">mail</a> '
                    '<a href="http://exa mple.com/">space in host</a> '
                    '<a href="http://example.com:99999/">bad port</a> <a href="">empty</a> '
                    '<a href="/nope/dead-link.html">dead link</a> '
                    '<a href="http://user:pw@example.com/">userinfo</a> '
                    f'<a href="/{"x" * 3000}">too long</a>'),
        "broken-links")

    # --- robots.txt-disallowed --------------------------------------------------------------------
    for k in range(3):
        add(f"private/secret-{k}.html", simple_page(f"Private {k}", ["Do not crawl me."]),
            "private")
    files["robots.txt"] = (b"# stepcrawl sample site\nUser-agent: *\nDisallow: /private/\n"
                           b"Allow: /\n")

    # --- indexes ------------------------------------------------------------------------------------
    def index(title: str, paths: list[str]) -> bytes:
        items = "".join(f'<li><a href="/{p}">{html.escape(p)}</a></li>' for p in paths)
        return simple_page(title, [f"{len(paths)} pages."], f"<ul>{items}</ul>")

    sections = {}
    for path in sorted(files):
        top = path.split("/", 1)[0] if "/" in path else ""
        sections.setdefault(top, []).append(path)
    for top in ("python", "debian-reference"):
        files[f"{top}/index.html"] = index(f"{top} pages", sections[top])
    special = [p for t, ps in sections.items() if t not in ("python", "debian-reference", "")
               for p in ps]
    files["index.html"] = simple_page(
        "stepcrawl sample site", ["A small real website for crawl demos. See /README.md."],
        '<ul><li><a href="/python/index.html">Python documentation</a></li>'
        '<li><a href="/debian-reference/index.html">Debian Reference (7 languages)</a></li>'
        + "".join(f'<li><a href="/{p}">{html.escape(p)}</a></li>' for p in special)
        + '<li><a href="/README.md">README</a></li></ul>')
    files["README.md"] = README.encode()
    files["_meta/pages.json"] = json.dumps(meta, indent=1, ensure_ascii=False).encode()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw:
        import gzip
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=MTIME, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(files):
                    info = tarfile.TarInfo(f"site/{path}")
                    info.size, info.mtime, info.mode = len(files[path]), MTIME, 0o644
                    tar.addfile(info, io.BytesIO(files[path]))
    tmp.replace(out)
    (out.parent / "README.md").write_text(README, encoding="utf-8")
    return {"files": len(files), "html_pages": sum(p.endswith(".html") for p in files),
            "raw_bytes": sum(map(len, files.values())), "tar_gz_bytes": out.stat().st_size,
            "near_dups": [(m["path"], m["jaccard"]) for m in meta if m["kind"] == "near-duplicate"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "samples" / "site" / "site.tar.gz"))
    args = ap.parse_args()
    stats = build(Path(args.out))
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
