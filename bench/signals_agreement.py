"""Quality signals: our fast path vs datatrove's own four filters, verdicts and CPU time.

On N real pages in many languages (bench/pages.py: Debian Handbook in 26 languages, Debian
Reference in 11, Python and SciPy docs), extracted with stepcrawl's default extractor and
language-identified with our LangIdStep, this runs on the SAME texts:

- ``datatrove``: its stock ``GopherQualityFilter``, ``GopherRepetitionFilter``,
  ``FineWebQualityFilter``, ``C4QualityFilter`` (default thresholds, ``language`` = the datatrove
  key of the page's language — stock spaCy tokenizer), each ``filter()`` on every page;
- ``stepcrawl fast``: ``QualitySignalsStep(SignalsConfig(mode="fast"))`` — all four verdicts
  and every stored signal value from one tokenization;
- ``stepcrawl datatrove mode``: ``QualitySignalsStep(SignalsConfig(mode="datatrove"))``.

It prints per-filter verdict agreement (overall and per language) and the CPU seconds of each.

Usage: ``python bench/signals_agreement.py [--pages 1500] [--md out.md]``
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
if os.path.dirname(_HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

FILTERS = ("gopher_quality", "gopher_repetition", "fineweb_quality", "c4_quality")


def load_pages_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_pages", os.path.join(_HERE, "pages.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def extracted_docs(n: int, cache: Path | None = None, extractor: str = "trafilatura") -> list[dict]:
    """[{group, url, text, lang}] for up to n real pages (cached as JSONL: extraction is slow)."""
    if cache is not None and cache.exists():
        return [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    from stepcrawl.document import Document
    from stepcrawl.extract import ExtractConfig, RawRecord, extract_record
    from stepcrawl.langid import LangIdStep

    pages = load_pages_module().collect(n)
    cfg = ExtractConfig(extractor=extractor) if "extractor" in ExtractConfig.__dataclass_fields__ else ExtractConfig()
    lid = LangIdStep()
    out = []
    for i, (group, url, body) in enumerate(pages):
        raw = RawRecord("pages", i, f"<urn:page:{i}>", url, None, 200, "text/html; charset=utf-8", body)
        doc = extract_record(raw, cfg)
        if not isinstance(doc, Document):
            continue
        tagged = lid.process(doc)
        lang = tagged.lang if isinstance(tagged, Document) else None
        out.append({"group": group, "url": url, "text": doc.text, "lang": lang})
    if cache is not None:
        cache.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in out), encoding="utf-8")
    return out


def datatrove_verdicts(docs: list[dict]) -> tuple[list[dict[str, float]], float]:
    """datatrove's stock filters on every doc → (verdicts per doc, CPU s)."""
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    from stepcrawl.quality.signals import SignalsConfig, datatrove_language, filter_verdicts

    c4_kwargs = SignalsConfig().c4_quality
    built: dict[str, dict] = {}
    langs = [datatrove_language(d["lang"]) for d in docs]
    for lang in set(langs):
        built[lang] = {"gopher_quality": GopherQualityFilter(language=lang), "gopher_repetition": GopherRepetitionFilter(language=lang),
                       "fineweb_quality": FineWebQualityFilter(language=lang), "c4_quality": C4QualityFilter(language=lang, **c4_kwargs)}
        filter_verdicts("warm up the tokenizer.", built[lang])
    t = time.process_time()
    out = [filter_verdicts(d["text"][:200_000], built[lang])[0] for d, lang in zip(docs, langs)]
    return out, time.process_time() - t


def step_verdicts(docs: list[dict], mode: str, values: bool = True) -> tuple[list[dict[str, float]], float]:
    from stepcrawl.document import Document
    from stepcrawl.quality.signals import QualitySignalsStep, SignalsConfig

    step = QualitySignalsStep(SignalsConfig(mode=mode), values=values)
    ds = [Document(id=str(i), text=d["text"], lang=d["lang"]) for i, d in enumerate(docs)]
    for lang in {d.lang for d in ds}:
        step.process(Document(id="w", text="warm up the tokenizer.", lang=lang))
    t = time.process_time()
    out = [step.process(d).quality for d in ds]
    return [{f: q[f] for f in FILTERS} for q in out], time.process_time() - t


def agreement(a: list[dict], b: list[dict], docs: list[dict]) -> tuple[dict[str, float], dict[str, dict[str, float]], list]:
    per = {f: sum(x[f] == y[f] for x, y in zip(a, b)) / max(1, len(a)) for f in FILTERS}
    by_lang: dict[str, Counter] = defaultdict(Counter)
    n_lang: Counter = Counter()
    diffs = []
    for x, y, d in zip(a, b, docs):
        n_lang[d["lang"]] += 1
        for f in FILTERS:
            if x[f] == y[f]:
                by_lang[d["lang"]][f] += 1
            else:
                diffs.append((f, d["url"], x[f], y[f]))
    lang_table = {lang: {f: by_lang[lang][f] / n for f in FILTERS} for lang, n in n_lang.items()}
    return per, lang_table, diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=1500)
    ap.add_argument("--cache", default=None, help="JSONL cache of the extracted pages (default: none)")
    ap.add_argument("--md", help="also write the tables to this Markdown file")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    from loguru import logger

    logger.remove()
    docs = extracted_docs(args.pages, Path(args.cache) if args.cache else None)
    if not docs:
        sys.exit("no pages: install python3.11-doc debian-reference-* debian-handbook python-scipy-doc")
    dt, dt_cpu = datatrove_verdicts(docs)
    fast, fast_cpu = step_verdicts(docs, "fast")
    fast_nv, fast_nv_cpu = step_verdicts(docs, "fast", values=False)
    exact, exact_cpu = step_verdicts(docs, "datatrove")
    per, lang_table, diffs = agreement(dt, fast, docs)
    per_exact, _, _ = agreement(dt, exact, docs)
    langs = Counter(d["lang"] for d in docs)
    lines = [f"{len(docs)} real pages, {len(langs)} languages ({', '.join(f'{k} {v}' for k, v in langs.most_common())}); "
             f"{sum(len(d['text']) for d in docs) / 1e6:.1f} M characters of extracted text.", "",
             "| signals | CPU s | pages/s | × datatrove | " + " | ".join(f"{f} agreement" for f in FILTERS) + " |",
             "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in FILTERS) + " |",
             f"| datatrove's 4 filters (stock spaCy tokenizer), every filter on every page | {dt_cpu:.2f} | {len(docs) / dt_cpu:.0f} | 1.00 | "
             + " | ".join("(reference)" for _ in FILTERS) + " |",
             f"| stepcrawl fast: 4 verdicts + 21 signal values | {fast_cpu:.2f} | {len(docs) / fast_cpu:.0f} | {dt_cpu / fast_cpu:.2f} | "
             + " | ".join(f"{100 * per[f]:.2f}%" for f in FILTERS) + " |",
             f"| stepcrawl fast: 4 verdicts only | {fast_nv_cpu:.2f} | {len(docs) / fast_nv_cpu:.0f} | {dt_cpu / fast_nv_cpu:.2f} | "
             + " | ".join(f"{100 * per[f]:.2f}%" for f in FILTERS) + " |",
             f"| stepcrawl `mode=datatrove` (datatrove's filters, zoned tokenizer) + values | {exact_cpu:.2f} | {len(docs) / exact_cpu:.0f} | {dt_cpu / exact_cpu:.2f} | "
             + " | ".join(f"{100 * per_exact[f]:.2f}%" for f in FILTERS) + " |",
             "", "Per language (fast vs datatrove, verdict agreement):", "",
             "| lang | pages | " + " | ".join(FILTERS) + " |", "| --- | ---: | " + " | ".join("---:" for _ in FILTERS) + " |"]
    for lang, n in langs.most_common():
        lines.append(f"| {lang} | {n} | " + " | ".join(f"{100 * lang_table[lang][f]:.1f}%" for f in FILTERS) + " |")
    pass_rate = {f: sum(v[f] for v in dt) / len(dt) for f in FILTERS}
    lines += ["", "datatrove pass rates: " + ", ".join(f"{f} {100 * r:.1f}%" for f, r in pass_rate.items()),
              f"verdict differences: {len(diffs)}" + ("".join(f"\n  {f}: {u} (datatrove {a:.0f}, fast {b:.0f})" for f, u, a, b in diffs[:20]))]
    table = "\n".join(lines)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
