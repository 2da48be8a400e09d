"""Loader throughput: is trainer_bridge ever the bottleneck?

Same run, same mix, same sequence order, three readers:

* ``raw mmap gather`` — the limit: fancy-index the memory-mapped ``tokens``/``mask`` arrays and
  read each sequence's ``segments`` (what any loader must at least do), no batch building;
* ``trainer_bridge`` — ``CurriculumLoader.next()``: order, DP slice, micro-batching, labels,
  loss mask, document ids, positions, as torch tensors;
* ``torch DataLoader`` — the common alternative: a map-style ``Dataset`` returning one sequence
  (Megatron ``GPTDataset`` style, per-item ``__getitem__``) + ``default_collate``, same tensors,
  ``num_workers=0`` (workers only add processes on the same 2 cores here).

Prints tokens/s and the ratio to the raw limit; also the tiny model's training tokens/s on this
machine for scale. Usage: ``.venv/bin/python bench/loader.py [--seq-len 1024] [--sequences 16384]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_bridge.batch import make_batch  # noqa: E402
from trainer_bridge.loader import CurriculumLoader, PhasePlan  # noqa: E402
from trainer_bridge.mix import open_mix  # noqa: E402
from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix  # noqa: E402


def bench_raw(ph, order: np.ndarray, batch: int) -> float:
    """Only the vectorised mmap gathers of tokens, flags and segments (``read_rows``)."""
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(order) - batch + 1, batch):
        tok, _msk, _seg, _counts = CurriculumLoader.read_rows(ph, order[i : i + batch])
        n += tok.size
    return n / (time.perf_counter() - t0)


def bench_bridge(ph, batch: int, steps: int, micro_tokens: int) -> float:
    plan = PhasePlan("bench", ph, global_batch=lambda _t: batch, budget_sequences=batch * steps)
    loader = CurriculumLoader([plan], seed=0, micro_batch_tokens=micro_tokens)
    t0 = time.perf_counter()
    n = 0
    for sb in loader:
        n += sum(b.input_ids.numel() for b in sb.micro_batches)
    return n / (time.perf_counter() - t0)


class PerSequenceDataset(torch.utils.data.Dataset):
    """What a straightforward map-style dataset does: one sequence per ``__getitem__``."""

    def __init__(self, ph, order: np.ndarray) -> None:
        self.ph, self.order = ph, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        j = int(self.order[i])
        b = make_batch(self.ph.tokens[j][None], self.ph.mask[j][None], [self.ph.segments[j]], False)
        return {"input_ids": b.input_ids[0], "labels": b.labels[0], "loss_mask": b.loss_mask[0],
                "document_ids": b.document_ids[0], "position_ids": b.position_ids[0]}


def bench_torch(ph, order: np.ndarray, batch: int) -> float:
    dl = torch.utils.data.DataLoader(PerSequenceDataset(ph, order), batch_size=batch, num_workers=0,
                                     drop_last=True)
    t0 = time.perf_counter()
    n = 0
    for b in dl:
        n += b["input_ids"].numel()
    return n / (time.perf_counter() - t0)


def bench_model(seq_len: int) -> float:
    """Tiny-model training tokens/s on this machine (forward+backward+Muon step), for scale."""
    from model.config import get_config
    from model.optim import build_optimizer
    from model.transformer import Step35Model

    torch.manual_seed(0)
    model = Step35Model(get_config("tiny"))
    opt = build_optimizer(model, lr=1e-3)
    x = torch.randint(4, 4000, (4, min(seq_len, 512)))
    t0 = time.perf_counter()
    for i in range(3):
        if i == 1:  # the first step is warm-up
            t0 = time.perf_counter()
        out = model(x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    return 2 * x.numel() / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--sequences", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synthetic_mix(Path(tmp) / "mix", [SyntheticPhase("p", args.seq_len, args.sequences)],
                            vocab_size=32000, learnable=False)
        ph = open_mix(Path(tmp) / "mix").phases[0]
        mb = ph.n_tokens * (2 + 1) / 2**20
        print(f"mix: {args.sequences} sequences x {args.seq_len} tokens "
              f"({ph.n_tokens / 1e6:.1f}M tokens, {mb:.0f} MiB tokens+mask), written in "
              f"{time.perf_counter() - t0:.1f}s; global batch {args.batch}")
        steps = args.sequences // args.batch
        plan = PhasePlan("bench", ph, global_batch=lambda _t: args.batch,
                         budget_sequences=args.batch * steps)
        order = np.concatenate([s.sequence_ids for s in CurriculumLoader([plan], seed=0,
                                                                          micro_batch_tokens=1 << 30)])
        rows = {"raw mmap gather (limit)": [], "trainer_bridge CurriculumLoader": [],
                "torch DataLoader, per-sequence Dataset": []}
        for _ in range(args.repeats):  # interleaved so machine noise hits every reader alike
            rows["raw mmap gather (limit)"].append(bench_raw(ph, order, args.batch))
            rows["trainer_bridge CurriculumLoader"].append(
                bench_bridge(ph, args.batch, steps, args.micro_batch_tokens))
            rows["torch DataLoader, per-sequence Dataset"].append(bench_torch(ph, order, args.batch))
        model_tps = bench_model(args.seq_len)

    raw = max(rows["raw mmap gather (limit)"])
    print()
    print(f"| reader | tokens/s (best of {args.repeats}) | vs raw limit |")
    print("|---|---:|---:|")
    for name, vals in rows.items():
        best = max(vals)
        print(f"| {name} | {best / 1e6:,.1f}M | {best / raw:.2f} |")
    print(f"| tiny model training (fwd+bwd+Muon, CPU) | {model_tps / 1e3:,.1f}k | {model_tps / raw:.5f} |")
    bridge = max(rows["trainer_bridge CurriculumLoader"])
    print()
    # 6 * 11e9 FLOPs per token (11B active) at 40% MFU of an H800's ~989 dense bf16 TFLOP/s
    gpu_tps = 0.4 * 989e12 / (6 * 11e9)
    print(f"trainer_bridge delivers {bridge / model_tps:,.0f}x what the tiny model consumes on this "
          f"CPU, and {bridge / gpu_tps:,.0f}x what one H800 training the full model (11B active, "
          f"40% MFU: ~{gpu_tps / 1e3:.0f}k tokens/s per GPU) consumes, from one core.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
