"""Benchmark: the Beam curate pipeline (DirectRunner, in-process and multi-process) vs the
local executor (`stepcrawl curate`), on the same WARC crawl, one run each.

    .venv/bin/python bench/beam.py [--pages 400] [--rounds 20] [--out docs/benchmarks/beam.md]

Each contender runs in a fresh Python process (so each pays its own model loading, none gets
the other's warm caches); the time is measured inside that process around the curate call
(imports excluded). All contenders must produce the same document ids and drop counts — the
benchmark checks it. Printed as a table with ratios to the local executor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds tokenize.py, which would shadow the stdlib module of that name: import from the root
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CHILD = r"""
import json, sys, time, logging
logging.disable(logging.WARNING)
kind, crawl, out, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
from stepcrawl.curate import CurateConfig, curate
import beam_pipelines.curate as bc
t0 = time.perf_counter()
if kind.startswith("local"):
    workers = int(kind.split(":")[1])
    curate([crawl], out, CurateConfig(langs=["en"]), workers=workers, progress=False)
else:
    args = ["--input", crawl, "--output", out, "--langs", "en", "--runner", "DirectRunner", "--cc_max_rounds", rounds]
    if kind == "beam:multi":
        args += ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    else:
        args += ["--direct_num_workers", "1", "--direct_running_mode", "in_memory"]
    bc.run(args)
print("WALL", time.perf_counter() - t0)
"""


def run_child(kind: str, crawl: str, out: str, rounds: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, crawl, out, str(rounds)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return float(next(line for line in proc.stdout.splitlines() if line.startswith("WALL")).split()[1])


def result_of(out: Path) -> tuple[set[str], dict]:
    from stepcrawl.io import read_documents

    ids = {d.id for d in read_documents(out / "web")}
    return ids, json.loads((out / "web" / "_manifest.json").read_text())["drops"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=400, help="unique pages in the crawl (plus ~25%% duplicates and spam)")
    ap.add_argument("--rounds", type=int, default=20, help="--cc_max_rounds for the Beam pipeline (its default)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "beam.md"))
    args = ap.parse_args()

    from beam_pipelines.testing import SampleSpec, sample_pages, write_sample_warcs

    n = args.pages
    spec = SampleSpec(n_unique=n, n_exact=n // 10, n_near=n // 10, n_url_dups=n // 40, n_spam=n // 10, n_files=8, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-beam-"))
    crawl = tmp / "crawl"
    write_sample_warcs(str(crawl), spec)
    n_records = len(sample_pages(spec))  # the records written (deterministic for a spec)
    mb = sum(f.stat().st_size for f in crawl.iterdir()) / 1e6

    contenders = [
        ("local executor (`stepcrawl curate`, 1 process)", "local:1"),
        ("local executor (`--workers 2`)", "local:2"),
        ("Beam DirectRunner, in-process (1 worker)", "beam:single"),
        ("Beam DirectRunner, multi_processing (2 workers)", "beam:multi"),
    ]
    rows, results = [], {}
    for label, kind in contenders:
        out = tmp / kind.replace(":", "_")
        wall = run_child(kind, str(crawl), str(out), args.rounds)
        results[kind] = result_of(out)
        rows.append((label, wall))
        print(f"  {label}: {wall:.1f} s", flush=True)
    base_ids, base_drops = results["local:1"]
    for kind, (ids, drops) in results.items():
        if ids != base_ids or drops != base_drops:
            raise SystemExit(f"{kind}: output differs from the local executor's ({len(ids)} vs {len(base_ids)} docs, {drops} vs {base_drops})")

    base, base2 = rows[0][1], rows[1][1]
    table = ["| contender | wall time (s) | records/s | × local (1 process) | × local (`--workers 2`) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for label, wall in rows:
        table.append(f"| {label} | {wall:.1f} | {n_records / wall:.0f} | {wall / base:.2f} | {wall / base2:.2f} |")
    text = "\n".join(table)
    print(text)
    drops = ", ".join(f"{k}={v}" for k, v in sorted(base_drops.items()))
    md = f"""# Beam curate pipeline vs the local executor

Command: `.venv/bin/python bench/beam.py --pages {n} --rounds {args.rounds}` (one run of each, fresh process each;
time inside the process around the curate call, imports excluded; machine: {platform.machine()},
{os.cpu_count()} cores, shared with other jobs — compare ratios, not seconds).

Input: {n_records} WARC response records in 8 gzipped WARC files ({mb:.1f} MB), built by
`beam_pipelines.testing` from the shipped real prose (`samples/quality/`), with exact, near and
URL duplicates, spam, a German page, a 404 and an image. Every contender produced the same
{len(base_ids)} document ids and the same drops ({drops}).

{text}

Reading: the Beam graph is long (extract/annotate/filter, URL and exact dedup, LSH buckets,
{args.rounds} unrolled Large-Star/Small-Star rounds = {2 * args.rounds} GroupByKeys, pointer jumping,
joins, Parquet sink, manifest). Dedup decides on small `DocKeys` records (id, tier, length,
URL key, text hash, band keys) and moves each document through one shuffle only (the final
join with its verdict). On the DirectRunner every GroupByKey is a stage with a fixed
cost, which this small input does not amortise; the per-document work (trafilatura,
fastText, datatrove signals, MinHash) is the same code on both paths. `multi_processing` pays
for worker start-up and gRPC hops per stage on top. On a cluster runner the fixed costs stay
roughly constant while the per-document work is spread over workers.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    t = time.time()
    rc = main()
    print(f"bench/beam.py: {time.time() - t:.0f} s")
    sys.exit(rc)
