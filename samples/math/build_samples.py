"""Rebuild samples/math/{math,other}.jsonl: training data of the math classifier (train-math).

math.jsonl  — real math documentation pages from Debian's doc packages, extracted with
              stepcrawl's own HTML extractor (the text shape curate sees): SciPy's reference
              pages that carry MathJax formulas (python-scipy-doc) and the Maxima manual
              (maxima-doc).
other.jsonl — non-math text: the paragraphs of samples/quality/positive.jsonl (Python docs,
              Debian Reference) and samples/quality/negative.jsonl (generated web spam), and
              the bundled sample site's Python/Debian-reference pages.

    apt-get install -y python-scipy-doc maxima-doc
    python samples/math/build_samples.py

Deterministic (sorted paths, fixed sampling); each text is cut to MAX_CHARS so the two files
stay under ~1.5 MB together.
"""

from __future__ import annotations

import io
import json
import random
import re
import tarfile
from pathlib import Path

from stepcrawl.extract import ExtractConfig, extract_html

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCIPY = Path("/usr/share/doc/python-scipy-doc/html")
MAXIMA = Path("/usr/share/doc/maxima-doc/html")
MAX_CHARS = 2500
N_SCIPY, N_MAXIMA = 260, 140


def _texts(paths, limit: int, need=None) -> list[dict]:
    out = []
    cfg = ExtractConfig(favor_precision=False)
    for p in paths:
        html = p.read_text(encoding="utf-8", errors="replace")
        if need and not re.search(need, html):
            continue
        text, _ = extract_html(html, "", cfg)
        text = text.strip()
        if len(text) < 400:
            continue
        out.append({"id": f"{p.parent.name}/{p.name}", "text": text[:MAX_CHARS]})
        if len(out) >= limit:
            break
    return out


def math_pages() -> list[dict]:
    rng = random.Random(0)
    scipy = sorted(SCIPY.rglob("*.html"))
    rng.shuffle(scipy)
    maxima = sorted(MAXIMA.rglob("*.html"))
    rng.shuffle(maxima)
    # SciPy pages whose docstrings carry formulas (Sphinx math: MathJax spans)
    return _texts(scipy, N_SCIPY, need=r'class="math') + _texts(maxima, N_MAXIMA)


def other_pages() -> list[dict]:
    out = []
    for name in ("positive.jsonl", "negative.jsonl"):
        for line in (ROOT / "samples/quality" / name).read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            out.append({"id": f"quality/{name}/{d.get('id', len(out))}", "text": d["text"][:MAX_CHARS]})
    cfg = ExtractConfig(favor_precision=False)
    with tarfile.open(ROOT / "samples/site/site.tar.gz") as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if m.isfile() and m.name.endswith(".html") and ("/python/" in m.name or "/debian-reference/" in m.name):
                html = tar.extractfile(m).read().decode("utf-8", "replace")
                text, _ = extract_html(html, "", cfg)
                if len(text) >= 400:
                    out.append({"id": m.name, "text": text[:MAX_CHARS]})
    return out


def write(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    for r in rows:
        buf.write(json.dumps(r, ensure_ascii=False) + "\n")
    path.write_text(buf.getvalue(), encoding="utf-8")
    print(f"{path}: {len(rows)} texts, {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    write(HERE / "math.jsonl", math_pages())
    write(HERE / "other.jsonl", other_pages())
