"""Write a small, valid Mix folder from synthetic documents (tests and ``bench/loader.py``).

It follows the Mix contract byte for byte (same writer as build-mix: ``IndexedDatasetWriter``),
so the loader is exercised on exactly the format the real pipeline produces, without depending
on the tokenizer/curricula stages having run. Documents are drawn from a tiny Markov chain so a
model can actually learn them (loss falls), each is ``[META tokens..., body..., EOS]``; packing
splits documents across sequences and pads the tail of some sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepcrawl.io import write_json
from tokenizer.indexed import IndexedDatasetWriter, token_dtype
from tokenizer.masks import LOSS, META, PAD
from tokenizer.special import EOS_ID, PAD_ID


@dataclass
class SyntheticPhase:
    name: str
    seq_len: int
    n_sequences: int


def _documents(rng: np.random.Generator, vocab: int, mean_len: int, learnable: bool = True):
    """Endless documents: (tokens, flags). Body follows a fixed sparse transition table
    (``learnable``) or is uniform noise (fast, for benchmarks)."""
    table = np.random.default_rng(12345).integers(10, vocab, size=(vocab, 4))
    while True:
        n_meta = int(rng.integers(2, 5))
        meta = rng.integers(4, 10, size=n_meta)
        n_body = max(2, int(rng.exponential(mean_len)))
        if learnable:
            body = np.empty(n_body, dtype=np.int64)
            cur = int(rng.integers(10, vocab))
            for i in range(n_body):
                body[i] = cur
                cur = int(table[cur, int(rng.integers(0, 4))])
        else:
            body = rng.integers(10, vocab, size=n_body)
        toks = np.concatenate([meta, body, [EOS_ID]])
        flags = np.concatenate([np.full(n_meta, LOSS | META), np.full(n_body + 1, LOSS)]).astype(np.uint8)
        # a "prompt" span without loss in some documents (chat-like data)
        if rng.random() < 0.2 and n_body > 4:
            flags[n_meta : n_meta + n_body // 3] &= ~np.uint8(LOSS)
        yield toks, flags


def write_synthetic_mix(root: str | Path, phases: list[SyntheticPhase], vocab_size: int = 256,
                        seed: int = 0, stage: str = "stage", curriculum: str = "synthetic",
                        mean_doc_len: int | None = None, pad_prob: float = 0.15,
                        learnable: bool = True) -> Path:
    """Write ``root/manifest.json`` and one folder per phase; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    dtype = token_dtype(vocab_size)
    man_phases = []
    for ph in phases:
        docs = _documents(rng, vocab_size, mean_doc_len or max(4, ph.seq_len // 3), learnable)
        pdir = root / ph.name
        carry: tuple[np.ndarray, np.ndarray] | None = None
        with IndexedDatasetWriter(pdir / "tokens", dtype) as wt, \
             IndexedDatasetWriter(pdir / "mask", np.uint8) as wm, \
             IndexedDatasetWriter(pdir / "segments", np.int32) as ws:
            for _ in range(ph.n_sequences):
                toks, flags, segs = [], [], []
                room = ph.seq_len
                while room > 0:
                    if carry is None:
                        if toks and rng.random() < pad_prob:
                            break
                        carry = next(docs)
                    t, f = carry
                    k = min(room, t.size)
                    toks.append(t[:k]); flags.append(f[:k]); segs.append(k)
                    carry = (t[k:], f[k:]) if k < t.size else None
                    room -= k
                if room:
                    toks.append(np.full(room, PAD_ID)); flags.append(np.full(room, PAD, np.uint8))
                    segs.append(room)
                wt.add(np.concatenate(toks)); wm.add(np.concatenate(flags)); ws.add(segs)
        man_phases.append({"name": ph.name, "path": ph.name, "seq_len": ph.seq_len,
                           "n_sequences": ph.n_sequences, "tokens": ph.seq_len * ph.n_sequences})
        write_json(pdir / "manifest.json", {"phase": ph.name, "seq_len": ph.seq_len,
                                            "n_sequences": ph.n_sequences, "seed": seed})
    write_json(root / "manifest.json", {
        "curriculum": curriculum, "stage": stage, "seed": seed,
        "tokenizer": {"vocab_size": vocab_size, "path": None, "sha256": None},
        "phases": man_phases,
    })
    return root


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys
    out = write_synthetic_mix(sys.argv[1], [SyntheticPhase("p0", 64, 256), SyntheticPhase("p1", 128, 64)])
    print(json.dumps(json.loads((out / "manifest.json").read_text()), indent=1))
