"""Benchmark: the attention stack of the model, S3F1 vs FFFF, forward+backward, same run.

    .venv/bin/python bench/model.py                    # CPU: contexts 4k, 8k, 16k (~2 min)
    .venv/bin/python bench/model.py --contexts 4096 32768 --layers 8

All configurations run in one process, interleaved over ``--rounds`` rounds, best time kept.
Memory: on CPU the activations autograd saves for backward (deterministic); on CUDA the peak
allocation of the step (``torch.cuda.max_memory_allocated`` above the start).  The stack is
the real ``Step35Model`` with a small width and a tiny dense FFN, so attention dominates.
Rows:

* ``FFFF``         every layer full attention (the report's baseline in Table 1),
* ``S3F1``         our layout; on CPU the window runs through the chunked SDPA path
  (queries in chunks of W/2 over spans of W + W/2 keys),
* ``S3F1-dense``   S3F1 with a dense boolean window mask in SDPA — what a plain-SDPA
  implementation gets (the window saves nothing there); on CUDA the flex-attention BlockMask
  path is used for all rows instead.

With a CUDA device it also measures tokens/s and MFU of the ``small`` config (bf16 autocast,
flex-attention, grouped-matmul experts).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is bench/model.py: drop bench/ from the path so ``import model`` finds the package
# (and sibling bench scripts cannot shadow stdlib modules), then put the repo root first.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse
import time

import torch


class SavedActivations:
    """Bytes of the tensors autograd saves for backward during the block (each storage counted
    once): the activation memory of a training step, deterministic even on a shared CPU where
    resident-size sampling only sees the allocator's high-water mark."""

    def __enter__(self):
        self.storages: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            self.storages[st.data_ptr()] = st.nbytes()
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        return sum(self.storages.values())


def build_stack(layout_name: str, context: int, layers: int, d_model: int, heads: int, device):
    """The real Step35Model, small and dense (no MoE, no MTP), so attention dominates."""
    import torch

    from model.config import get_config, layout
    from model.transformer import Step35Model

    pattern = "S3F1" if layout_name.startswith("S3F1") else layout_name
    hd = d_model // heads
    cfg = get_config(
        "tiny", vocab_size=256, d_model=d_model, n_layers=layers, layer_types=layout(layers, pattern),
        n_heads_full=heads, n_heads_swa=heads, n_kv_heads=max(1, heads // 4), head_dim=hd,
        rotary_dim_full=hd // 2, rotary_dim_swa=hd, window=512, n_dense_layers=layers, dense_hidden=64,
        n_experts=0, top_k=0, ep_groups=1, n_mtp=0, mtp_active_depths=0, max_position=max(context, 8192))
    torch.manual_seed(0)
    model = Step35Model(cfg).to(device).train()
    model.chunked_window = not layout_name.endswith("-dense")
    return model


def measure(model, context: int, device) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds of one forward+backward at ``context`` tokens, and its
    memory: on CUDA the peak allocation above the start, on CPU the activations saved for
    backward.  CPU seconds (``time.process_time``) are what to compare on a shared machine:
    other jobs stretch the wall clock, not the work this process does."""
    cuda = device.type == "cuda"
    x = torch.randint(0, model.cfg.vocab_size, (1, context), device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t, c = time.perf_counter(), time.process_time()
    with SavedActivations() as saved, torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        out = model(x, labels=x)
    out.loss.backward()
    if cuda:
        torch.cuda.synchronize()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    model.zero_grad(set_to_none=True)
    return dt, dc, (torch.cuda.max_memory_allocated() - base if cuda else saved.nbytes)


def gpu_small_throughput(seq_len: int = 4096, batch: int = 4, steps: int = 10) -> dict:
    """Tokens/s and MFU of the ``small`` config on one GPU (bf16 autocast, flex-attention)."""
    import torch

    from model.config import get_config
    from model.summary import attention_flops, count_parameters
    from model.transformer import Step35Model

    cfg = get_config("small")
    model = Step35Model(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len), device="cuda")
    docs = (torch.arange(seq_len, device="cuda") // 1024).expand(batch, seq_len)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x, labels=x, document_ids=docs, mtp_weight=0.3)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    tokens_s = batch * seq_len / dt
    counts = count_parameters(cfg, model)
    # 6·N_active (+ MTP head) for matmuls, plus 3× the forward attention core at this length
    flops_tok = 6 * counts["active_with_mtp"] + 3 * attention_flops(cfg, None, seq_len)["core_prefill"]
    name = torch.cuda.get_device_name()
    peak = 989e12  # dense bf16 of H100/H200 SXM; other GPUs: edit, the MFU is relative to this
    return {"device": name, "tokens_per_s": tokens_s, "mfu": tokens_s * flops_tok / peak,
            "seq_len": seq_len, "batch": batch, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--layers", type=int, default=4, help="4 = [F,S,S,S] vs [F,F,F,F]")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best time is kept")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (1: CPU seconds measure work exactly, no OpenMP spin-waits)")
    ap.add_argument("--layouts", nargs="+", default=["FFFF", "S3F1", "S3F1-dense"])
    ap.add_argument("--dense-max", type=int, default=8192, help="largest context for the S3F1-dense row")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown table here too")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(args.threads)
    layouts = [x for x in args.layouts if not (cuda and x.endswith("-dense"))]
    runs = [(lay, ctx) for ctx in args.contexts for lay in layouts
            if not (lay.endswith("-dense") and ctx > args.dense_max)]  # dense T×T mask: O(T²) memory
    models = {r: build_stack(r[0], r[1], args.layers, args.d_model, args.heads, device) for r in runs}
    for r in runs:  # warm-up (and flex-attention compilation on CUDA)
        measure(models[r], r[1], device)
    # Interleaved rounds: on a shared machine load drifts; every configuration sees every phase of
    # it and keeps its best time, so the ratios compare like with like.
    times: dict = {r: [] for r in runs}
    cpu: dict = {r: [] for r in runs}
    peaks: dict = {r: 0 for r in runs}
    for rnd in range(args.rounds):
        for r in runs:
            dt, dc, peak = measure(models[r], r[1], device)
            times[r].append(dt)
            cpu[r].append(dc)
            peaks[r] = max(peaks[r], peak)
            print(f"  round {rnd + 1}: {r[0]:<11} {r[1]:>6}: {dt:.3f} s wall {dc:.3f} s CPU "
                  f"{peak / 2**20:8.1f} MiB", file=sys.stderr)
    # the time compared: CPU seconds on CPU (robust to other jobs), wall seconds on CUDA
    res = {r: {"wall": min(times[r]), "cpu": min(cpu[r]), "mem": peaks[r]} for r in runs}
    key = "wall" if cuda else "cpu"

    dev = "CUDA (flex-attention)" if cuda else f"CPU ({args.threads} thread(s), SDPA)"
    mem = "peak MiB" if cuda else "saved activations MiB"
    lines = [f"Attention stack: {args.layers} layers, d_model {args.d_model}, {args.heads} heads, window 512, "
             f"batch 1, forward+backward, best of {args.rounds} interleaved rounds; device {dev}.", "",
             f"| context | layout | fwd+bwd {key} s | wall s | {mem} | time vs S3F1 | memory vs S3F1 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for ctx in args.contexts:
        base = res.get(("S3F1", ctx))
        for lay in layouts:
            r = res.get((lay, ctx))
            if not r:
                continue
            rt = r[key] / base[key] if base else float("nan")
            rm = r["mem"] / base["mem"] if base and base["mem"] else float("nan")
            lines.append(f"| {ctx} | {lay} | {r[key]:.3f} | {r['wall']:.3f} | {r['mem'] / 2**20:.1f} | "
                         f"{rt:.2f} | {rm:.2f} |")
    if cuda:
        g = gpu_small_throughput()
        lines += ["", f"`small` config on {g['device']}: {g['tokens_per_s']:,.0f} tokens/s, MFU {g['mfu']:.1%} "
                  f"(seq {g['seq_len']}, batch {g['batch']}, peak {g['peak_mem_gib']:.1f} GiB)"]
    else:
        lines += ["", "No CUDA device: tokens/s and MFU of the `small` config are measured only on a GPU."]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
