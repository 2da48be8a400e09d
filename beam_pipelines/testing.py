"""A small, realistic WARC crawl for tests, benchmarks and trying the pipelines out.

Pages are built from the shipped real prose in ``samples/quality/positive.jsonl`` (Python and
Debian documentation paragraphs) and web spam in ``negative.jsonl``, wrapped in HTML with
navigation/footer boilerplate, and written with warcio as gzipped WARC response records. The
crawl deliberately contains every case the curate pipeline must handle:

* unique pages (kept), pages re-served under a second URL (exact duplicates), pages with a
  word or two changed (near duplicates), the same URL fetched twice (URL duplicates);
* spam pages (quality drops), a German page (language), a 404 and an image (extraction drops).

Written through ``FileSystems`` so it can populate ``gs://`` buckets as well.
"""

from __future__ import annotations

import html
import io
import json
import random
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


GERMAN = (
    "Die Paketverwaltung ist eines der wichtigsten Werkzeuge eines Debian-Systems. Sie sorgt dafür, "
    "dass Programme mit allen Abhängigkeiten installiert, aktualisiert und wieder entfernt werden "
    "können, ohne dass der Verwalter jede Datei von Hand verfolgen muss. Die Werkzeuge apt und dpkg "
    "arbeiten dabei zusammen: dpkg installiert einzelne Pakete, während apt die Abhängigkeiten auflöst "
    "und die Pakete aus den konfigurierten Quellen herunterlädt. Wer ein System stabil halten möchte, "
    "sollte nur Pakete aus vertrauenswürdigen Quellen verwenden und regelmäßig Sicherheitsaktualisierungen "
    "einspielen. Die Konfiguration der Quellen befindet sich in einer Datei im Verzeichnis der "
    "Paketverwaltung, und jede Änderung wird erst nach einer Aktualisierung der Paketlisten wirksam."
)


@dataclass(frozen=True)
class SampleSpec:
    n_unique: int = 40  # distinct real pages
    n_exact: int = 6  # of them re-served under another URL (same text, different boilerplate)
    n_near: int = 6  # of them re-served with a few words changed
    n_url_dups: int = 2  # of them fetched twice under the same URL
    n_spam: int = 8
    n_files: int = 3
    paragraphs_per_page: int = 3
    seed: int = 0


def _load(name: str) -> list[str]:
    """Texts of ``samples/quality/<name>`` (shipped next to the package in the repository)."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "samples" / "quality" / name
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


def _page(title: str, body: str, rng: random.Random) -> bytes:
    paras = "\n".join(f"<p>{html.escape(p)}</p>" for p in body.split("\n") if p.strip())
    nav = " | ".join(f'<a href="/{w}">{w.title()}</a>' for w in rng.sample(["home", "docs", "blog", "about", "faq", "news"], 4))
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><nav>{nav}</nav><main><article><h1>{html.escape(title)}</h1>\n{paras}\n</article></main>"
        f"<footer>© 2024 Example Docs. All rights reserved. <a href='/privacy'>Privacy</a></footer></body></html>"
    ).encode("utf-8")


def _mutate(text: str, rng: random.Random, n_words: int = 2) -> str:
    words = text.split(" ")
    for _ in range(n_words):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["quickly", "carefully", "usually", "often", "rarely", "simply"])
    return " ".join(words)


def sample_pages(spec: SampleSpec = SampleSpec()) -> list[tuple[str, int, str, bytes]]:
    """``(url, http status, content type, payload)`` for every record of the sample crawl."""
    rng = random.Random(spec.seed)
    pos, neg = _load("positive.jsonl"), _load("negative.jsonl")
    k = spec.paragraphs_per_page
    if spec.n_unique * k <= len(pos):  # disjoint paragraphs: no two unique pages overlap
        bodies = ["\n".join(pos[i * k : (i + 1) * k]) for i in range(spec.n_unique)]
    else:  # larger crawls (benchmarks): distinct paragraph combinations, rarely sharing one
        combos: set[tuple[int, ...]] = set()
        while len(combos) < spec.n_unique:
            combos.add(tuple(rng.sample(range(len(pos)), k)))
        bodies = ["\n".join(pos[j] for j in c) for c in sorted(combos)]
    pages: list[tuple[str, int, str, bytes]] = []
    html_ct = "text/html; charset=utf-8"
    for i, body in enumerate(bodies):
        pages.append((f"https://docs.example.org/page/{i:04d}.html", 200, html_ct, _page(f"Page {i}", body, rng)))
    picks = rng.sample(range(spec.n_unique), spec.n_exact + spec.n_near + spec.n_url_dups)
    for j, i in enumerate(picks[: spec.n_exact]):
        pages.append((f"https://mirror{j}.example.net/copy/{i:04d}", 200, html_ct, _page(f"Page {i}", bodies[i], rng)))
    for j, i in enumerate(picks[spec.n_exact : spec.n_exact + spec.n_near]):
        pages.append((f"https://blog.example.com/post/{j:03d}", 200, html_ct, _page(f"Post {j}", _mutate(bodies[i], rng), rng)))
    for i in picks[spec.n_exact + spec.n_near :]:
        # same URL again (a re-crawl), with slightly different text so only URL dedup catches it
        pages.append((f"https://docs.example.org/page/{i:04d}.html", 200, html_ct, _page(f"Page {i}", _mutate(bodies[i], rng, 12), rng)))
    for j in range(spec.n_spam):
        spam = "\n".join(neg[(j * 3 + t) % len(neg)] for t in range(3))
        pages.append((f"https://spam{j}.example.biz/", 200, html_ct, _page("Best deals", spam, rng)))
    pages.append(("https://de.example.org/paketverwaltung", 200, html_ct, _page("Paketverwaltung", GERMAN, rng)))
    pages.append(("https://docs.example.org/missing", 404, html_ct, _page("Not found", "Page not found.", rng)))
    pages.append(("https://docs.example.org/logo.png", 200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))))
    rng.shuffle(pages)
    return pages


def write_sample_warcs(folder: str, spec: SampleSpec = SampleSpec()) -> list[str]:
    """Write the sample crawl as ``spec.n_files`` gzipped WARC files under ``folder``."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = sample_pages(spec)
    FileSystems.mkdirs(folder) if not FileSystems.exists(folder) else None
    paths = []
    for f in range(spec.n_files):
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=True)
        for n, (url, status, ctype, payload) in enumerate(pages[f :: spec.n_files]):
            reason = {200: "OK", 404: "Not Found"}.get(status, "OK")
            http = StatusAndHeaders(f"{status} {reason}", [("Content-Type", ctype), ("Content-Length", str(len(payload)))], protocol="HTTP/1.1")
            rec = writer.create_warc_record(
                url,
                "response",
                payload=io.BytesIO(payload),
                http_headers=http,
                warc_headers_dict={"WARC-Date": f"2024-05-{1 + f:02d}T12:{n % 60:02d}:00Z"},
            )
            writer.write_record(rec)
        path = FileSystems.join(folder, f"crawl-{f:05d}.warc.gz")
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            fh.write(buf.getvalue())
        paths.append(path)
    return paths
