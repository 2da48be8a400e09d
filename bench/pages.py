"""Real HTML pages for the extraction / quality benchmarks, from Debian documentation packages.

Installed offline-capable with ``apt-get install -y python3.11-doc 'debian-reference-*'
debian-handbook python-scipy-doc`` (Debian doc packages; nothing is downloaded at run time):

- Debian Administrator's Handbook: 26 language editions (ar, ca, cs, da, de, el, en, es, fa, fr,
  hr, id, it, ja, ko, nb, nl, pl, pt-BR, ro, ru, sv, tr, vi, zh-CN, zh-TW),
- Debian Reference: 11 languages,
- Python 3.11 docs (English prose + code),
- SciPy docs (English, MathJax math: ``<span class="math">\\(…\\)</span>``).

:func:`collect` takes a deterministic, language-balanced sample (round-robin over the groups,
sorted file names), so two runs measure the same pages.
"""

from __future__ import annotations

from pathlib import Path

HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
REFERENCE = Path("/usr/share/debian-reference")
PYTHON = Path("/usr/share/doc/python3.11/html")
SCIPY = Path("/usr/share/doc/python-scipy-doc/html")


def groups() -> dict[str, list[Path]]:
    """Page groups (one per language edition / doc set), each sorted."""
    out: dict[str, list[Path]] = {}
    if HANDBOOK.is_dir():
        for d in sorted(HANDBOOK.iterdir()):
            if d.is_dir() and "-" in d.name:
                files = sorted(d.glob("*.html"))
                if files:
                    out[f"handbook:{d.name}"] = files
    if REFERENCE.is_dir():
        for f in sorted(REFERENCE.glob("*.html")):
            lang = f.name.split(".")[1] if f.name.count(".") >= 2 else "en"
            out.setdefault(f"reference:{lang}", []).append(f)
    if PYTHON.is_dir():
        out["python"] = sorted(p for sub in ("library", "tutorial", "howto", "reference") for p in (PYTHON / sub).glob("*.html"))
    if SCIPY.is_dir():
        out["scipy"] = scipy_math_pages()
    return {k: v for k, v in out.items() if v}


def scipy_math_pages() -> list[Path]:
    """SciPy doc pages that carry MathJax math (Sphinx ``class="math"`` spans/divs)."""
    if not SCIPY.is_dir():
        return []
    return sorted(f for f in SCIPY.rglob("*.html") if b'class="math' in f.read_bytes())


def collect(n: int, only: str | None = None) -> list[tuple[str, str, bytes]]:
    """Up to ``n`` pages as (group, url, html bytes), round-robin over the groups (prefix
    ``only`` restricts them, e.g. ``"scipy"``). Empty when no doc package is installed."""
    gs = {k: v for k, v in groups().items() if only is None or k.startswith(only)}
    pages: list[tuple[str, str, bytes]] = []
    i = 0
    while len(pages) < n and gs:
        for name in list(gs):
            files = gs[name]
            if i < len(files):
                f = files[i]
                pages.append((name, f"http://docs.test/{name.replace(':', '/')}/{f.name}", f.read_bytes()))
                if len(pages) >= n:
                    break
        i += 1
        if all(i >= len(v) for v in gs.values()):
            break
    return pages
