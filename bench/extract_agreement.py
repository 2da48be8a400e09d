"""Extractors side by side: trafilatura vs resiliparse, and the math pre-pass on vs off.

On the same real pages (bench/pages.py: Debian Handbook / Reference in many languages, Python
and SciPy docs) this measures, in one run:

- pages/s (CPU) of ``extract_html`` with trafilatura and with resiliparse, math pre-pass on/off;
- agreement of the main text: token-level F1 (multiset overlap of lower-cased ``\\w+`` tokens,
  the measure used to compare extractors in the trafilatura / resiliparse evaluations);
- agreement of the decision: the share of pages that both extractors keep (or both drop) after
  the full per-document curate steps (langid, quality signals, tiers at ``min_tier=Medium``);
- formula recall on SciPy's MathJax pages: of the formulas in the HTML (Sphinx ``class="math"``
  spans and divs, read with lxml independently of the pre-pass), the share whose LaTeX is in the
  extracted text, per extractor, with and without the pre-pass.

Usage: ``python bench/extract_agreement.py [--pages 600] [--math-pages 150]``
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
if os.path.dirname(_HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

_TOKEN = re.compile(r"\w+")


def load_pages_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pages", os.path.join(_HERE, "pages.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def token_f1(a: str, b: str) -> float:
    ta, tb = Counter(_TOKEN.findall(a.lower())), Counter(_TOKEN.findall(b.lower()))
    if not ta and not tb:
        return 1.0
    overlap = sum((ta & tb).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / sum(tb.values()), overlap / sum(ta.values())
    return 2 * p * r / (p + r)


def extract_all(pages, extractor: str, math: bool) -> tuple[list[str], float]:
    from stepcrawl.extract import ExtractConfig, decode_html, extract_html

    cfg = ExtractConfig(extractor=extractor, math=math)
    htmls = [decode_html(body)[0] for _, _, body in pages]
    t = time.process_time()
    out = []
    for (_, url, _), html in zip(pages, htmls):
        try:
            out.append(extract_html(html, url, cfg)[0].strip())
        except Exception:
            out.append("")
    return out, time.process_time() - t


def decisions(texts: list[str]) -> list[bool]:
    """Kept (True) / dropped after langid → fast signals → tier (min_tier Medium), per page."""
    from stepcrawl.curate import CurateConfig, annotate_steps, filter_steps
    from stepcrawl.document import Document
    from stepcrawl.steps import Drop, apply_steps

    cfg = CurateConfig()
    steps = annotate_steps(cfg) + filter_steps(cfg)
    out = []
    for i, t in enumerate(texts):
        if not t:
            out.append(False)
            continue
        out.append(not isinstance(apply_steps(Document(id=str(i), text=t), steps), Drop))
    return out


def html_formulas(html: str) -> list[str]:
    """The TeX of each Sphinx MathJax formula in the page (span/div class="math"), whitespace-free."""
    import lxml.html

    root = lxml.html.document_fromstring(html)
    out = []
    for el in root.xpath('//*[contains(concat(" ", normalize-space(@class), " "), " math ")]'):
        if el.tag not in ("span", "div"):
            continue
        tex = el.text_content().strip()
        for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
            if tex.startswith(a) and tex.endswith(b):
                tex = tex[2:-2]
        tex = re.sub(r"\s+", "", tex)
        if tex:
            out.append(tex)
    return out


def math_recall(pages, texts: list[str]) -> tuple[int, int, int]:
    """(formulas kept as $…$ / $$…$$ LaTeX, formulas whose TeX is in the text in any form, total)."""
    from stepcrawl.extract import decode_html

    delimited = anyform = total = 0
    for (_, _, body), text in zip(pages, texts):
        squashed = re.sub(r"\s+", "", text)
        for tex in html_formulas(decode_html(body)[0]):
            total += 1
            delimited += f"${tex}$" in squashed
            anyform += tex in squashed
    return delimited, anyform, total


def run(n_pages: int, n_math: int) -> dict:
    pm = load_pages_module()
    pages = pm.collect(n_pages)
    math_pages = pm.collect(n_math, only="scipy")
    res: dict = {"pages": len(pages), "math_pages": len(math_pages), "langs": len({g for g, _, _ in pages})}
    texts = {}
    for ex in ("trafilatura", "resiliparse"):
        texts[ex], res[f"{ex}_cpu"] = extract_all(pages, ex, True)
    f1 = [token_f1(a, b) for a, b in zip(texts["trafilatura"], texts["resiliparse"])]
    res["f1_mean"], res["f1_median"] = statistics.mean(f1), statistics.median(f1)
    res["f1_ge_0.8"] = sum(x >= 0.8 for x in f1) / len(f1)
    res["chars"] = {ex: sum(map(len, t)) for ex, t in texts.items()}
    kept = {ex: decisions(t) for ex, t in texts.items()}
    res["kept"] = {ex: sum(k) for ex, k in kept.items()}
    res["decision_agreement"] = sum(a == b for a, b in zip(kept["trafilatura"], kept["resiliparse"])) / len(pages)
    for ex in ("trafilatura", "resiliparse"):
        for math in (False, True):
            t, cpu = extract_all(math_pages, ex, math)
            res[f"math_{ex}_{math}"] = {"cpu": cpu, "recall": math_recall(math_pages, t)}
    return res


def table(r: dict) -> str:
    n, m = r["pages"], r["math_pages"]
    tr, rs = r["trafilatura_cpu"], r["resiliparse_cpu"]
    lines = [f"{n} real pages ({r['langs']} doc sets / language editions) + {m} SciPy MathJax pages; one process, CPU seconds.", "",
             "| extractor | pages/s (CPU) | × trafilatura | chars extracted | pages kept after curate steps |",
             "| --- | ---: | ---: | ---: | ---: |",
             f"| trafilatura (default) | {n / tr:.1f} | 1.00 | {r['chars']['trafilatura']:,} | {r['kept']['trafilatura']} / {n} |",
             f"| resiliparse | {n / rs:.1f} | {tr / rs:.2f} | {r['chars']['resiliparse']:,} | {r['kept']['resiliparse']} / {n} |",
             "",
             f"Agreement resiliparse vs trafilatura: token F1 mean {r['f1_mean']:.3f}, median {r['f1_median']:.3f}, "
             f"{100 * r['f1_ge_0.8']:.1f}% of pages with F1 ≥ 0.8; same keep/drop decision on {100 * r['decision_agreement']:.1f}% of pages.",
             "", "| math pages (SciPy) | pages/s plain | pages/s with math pre-pass | math cost | recall plain: as $…$/$$…$$ (TeX in any form) | recall with pre-pass: as $…$/$$…$$ (any form) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for ex in ("trafilatura", "resiliparse"):
        off, on = r[f"math_{ex}_False"], r[f"math_{ex}_True"]
        do, ao, to = off["recall"]
        dn, an, tn = on["recall"]
        lines.append(f"| {ex} | {m / off['cpu']:.1f} | {m / on['cpu']:.1f} | {on['cpu'] / off['cpu']:.2f}× | "
                     f"{100 * do / max(1, to):.1f}% ({100 * ao / max(1, to):.1f}%) of {to} | {100 * dn / max(1, tn):.1f}% ({100 * an / max(1, tn):.1f}%) of {tn} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=600)
    ap.add_argument("--math-pages", type=int, default=150)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print(table(run(args.pages, args.math_pages)))


if __name__ == "__main__":
    main()
