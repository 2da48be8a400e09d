"""PDF book extraction speed: pages/s and MB/s of ``stepcrawl.books.extract_pdf`` (pypdf +
page-complete cleaning) against plain pypdf ``extract_text`` (the peer: what the old extractor
did), with each run's peak memory (a fresh process per file and side, ru_maxrss).

Real PDFs from Debian packages (apt-get install -y gap-doc octave-doc)::

    python bench/books.py                       # the default set below (both 1,000+ page books)
    python bench/books.py FILE.pdf [FILE.pdf …]

Prints a table; results go into docs/BENCHMARKS.md (section "Books: PDF extraction").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT = [
    "/usr/share/gap/pkg/TransGrp/doc/manual.pdf",
    "/usr/share/gap/doc/tut/manual.pdf",
    "/usr/share/gap/pkg/CtblLib/doc/manual.pdf",
    "/usr/share/doc/octave/octave.pdf",
    "/usr/share/gap/doc/ref/manual.pdf",
]

CHILD = r"""
import json, resource, sys, time, io
path, side = sys.argv[1], sys.argv[2]
payload = open(path, "rb").read()
from pypdf import PdfReader
from stepcrawl.books import extract_pdf  # imports (pyarrow via stepcrawl.document) outside the timing
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.process_time()
if side == "stepcrawl":
    text, meta = extract_pdf(payload)
    pages = meta["pages"]
else:
    r = PdfReader(io.BytesIO(payload))
    text = "\n\n".join((p.extract_text() or "") for p in r.pages)
    pages = len(r.pages)
cpu = time.process_time() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"pages": pages, "cpu_s": cpu, "mb": len(payload) / 1e6, "chars": len(text), "peak_mb": peak / 1024, "base_mb": base / 1024}))
"""


def run(path: str, side: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD, path, side], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    files = [f for f in (argv or DEFAULT) if Path(f).exists()]
    if not files:
        print("no PDFs found: apt-get install -y gap-doc octave-doc (skipped)", file=sys.stderr)
        return 2 if argv else 0  # run_all.sh goes on without the Debian doc packages
    print(f"{'file':<44} {'pages':>6} {'MB':>6} | {'pypdf p/s':>9} {'ours p/s':>9} {'ratio':>6} {'ours MB/s':>9} "
          f"{'ms/page':>8} {'peak MB':>8} {'MB/page':>8}")
    tot = {"pages": 0, "mb": 0.0, "peer": 0.0, "ours": 0.0}
    for f in files:
        peer, ours = run(f, "pypdf"), run(f, "stepcrawl")
        name = "/".join(Path(f).parts[-3:])[-44:]
        extra = ours["peak_mb"] - ours["base_mb"]
        print(f"{name:<44} {ours['pages']:>6} {ours['mb']:>6.2f} | {peer['pages'] / peer['cpu_s']:>9.1f} {ours['pages'] / ours['cpu_s']:>9.1f} "
              f"{peer['cpu_s'] / ours['cpu_s']:>6.2f} {ours['mb'] / ours['cpu_s']:>9.3f} {1000 * ours['cpu_s'] / ours['pages']:>8.1f} "
              f"{ours['peak_mb']:>8.0f} {extra / ours['pages']:>8.3f}")
        tot["pages"] += ours["pages"]
        tot["mb"] += ours["mb"]
        tot["peer"] += peer["cpu_s"]
        tot["ours"] += ours["cpu_s"]
    print(f"{'total':<44} {tot['pages']:>6} {tot['mb']:>6.2f} | {tot['pages'] / tot['peer']:>9.1f} {tot['pages'] / tot['ours']:>9.1f} "
          f"{tot['peer'] / tot['ours']:>6.2f} {tot['mb'] / tot['ours']:>9.3f} {1000 * tot['ours'] / tot['pages']:>8.1f}")
    print("(CPU seconds per process; peak MB = the process's max RSS incl. the interpreter; MB/page = (peak − before extraction) / pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
