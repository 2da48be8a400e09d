"""Benchmark: the ``small`` model's training step on one GPU — tokens/s and MFU.

    .venv/bin/python bench/gpu_small.py                          # H100 / H200: ~2-4 min
    .venv/bin/python bench/gpu_small.py --peak-tflops 312        # another GPU (A100: 312)
    .venv/bin/python bench/gpu_small.py --out runs/bench         # where the JSON + .md go (default)

Prepared for a GPU machine and **not yet run on one** (no GPU was lent when it was written).
What one step is: the real ``Step35Model`` of ``--model`` (default ``small``) and the
trainer's own optimizer (``model.optim.build_optimizer``: Muon for matrices, AdamW for the
rest) on random tokens, forward + backward + optimizer step, with

* compiled flex-attention (``attn_backend="flex"``: ``create_block_mask`` and
  ``flex_attention`` under ``torch.compile``, a BlockMask per layer type, document masks of
  ``--doc-len`` tokens) for the full and sliding-window layers,
* bf16 autocast, and the routed experts as bf16 grouped matmuls (``torch._grouped_mm``,
  ``expert_backend="grouped_mm"``; the experts cast to the autocast dtype themselves),
* MTP-1 on (weight 0.3), as in pre-training.

Timing: ``--warmup`` steps (compilation happens there), then ``--steps`` timed steps between
two ``torch.cuda.synchronize()``; the timed loop stops early at ``--max-seconds``.  FLOPs per
token are the dry run's model (``model/parallel/estimate.py``): ``6 · active parameters (with
the active MTP head) + 3 · forward attention-core FLOPs`` at this ``seq_len`` (causal, whole
sequence: documents are not credited as skipped work, the usual MFU convention).  MFU =
achieved FLOP/s ÷ the GPU's dense bf16 peak, looked up from the device name (H100 SXM, H200,
H800: 989 TFLOP/s) or given with ``--peak-tflops`` (required for any other GPU).  The dry run
assumes MFU 0.4; this is the number to check it against.

Writes ``gpu_small.json`` (every figure and the settings) and ``gpu_small.md`` (one table
row for ``docs/benchmarks/``) under ``--out``; prints both.  On CPU (``--device cpu``, the
test suite's smoke test) the same code path runs with SDPA (flex has no backward on CPU), no
peak lookup and no MFU; ``--dtype bf16 --set expert_backend=grouped_mm`` runs the bf16
grouped-matmul experts there too.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ off the path (sibling scripts must not shadow modules), the repo root first
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse
import datetime
import json
import time

# dense bf16 peak (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name().
# Only parts whose figure is unambiguous from the name; everything else needs --peak-tflops.
BF16_PEAK_TFLOPS = (
    ("H200", 989.0),            # H200 SXM (NVIDIA datasheet: 1,979 with sparsity)
    ("H100 80GB HBM3", 989.0),  # H100 SXM5's device name
    ("H100 SXM", 989.0),
    ("H800", 989.0),            # the report's GPU: H100 SXM compute
)


class PeakUnknown(ValueError):
    pass


# lower-clocked variants sharing the names above (H100 PCIe/NVL, H200 NVL): not guessed
OTHER_VARIANTS = ("PCIE", "NVL")


def bf16_peak_tflops(device_name: str) -> float:
    up = device_name.upper()
    if not any(v in up for v in OTHER_VARIANTS):
        for key, tflops in BF16_PEAK_TFLOPS:
            if key.upper() in up:
                return tflops
    raise PeakUnknown(f"no bf16 peak known for GPU {device_name!r} (known: "
                      f"{', '.join(k for k, _ in BF16_PEAK_TFLOPS)}); pass --peak-tflops N "
                      f"(the dense, non-sparse bf16 figure of its datasheet)")


def flops_per_token(cfg, seq_len: int, mtp_depths: int) -> float:
    """The dry run's FLOP model (``train --dry-run``'s step time uses the same)."""
    from model.parallel.estimate import attention_core_flops
    from model.summary import count_parameters

    c = count_parameters(cfg)
    active = c["active"] + c["mtp_per_head"] * mtp_depths
    return 6 * active + 3 * attention_core_flops(cfg, seq_len, mtp_depths)


def backend_overrides(cuda: bool) -> dict:
    """Compiled flex-attention and grouped-matmul experts on CUDA; on CPU flex has no backward
    (torch 2.13), so SDPA, and the experts' backend is probed (``auto``)."""
    return {"attn_backend": "flex" if cuda else "sdpa", "expert_backend": "grouped_mm" if cuda else "auto"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gpu_small.py", description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="small", choices=["tiny", "small", "proxy"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ModelConfig field (as train --set)")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4, help="sequences per step")
    ap.add_argument("--doc-len", type=int, default=1024, help="document length of the document masks")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop the timed loop after this")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak of this GPU (default: looked up from the device name)")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu: smoke test, no MFU)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                    help="autocast dtype (auto: bf16 on CUDA, fp32 on CPU; the smoke test runs bf16 on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"), help="folder for gpu_small.json/.md")
    return ap


def run(args) -> dict:
    import torch

    from model.config import get_config
    from model.optim import build_optimizer
    from model.train import parse_overrides
    from model.transformer import Step35Model

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("gpu_small.py: --device cuda but torch sees no CUDA device")
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak = args.peak_tflops
    if cuda and peak is None:
        try:
            peak = bf16_peak_tflops(name)   # fail before minutes of compilation
        except PeakUnknown as exc:
            raise SystemExit(f"gpu_small.py: {exc}") from None
    if args.seq_len % args.doc_len and args.doc_len < args.seq_len:
        raise SystemExit(f"gpu_small.py: --doc-len {args.doc_len} must divide --seq-len {args.seq_len}")
    if not cuda and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    over = dict(backend_overrides(cuda), **parse_overrides(args.set))
    cfg = get_config(args.model, **over)
    model = Step35Model(cfg).to(dev).train()
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.1)
    B, T = args.batch, args.seq_len
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g).to(dev)
    docs = (torch.arange(T, device=dev) // min(args.doc_len, T)).expand(B, T).contiguous()
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and cuda)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
    mtp_weight = 0.3 if cfg.n_mtp else 0.0
    losses: list[float] = []

    def step() -> None:
        with amp:
            out = model(ids, labels=ids, document_ids=docs, mtp_weight=mtp_weight)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))   # one sync per step, as a trainer logs

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    done = 0
    t = time.perf_counter()
    while done < args.steps:
        step()
        done += 1
        if time.perf_counter() - t > args.max_seconds:
            break
    sync()
    dt = (time.perf_counter() - t) / max(done, 1)

    fpt = flops_per_token(cfg, T, min(cfg.mtp_active_depths, cfg.n_mtp) if mtp_weight else 0)
    tokens_s = B * T / dt
    achieved = tokens_s * fpt
    res = {
        "device": name, "model": cfg.name, "seq_len": T, "batch": B, "doc_len": args.doc_len,
        "timed_steps": done, "warmup_steps": args.warmup, "warmup_s": round(warmup_s, 3),
        "step_s": dt, "tokens_per_s": tokens_s, "flops_per_token": fpt,
        "achieved_tflops": achieved / 1e12, "peak_tflops": peak,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None,
        "attn_backend": cfg.attn_backend, "expert_backend": cfg.expert_backend,
        "dtype": "bf16 autocast" if bf16 else "fp32", "loss_first": losses[0], "loss_last": losses[-1],
        "torch": torch.__version__, "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return res


def markdown_row(r: dict) -> str:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
    mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
    peak = f"{r['peak_tflops']:g}" if r["peak_tflops"] else "-"
    return (f"| {r['device']} | {r['model']} | {r['seq_len']} × {r['batch']} | {r['attn_backend']}, "
            f"{r['expert_backend']}, {r['dtype']} | {r['tokens_per_s']:,.0f} | {r['achieved_tflops']:.3g} "
            f"| {peak} | {mfu} | {mem} | {r['timed_steps']} (+{r['warmup_steps']} warm-up, {r['warmup_s']:.0f} s) "
            f"| torch {r['torch']}, {r['when']} |")


MD_HEADER = ("| GPU | model | seq × batch | attention, experts, dtype | tokens/s | TFLOP/s | peak | MFU "
             "| peak mem GiB | steps | when |\n| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res = run(args)
    from stepcrawl.io import atomic_open

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "gpu_small.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(res, indent=2) + "\n")
    row = markdown_row(res)
    with atomic_open(out / "gpu_small.md", "w", encoding="utf-8") as fh:
        fh.write(MD_HEADER + "\n" + row + "\n")
    print(json.dumps(res, indent=2))
    print(MD_HEADER)
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
