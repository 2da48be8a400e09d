"""The math and books sources: formula signals + the fastText math classifier route pages to
OUT/math/ (routing precision on fixtures with every formula form), PDF/ePub become page-complete
book documents in OUT/books/ (running heads, page numbers, hyphenation), judged by book rules,
and both sources are tokenized and planned like the others."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stepcrawl.books import BookTierStep, clean_pages, extract_epub, extract_pdf
from stepcrawl.document import Document
from stepcrawl.extract import extract_record
from stepcrawl.quality.math import MathScoreStep, MathTierStep, SourceRouterStep, formula_signals, formula_score
from stepcrawl.steps import Drop

sys.path.insert(0, str(Path(__file__).parent))
from test_extract import make_warc, raw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATH_SAMPLES = ROOT / "samples" / "math"
REAL_PDF = ROOT / "tests" / "fixtures" / "books" / "transgrp-manual.pdf"  # GAP TransGrp manual (GPL-2+, Debian gap-transgrp)

# ---------------------------------------------------------------------------------- fixtures

MATH_PAGES = {
    "inline_dollar": "Let $x$ be a real number and suppose $x^2 + 2x + 1 = 0$. Then $(x+1)^2 = 0$, hence $x = -1$. "
                     "We have shown that the equation has exactly one root. Since the left side is a square, "
                     "the solution is unique, and the proof is complete.",
    "display_dollar": "The geometric series converges for $|r| < 1$:\n$$\\sum_{k=0}^{\\infty} r^k = \\frac{1}{1-r}.$$\n"
                      "Differentiating both sides gives\n$$\\sum_{k=1}^{\\infty} k r^{k-1} = \\frac{1}{(1-r)^2},$$\n"
                      "which is the generating function of the natural numbers. Therefore the mean follows.",
    "latex_parens": "The Fourier transform is defined by \\(\\hat f(\\xi) = \\int f(x) e^{-2\\pi i x \\xi} dx\\). "
                    "By Plancherel's theorem \\(\\|\\hat f\\|_2 = \\|f\\|_2\\), so the transform is unitary. "
                    "\\[ \\int_{-\\infty}^{\\infty} |f(x)|^2 dx = \\int_{-\\infty}^{\\infty} |\\hat f(\\xi)|^2 d\\xi \\]",
    "unicode": "For every ε > 0 there is δ > 0 such that |x − a| < δ ⇒ |f(x) − f(a)| < ε. "
               "Thus f is continuous at a. If f is continuous on [a, b] then ∫ f(x) dx exists, and for x ∈ ℝ "
               "the bound |f(x)| ≤ M holds; ∑ aₙ converges when ∑ |aₙ| < ∞. Hence the theorem.",
    "matrix_doc": "The eigenvalues $\\lambda$ of a matrix $A$ solve $\\det(A - \\lambda I) = 0$. "
                  "For a symmetric matrix the eigenvectors are orthogonal: $v_i^T v_j = 0$ for $i \\neq j$. "
                  "The spectral theorem states $A = Q \\Lambda Q^T$ where $Q$ is orthogonal.",
}
OTHER_PAGES = {
    "shell": "To list files, run $ ls -l in a terminal. Then $ cd /tmp and $ rm old.txt to clean up. "
             "The shell prompt is shown as a dollar sign. Use sudo apt-get install to add packages to the system.",
    "prices": "Our summer sale: shoes from $5 and shirts from $10, free shipping over $50! "
              "Sign up for the newsletter and get a coupon. Offer valid while stocks last, see store for details.",
    "prose": "The village lies at the foot of the mountains. In summer the meadows are full of flowers and "
             "the river is warm enough to swim in. The old church was built in the twelfth century and "
             "restored after the war; its bells still ring every Sunday morning.",
    "code": "def read_config(path):\n    with open(path) as fh:\n        return json.load(fh)\n\n"
            "The function opens the file, parses it as JSON and returns a dictionary. Errors propagate to the caller.",
    "cooking": "Preheat the oven to 200 degrees. Mix the flour, butter and sugar, then add two eggs and a pinch of salt. "
               "Bake for twenty minutes until golden brown and let it cool before serving with cream.",
}


def _train_cli(out: Path) -> dict:
    """`stepcrawl train-math` in a fresh process. (A second fastText training inside one Python
    process sometimes dies with fastText's "Encountered NaN" here; separate processes, as the
    CLI runs it, train identically every time.)"""
    res = subprocess.run([sys.executable, "-m", "stepcrawl.cli", "train-math", "--math", str(MATH_SAMPLES / "math.jsonl"),
                          "--other", str(MATH_SAMPLES / "other.jsonl"), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def math_model(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("math") / "math.bin"
    report = _train_cli(out)
    assert report["holdout_accuracy"] is not None and report["holdout_accuracy"] >= 0.9
    return str(out)


def _route(texts: dict[str, str], model: str | None) -> dict[str, str]:
    score, route = MathScoreStep(model), SourceRouterStep(0.5)
    out = {}
    for name, text in texts.items():
        doc = route(score(Document(id=name, text=text, source="web", kind="web")))
        out[name] = doc.source
    return out


# ---------------------------------------------------------------------------------- math


def test_formula_forms_are_counted_and_shell_prompts_and_prices_are_not():
    s = formula_signals(MATH_PAGES["display_dollar"])
    assert s["math_display"] == 2 and s["math_inline"] == 1
    s = formula_signals(MATH_PAGES["latex_parens"])
    assert s["math_display"] == 1 and s["math_inline"] == 2
    assert formula_signals(MATH_PAGES["unicode"])["math_symbols"] >= 10
    for name in ("shell", "prices"):
        s = formula_signals(OTHER_PAGES[name])
        assert s["math_inline"] == 0 and formula_score(s) < 0.2, name


@pytest.mark.parametrize("with_model", [True, False])
def test_routing_precision_on_math_and_non_math_fixtures(math_model, with_model):
    routed = _route({**MATH_PAGES, **OTHER_PAGES}, math_model if with_model else None)
    predicted = {n for n, s in routed.items() if s == "math"}
    truth = set(MATH_PAGES)
    precision = len(predicted & truth) / max(1, len(predicted))
    recall = len(predicted & truth) / len(truth)
    assert precision == 1.0, routed
    assert recall >= 0.8, routed


def test_math_training_is_deterministic(math_model, tmp_path):
    again = tmp_path / "again.bin"
    _train_cli(again)
    assert hashlib.sha256(Path(math_model).read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    a = [MathScoreStep(math_model)(Document(id=k, text=t)).quality["math_fasttext"] for k, t in MATH_PAGES.items()]
    b = [MathScoreStep(str(again))(Document(id=k, text=t)).quality["math_fasttext"] for k, t in MATH_PAGES.items()]
    assert a == b


def test_math_tier_gives_finemath_scores_and_drops_thin_pages():
    step = MathTierStep(min_tier="Medium")
    good = Document(id="g", text=MATH_PAGES["display_dollar"] * 3, kind="math", quality=formula_signals(MATH_PAGES["display_dollar"] * 3))
    out = step(good)
    assert isinstance(out, Document) and 0 <= out.quality["finemath_score"] <= 5 and out.tier in ("High", "Medium-High", "Medium")
    thin = Document(id="t", text="$x$ $y$ $z$", kind="math", quality=formula_signals("$x$ $y$ $z$"))
    res = step(thin)
    assert isinstance(res, Drop) and res.reason.startswith("math:tier-")
    web = Document(id="w", text="hello", kind="web")
    assert step(web) is web


# ---------------------------------------------------------------------------------- books

BODY = [
    ["Chapter 1. Introduction", "This book explains how information", "is stored. The infor-", "mation is kept in pages",
     "that follow each other in reading order."],
    ["The second page continues the story", "with another paragraph about the", "compu-", "tation of results in long",
     "documents that run across pages and"],
    ["continue on the next page without a break.", "A third paragraph follows here.", "Equations such as x = y + 1 stay."],
    ["Chapter 2. Methods", "The methods are described in detail", "and every step is explained to the", "reader carefully."],
]


def _pdf_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], header: str = "A Book About Pages", footer_numbers: bool = True) -> bytes:
    """A minimal real PDF (Helvetica text layer, one content stream per page), written by hand
    because no PDF writer is a dependency; pypdf reads it like any other."""
    objs: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    font_id = 3 + 2 * n_pages
    for i, lines in enumerate(pages):
        rows = [header] + lines + ([str(i + 1)] if footer_numbers else [])
        y, ops = 760, []
        for j, line in enumerate(rows):
            if j == len(rows) - 1 and footer_numbers:
                y = 40
            ops.append(f"BT /F1 11 Tf 72 {y} Td ({_pdf_escape(line)}) Tj ET")
            y -= 16
        stream = "\n".join(ops).encode()
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font_id} 0 R >> >> "
                    f"/Contents {4 + 2 * i} 0 R >>".encode())
        objs.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for k, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(f"{k} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def test_pdf_is_page_complete_headers_page_numbers_hyphens():
    text, meta = extract_pdf(make_pdf(BODY))
    assert meta["pages"] == 4
    assert "A Book About Pages" not in text  # running header on every page
    assert not any(line.strip().isdigit() for line in text.splitlines())  # page numbers
    assert "information is kept" in text and "infor-" not in text  # hyphenation joined
    assert "computation of results" in text
    # reading order kept, and the paragraph running across the page break is one paragraph
    assert text.index("Chapter 1") < text.index("second page") < text.index("third paragraph") < text.index("Chapter 2")
    assert "pages and\ncontinue on the next page" in text
    assert "x = y + 1" in text


def test_real_pdf_manual_becomes_a_kept_book():
    payload = REAL_PDF.read_bytes()
    doc = extract_record(raw(payload, "application/pdf", url="http://gap.test/transgrp/manual.pdf"))
    assert isinstance(doc, Document) and doc.kind == "book" and doc.meta["pages"] == 7
    # running heads that carry the page number ("4 Chapter 1. The Library …", "Section 4. … 5")
    assert "4 Chapter 1. The Library of Transitive Groups" not in doc.text
    assert "Section 4. Supplemental Downloads 5" not in doc.text
    assert "TransitiveIdentification" in doc.text
    routed = SourceRouterStep()(doc)
    assert routed.source == "books" and routed.kind == "book"
    kept = BookTierStep(min_tier="Medium")(routed)
    assert isinstance(kept, Document) and kept.tier in ("High", "Medium-High", "Medium")


def make_epub(chapters: list[tuple[str, str]]) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("test-book")
    book.set_title("A Test Book")
    book.set_language("en")
    items = []
    for i, (title, html) in enumerate(chapters):
        c = epub.EpubHtml(title=title, file_name=f"c{i}.xhtml", lang="en")
        c.content = f"<html><body><h1>{title}</h1>{html}</body></html>"
        book.add_item(c)
        items.append(c)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = items
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    return buf.getvalue()


def test_epub_spine_order_paragraphs_and_hyphenation():
    payload = make_epub([
        ("One", "<p>The first chapter talks about infor-\nmation and ideas.</p><p>Second paragraph… ends.</p>"),
        ("Two", "<p>The second chapter.</p>"),
        ("Three", "<p>The third chapter ends the book.</p>"),
    ])
    doc = extract_record(raw(payload, "application/epub+zip", url="http://b.test/book.epub"))
    assert isinstance(doc, Document) and doc.kind == "book" and doc.meta["title"] == "A Test Book"
    assert "information and ideas" in doc.text
    assert doc.text.index("first chapter") < doc.text.index("second chapter") < doc.text.index("third chapter")
    assert "ideas.\n\nSecond paragraph… ends." in doc.text  # UTF-8, not read as latin-1


def test_clean_pages_keeps_a_line_that_repeats_only_in_the_body():
    body = ["alpha words here", "beta words there", "gamma more text", "Repeat me in the middle", "delta text", "epsilon text", "zeta end"]
    pages = ["The Running Title\n" + "\n".join(f"{line} on page {'abcdef'[i]}" if "Repeat" not in line else line for line in body) + f"\n{i + 1}"
             for i in range(6)]
    text, stats = clean_pages(pages)
    assert "The Running Title" not in text and stats["header_footer_lines"] + stats["page_numbers"] == 12  # 6 titles, 6 numbers
    assert text.count("Repeat me in the middle") == 6


# ---------------------------------------------------------------------------------- end to end


def test_curate_routes_math_and_books_and_plan_sees_their_supply(math_model, tmp_path, capsys):
    from stepcrawl.curate import CurateConfig, curate
    from stepcrawl.io import read_documents

    def html(title, body):
        return f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1><p>{body}</p></article></body></html>".encode()

    long_math = " ".join([MATH_PAGES["inline_dollar"], MATH_PAGES["matrix_doc"], MATH_PAGES["display_dollar"].replace("\n", " ")]) * 2
    pages = [
        ("http://m.test/algebra.html", html("Algebra", long_math), "text/html"),
        ("http://m.test/series.html", html("Series", (MATH_PAGES["unicode"] + " ") * 3), "text/html"),
        ("http://b.test/manual.pdf", REAL_PDF.read_bytes(), "application/pdf"),
        ("http://b.test/made.pdf", make_pdf(BODY * 3), "application/pdf"),
        ("http://w.test/village.html", html("Village", (OTHER_PAGES["prose"] + " ") * 4), "text/html"),
    ]
    warc = make_warc(tmp_path / "in.warc.gz", pages)
    out = tmp_path / "corpus"
    m = curate([warc], out, CurateConfig(math_model=math_model, dedup=False), progress=False)
    d = m.to_dict()
    assert d["docs_in"] == d["docs_out"] + sum(d["drops"].values())
    outputs = d["extra"]["outputs"]
    math_docs = list(read_documents(out / "math"))
    book_docs = list(read_documents(out / "books"))
    assert {x.url for x in book_docs} == {"http://b.test/manual.pdf", "http://b.test/made.pdf"}
    assert all(x.kind == "book" and x.source == "books" and x.tier for x in book_docs)
    assert {x.url for x in math_docs} <= {"http://m.test/algebra.html", "http://m.test/series.html"} and math_docs
    assert all(x.kind == "math" and "finemath_score" in x.quality for x in math_docs)
    assert outputs["math"]["docs"] == len(math_docs) and outputs["books"]["docs"] == len(book_docs)
    assert all(x.source == "web" for x in read_documents(out / "web"))
    assert json.loads((out / "books" / "_manifest.json").read_text())["docs_out"] == len(book_docs)

    from stepcrawl.stats import format_stats, load_stats

    text = format_stats(load_stats(out))
    assert "math" in text and "books" in text

    # tokenize every source and plan the full curriculum: math and books have real supply
    from stepcrawl.cli import main

    assert main(["train-tokenizer", str(out), "--vocab-size", "1000", "--out", str(tmp_path / "tok"), "--threads", "1"]) == 0
    assert main(["tokenize", str(out), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"), "--workers", "1"]) == 0
    capsys.readouterr()
    main(["plan", "--curriculum", str(ROOT / "curricula" / "full.yaml"), "--tokens", str(tmp_path / "tokens"), "--json"])
    p = json.loads(capsys.readouterr().out)
    supply = {e["entry"]: e["supply"] for ph in p["phases"] for e in ph["entries"]}
    assert supply["math"] and supply["math"] > 0
    assert supply["books"] and supply["books"] > 0

    # books_long: the long books (here: ≥ 256 tokens, full.yaml says 32k) of High/Medium-High
    import yaml

    cur = yaml.safe_load((ROOT / "curricula" / "full.yaml").read_text())
    cur["sources"]["books_long"]["long_docs"]["min_tokens"] = 256
    small = tmp_path / "full-small-long.yaml"
    small.write_text(yaml.safe_dump(cur))
    main(["plan", "--curriculum", str(small), "--tokens", str(tmp_path / "tokens"), "--json"])
    p = json.loads(capsys.readouterr().out)
    supply = {e["entry"]: e["supply"] for ph in p["phases"] for e in ph["entries"]}
    assert 0 < supply["books_long"] <= supply["books"]


def test_beam_curate_routes_the_same_documents(math_model, tmp_path):
    from beam_pipelines import curate as beam_curate
    from stepcrawl.curate import CurateConfig, curate
    from stepcrawl.io import read_documents

    pages = [
        ("http://m.test/a.html", f"<html><body><article><p>{(MATH_PAGES['matrix_doc'] + ' ') * 3}</p></article></body></html>".encode(), "text/html"),
        ("http://b.test/manual.pdf", REAL_PDF.read_bytes(), "application/pdf"),
        ("http://w.test/v.html", f"<html><body><article><p>{(OTHER_PAGES['prose'] + ' ') * 4}</p></article></body></html>".encode(), "text/html"),
    ]
    folder = tmp_path / "crawl"
    folder.mkdir()
    make_warc(folder / "in.warc.gz", pages)
    curate([folder], tmp_path / "local", CurateConfig(math_model=math_model, dedup=False), progress=False)
    beam_curate.run(["--input", str(folder), "--output", str(tmp_path / "beam"), "--math_model", math_model, "--no_dedup",
                     "--runner", "DirectRunner"])
    for src in ("web", "math", "books"):
        local = {d.id: (d.kind, d.tier) for d in read_documents(tmp_path / "local" / src)} if (tmp_path / "local" / src).exists() else {}
        beam = {d.id: (d.kind, d.tier) for d in read_documents(tmp_path / "beam" / src)} if (tmp_path / "beam" / src).exists() else {}
        assert local == beam, src
    lm = json.loads((tmp_path / "local" / "web" / "_manifest.json").read_text())
    bm = json.loads((tmp_path / "beam" / "web" / "_manifest.json").read_text())
    assert lm["extra"]["outputs"] == bm["extra"]["outputs"] and bm["extra"]["outputs"]["books"]["docs"] == 1
    assert bm["extra"]["outputs"]["math"]["docs"] == 1


def test_book_rules_drop_a_scan_and_a_flyer_and_keep_a_text_book():
    step = BookTierStep(min_tier="Medium")
    prose = " ".join(OTHER_PAGES["prose"].split()) + " "
    good = Document(id="g", text=(prose * 40).strip(), kind="book", meta={"pages": 10})
    scan = Document(id="s", text=(prose * 10).strip(), kind="book", meta={"pages": 400})  # ~1 word per page: no text layer
    flyer = Document(id="f", text="Debian notes. Debian is a free operating system. The Debian Reference is a broad overview.",
                     kind="book", meta={"pages": 1})  # like the sample site's one-page PDFs
    assert isinstance(step(good), Document) and step(good).tier == "High"
    for bad in (scan, flyer):
        res = step(bad)
        assert isinstance(res, Drop) and res.reason.startswith("book:tier-"), bad.id
