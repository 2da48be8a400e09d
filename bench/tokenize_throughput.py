"""Tokens/second of `stepcrawl tokenize` (whole path: read Parquet, encode with meta string,
write .bin/.idx + masks + docs.parquet + sha256 manifest) against raw sentencepiece encoding of
the same texts, in the same run.

    .venv/bin/python bench/tokenize_throughput.py [--docs 4000] [--vocab 8000]

Goal (issue 5): ≥ 0.9× raw sentencepiece per core, ≥ 1.8× that on 2 processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Named so as not to shadow the stdlib `tokenize` module; still, put the repository root
# first on the path so the packages resolve when run as a script.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import inspect
import importlib
import tempfile
import time

from stepcrawl.document import Document  # noqa: E402
from stepcrawl.io import write_documents  # noqa: E402
from tokenizer.encode import Tokenizer, tokenize_corpus  # noqa: E402
from tokenizer.train import TokenizerConfig, train_tokenizer  # noqa: E402


def stdlib_texts(n: int) -> list[str]:
    """Real text present on every machine: the source of standard-library modules."""
    texts: list[str] = []
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}
    for name in sorted(sys.stdlib_module_names):
        if len(texts) >= n:
            break
        if name.startswith("_") or name in skip:
            continue
        try:
            mod = importlib.import_module(name)
            src = inspect.getsource(mod)
        except Exception:
            continue
        for start in range(0, len(src), 6000):  # ~6 KB documents
            texts.append(src[start : start + 6000])
    while len(texts) < n:
        texts.extend(texts[: n - len(texts)])
    return texts[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--vocab", type=int, default=8000)
    args = ap.parse_args()
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

        t0 = time.perf_counter()
        n_raw = sum(len(ids) for ids in tok.sp.encode(texts, num_threads=1))
        raw = time.perf_counter() - t0

        rows = []
        for workers in (1, 2):
            t0 = time.perf_counter()
            m = tokenize_corpus(tmp / "corpus", tmp / "tok", tmp / f"tokens{workers}", workers=workers, progress=False)
            rows.append((workers, time.perf_counter() - t0, m["code"]["n_tokens"]))

    print(f"\ncorpus: {len(texts)} docs, {mb:.1f} MB of Python source, vocab {tok.vocab_size}\n")
    print(f"{'path':<42}{'seconds':>9}{'Mtok/s':>9}{'vs raw sp':>11}")
    print(f"{'raw sentencepiece encode (1 thread)':<42}{raw:>9.2f}{n_raw / raw / 1e6:>9.2f}{1.0:>11.2f}")
    for workers, secs, n in rows:
        label = f"stepcrawl tokenize, {workers} process{'es' if workers > 1 else ''}"
        print(f"{label:<42}{secs:>9.2f}{n / secs / 1e6:>9.2f}{(n / secs) / (n_raw / raw):>11.2f}")
    print("\n(stepcrawl's count includes meta-string tokens and EOS, and writes shards + sha256.)")


if __name__ == "__main__":
    main()
