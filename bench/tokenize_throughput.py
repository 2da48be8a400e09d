"""Tokens/second of `stepcrawl tokenize` (whole path: read Parquet, encode with meta string,
write .bin/.idx + masks + docs.parquet + sha256 manifest) against raw sentencepiece encoding of
the same texts, in the same run.

    .venv/bin/python bench/tokenize_throughput.py [--docs 4000] [--vocab 8000] [--repeat 3]

Goal (issue 5): ≥ 0.9× raw sentencepiece per core, ≥ 1.8× that on 2 processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Named so as not to shadow the stdlib `tokenize` module; still, put the repository root
# first on the path so the packages resolve when run as a script.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import resource
import shutil
import sysconfig
import tempfile
import time

from stepcrawl.document import Document  # noqa: E402
from stepcrawl.io import write_documents  # noqa: E402
from tokenizer.encode import Tokenizer, tokenize_corpus  # noqa: E402
from tokenizer.train import TokenizerConfig, train_tokenizer  # noqa: E402


def stdlib_texts(n: int) -> list[str]:
    """Real text present on every machine: the standard library's own ``.py`` files, cut into
    ~6 KB documents (read as files, not imported; site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for f in sorted(root.rglob("*.py")):
        if "site-packages" in f.parts or "dist-packages" in f.parts:
            continue
        try:
            src = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for start in range(0, len(src), 6000):
            texts.append(src[start : start + 6000])
        if len(texts) >= n:
            break
    while len(texts) < n:  # a tiny stdlib: repeat
        texts.extend(texts[: n - len(texts)])
    return texts[:n]


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each path is kept")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = stdlib_texts(args.docs)
        docs = [Document(id=f"d{i}", text=t, source="code", kind="code", lang="en") for i, t in enumerate(texts)]
        per_shard = max(1, len(docs) // 8)  # 8 input files → 8 work units
        for k in range(0, len(docs), per_shard):
            write_documents(tmp / "corpus" / "code" / f"part-{k // per_shard:05d}.parquet", docs[k : k + per_shard])
        train_tokenizer([tmp / "corpus"], tmp / "tok", TokenizerConfig(vocab_size=args.vocab, sample_docs=1000, threads=2))
        tok = Tokenizer(tmp / "tok")
        mb = sum(len(t.encode()) for t in texts) / 1e6

        # The machine may be shared: run the paths interleaved, `--repeat` rounds, and keep
        # each path's best wall time (the least-disturbed run) and best CPU time. Per core is
        # judged on CPU seconds (what one core spends, whatever else runs on the machine); the
        # 2-process figure is wall time, so it is pessimistic under load.
        wall: dict[int, float] = {}
        cpu: dict[int, float] = {}
        n_tok: dict[int, int] = {}
        for _ in range(args.repeat):
            c0, t0 = cpu_seconds(), time.perf_counter()
            n_tok[0] = sum(len(ids) for ids in tok.sp.encode(texts, num_threads=1))
            wall[0] = min(wall.get(0, 1e30), time.perf_counter() - t0)
            cpu[0] = min(cpu.get(0, 1e30), cpu_seconds() - c0)
            for workers in (1, 2):
                out = tmp / f"tokens{workers}"
                shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume
                c0, t0 = cpu_seconds(), time.perf_counter()
                m = tokenize_corpus(tmp / "corpus", tmp / "tok", out, workers=workers, progress=False)
                wall[workers] = min(wall.get(workers, 1e30), time.perf_counter() - t0)
                cpu[workers] = min(cpu.get(workers, 1e30), cpu_seconds() - c0)
                n_tok[workers] = m["code"]["n_tokens"]
    load_after = os.getloadavg()
    raw_rate = n_tok[0] / wall[0]
    raw_cpu_rate = n_tok[0] / cpu[0]

    print(f"\ncorpus: {len(texts)} docs ({len(set(texts))} distinct), {mb:.1f} MB of Python source, "
          f"vocab {tok.vocab_size}\n")
    print(f"{'path':<40}{'wall s':>8}{'CPU s':>8}{'Mtok/s':>9}{'vs raw (wall)':>15}{'per core vs raw':>17}")
    for w, label in ((0, "raw sentencepiece encode (1 thread)"), (1, "stepcrawl tokenize, 1 process"),
                     (2, "stepcrawl tokenize, 2 processes")):
        rate = n_tok[w] / wall[w]
        per_core = n_tok[w] / cpu[w] / raw_cpu_rate
        print(f"{label:<40}{wall[w]:>8.2f}{cpu[w]:>8.2f}{rate / 1e6:>9.2f}{rate / raw_rate:>14.2f}×{per_core:>16.2f}×")
    eff = (n_tok[2] / cpu[2]) / (n_tok[1] / cpu[1])
    print(f"\nparallel cost: 2 processes use {1 / eff:.2f}× the CPU of 1 for the same tokens; on 2 idle cores the "
          f"2-process wall speed would be ≈ {2 * n_tok[2] / cpu[2] / raw_cpu_rate:.2f}× raw (CPU-bound, 8 equal shards)")
    print(f"\nbest of {args.repeat} rounds; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores")
    print("\n(stepcrawl's count includes meta-string tokens and EOS, and writes shards + sha256.)")


if __name__ == "__main__":
    main()
