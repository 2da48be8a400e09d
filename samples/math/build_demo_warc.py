"""Rebuild samples/math/demo.warc.gz: a few real math pages and one real PDF manual, the extra
curate input with which scripts/demo.sh shows the math and books sources cheaply.

    apt-get install -y python-scipy-doc gap-transgrp    # (gap-doc pulls gap-transgrp in)
    python samples/math/build_demo_warc.py

Pages: SciPy reference pages with MathJax formulas (python-scipy-doc, BSD-3-Clause), as
served; the PDF: the GAP TransGrp package manual (7 pages, GPL-2+), also used by the tests
(tests/fixtures/books/transgrp-manual.pdf).
"""

from __future__ import annotations

import io
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCIPY = Path("/usr/share/doc/python-scipy-doc/html")
PAGES = [
    "reference/generated/scipy.special.gamma.html",
    "reference/generated/scipy.stats.norm.html",
    "reference/generated/scipy.integrate.quad.html",
    "reference/generated/scipy.linalg.expm.html",
]
PDF = ROOT / "tests/fixtures/books/transgrp-manual.pdf"
DATE = "2026-01-01T00:00:00Z"


def main() -> None:
    out = HERE / "demo.warc.gz"
    with open(out, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        items = [(f"http://docs.scipy.test/{p}", (SCIPY / p).read_bytes(), "text/html; charset=utf-8") for p in PAGES if (SCIPY / p).exists()]
        items.append(("http://gap.test/pkg/TransGrp/doc/manual.pdf", PDF.read_bytes(), "application/pdf"))
        for url, body, ctype in items:
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body), http_headers=http,
                                                warc_headers_dict={"WARC-Date": DATE}))
    print(f"{out}: {len(items)} records, {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
