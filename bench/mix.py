"""build-mix throughput and peak memory vs a naive concatenate-everything packer.

    .venv/bin/python bench/mix.py            # default: ~2 minutes on 2 cores
    .venv/bin/python bench/mix.py --quick    # smaller corpus, for a smoke run

Both packers read the same synthetic token shards (``curricula.synthetic``, the tokenizer's
exact layout: 7 sources) and produce the same budget of tokens at the same sequence length:

- **stepcrawl build-mix**: streaming (mmap, Feistel order, one document at a time), writes
  tokens + mask + segments + lineage.parquet + manifests.
- **naive numpy**: loads every source fully into RAM (``np.fromfile``), samples documents with
  ``Generator.choice``, concatenates everything and reshapes to ``[n, seq_len]`` — the common
  notebook approach (it writes tokens only: no masks, no segments, no lineage).

Each packer runs in a fresh subprocess so peak RSS (``ru_maxrss``) is its own; a second run
under ``tracemalloc`` gives the peak Python/numpy heap (mmap'd file pages are not heap). The
corpus is measured at two sizes to show which memory grows with the corpus.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds a tokenize.py that would shadow the stdlib module (pandas imports it): run with
# the repository root on the path instead of this script's folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
import tracemalloc

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SOURCES = ["web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning"]
WEIGHTS = [0.5, 0.2, 0.05, 0.05, 0.05, 0.05, 0.1]
SEQ_LEN = 2048


def curriculum(budget: int) -> dict:
    return {
        "name": "bench",
        "attention_block": 128,
        "sources": {s: {} for s in SOURCES},
        "default_max_epochs": 100,
        "stages": [{
            "name": "s",
            "phases": [{
                "name": "p",
                "tokens": budget,
                "seq_len": SEQ_LEN,
                "mixture": dict(zip(SOURCES, WEIGHTS)),
                "schedule": {"global_batch": 64, "lr": {"shape": "constant", "peak": 1e-3}},
            }],
        }],
    }


def run_stepcrawl(tokens: Path, out: Path, budget: int) -> None:
    from curricula.mixer import build_mix
    from curricula.schema import validate_curriculum

    build_mix(validate_curriculum(curriculum(budget)), "s", tokens, out, seed=0, progress=False)


def run_naive(tokens: Path, out: Path, budget: int) -> None:
    from tokenizer.indexed import IndexedDataset

    rng = np.random.default_rng(0)
    pieces = []
    for src, w in zip(SOURCES, WEIGHTS):
        manifest = json.loads((tokens / src / "manifest.json").read_text())
        arrays, sizes = [], []
        for sh in manifest["shards"]:  # load everything
            ds = IndexedDataset(tokens / src / sh["name"])
            arrays.append(np.fromfile(ds.bin_path, dtype=ds.dtype))
            sizes.append(np.array(ds.sizes, dtype=np.int64))
        data = np.concatenate(arrays)
        lens = np.concatenate(sizes)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        need = int(budget * w)
        got = 0
        while got < need:
            d = rng.choice(len(lens), size=max(1, need // max(int(lens.mean()), 1)))
            for i in d:
                pieces.append(data[starts[i] : starts[i] + lens[i]])
                got += int(lens[i])
                if got >= need:
                    break
    order = rng.permutation(len(pieces))
    flat = np.concatenate([pieces[i] for i in order])[:budget]
    n = -(-flat.size // SEQ_LEN)
    packed = np.zeros(n * SEQ_LEN, dtype=flat.dtype)
    packed[: flat.size] = flat
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tokens.npy", packed.reshape(n, SEQ_LEN))


def worker(method: str, tokens: str, out: str, budget: int, trace: bool) -> None:
    fn = {"stepcrawl": run_stepcrawl, "naive": run_naive}[method]
    import curricula.mixer  # noqa: F401  (imports are not part of the measurement)
    import tokenizer.indexed  # noqa: F401
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    fn(Path(tokens), Path(out), budget)
    wall = time.perf_counter() - t0
    heap = tracemalloc.get_traced_memory()[1] if trace else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    anon = int(status.get("RssAnon", "0 kB").split()[0]) * 1024
    print(json.dumps({"wall_s": wall, "heap_peak": heap, "rss_peak": rss, "rss_anon_end": anon}))


def measure(method: str, tokens: Path, budget: int, tmp: Path) -> dict:
    res = {}
    for trace in (False, True):
        out = tmp / f"{method}-{trace}-{time.time_ns()}"
        cmd = [sys.executable, __file__, "--worker", method, str(tokens), str(out), str(budget)]
        if trace:
            cmd.append("--trace")
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        if p.returncode:
            raise SystemExit(p.stderr)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if trace:
            res["heap_peak"] = r["heap_peak"]
        else:
            res.update(wall_s=r["wall_s"], rss_peak=r["rss_peak"], rss_anon_end=r["rss_anon_end"])
    res["tok_per_s"] = budget / res["wall_s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=4, metavar=("METHOD", "TOKENS", "OUT", "BUDGET"))
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.worker:
        m, tok, out, budget = args.worker
        worker(m, tok, out, int(budget), args.trace)
        return

    from rich.console import Console
    from rich.table import Table

    from curricula.synthetic import write_corpus

    docs = [2_000, 8_000] if args.quick else [6_000, 24_000]
    budget = 2_000_000 if args.quick else 8_000_000
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        for n in docs:
            tokens = tmp / f"tokens-{n}"
            t0 = time.perf_counter()
            manifests = write_corpus(tokens, {s: n for s in SOURCES}, min_len=32, max_len=1500, docs_per_shard=4000)
            corpus = sum(m["n_tokens"] for m in manifests.values())
            print(f"corpus {corpus / 1e6:.1f}M tokens written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            base = measure("naive", tokens, budget, tmp)
            ours = measure("stepcrawl", tokens, budget, tmp)
            rows.append((corpus, budget, ours, base))
    t = Table(title=f"build-mix vs naive numpy packing ({budget / 1e6:.0f}M tokens at seq_len {SEQ_LEN}, 7 sources)")
    for col in ("corpus tokens", "packer", "tokens/s", "wall s", "peak heap", "peak RSS*",
                "heap ratio naive/ours", "speed ratio ours/naive"):
        t.add_column(col, justify="right")
    lines = []
    for corpus, budget, ours, base in rows:
        for name, r in (("stepcrawl build-mix", ours), ("naive numpy", base)):
            t.add_row(f"{corpus / 1e6:.0f}M", name, f"{r['tok_per_s'] / 1e6:.2f}M", f"{r['wall_s']:.2f}",
                      f"{r['heap_peak'] / 2**20:.0f} MiB", f"{r['rss_peak'] / 2**20:.0f} MiB",
                      f"{base['heap_peak'] / ours['heap_peak']:.1f}×" if name.startswith("step") else "",
                      f"{ours['tok_per_s'] / base['tok_per_s']:.2f}×" if name.startswith("step") else "")
            lines.append(
                f"| {corpus / 1e6:.0f}M | {name} | {r['tok_per_s'] / 1e6:.2f}M | {r['wall_s']:.2f} | "
                f"{r['heap_peak'] / 2**20:.0f} MiB | {r['rss_peak'] / 2**20:.0f} MiB |"
            )
    Console(width=170).print(t)
    print("* peak RSS counts mapped page-cache pages of the shards (shared, reclaimable); the heap\n"
          "  (tracemalloc: Python + numpy allocations) is the private memory that grows with the corpus.")
    print("\nmarkdown:\n| corpus tokens | packer | tokens/s | wall s | peak heap | peak RSS* |\n"
          "|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
