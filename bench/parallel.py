"""Benchmark: parallel layouts of ``train`` side by side on CPU (gloo), same run.

    .venv/bin/python bench/parallel.py                 # tiny model, 6 layouts, ~3 min on 2 cores
    .venv/bin/python bench/parallel.py --steps 12 --seq-len 256

Rows: one process (reference), ``--dp 2`` (FSDP2), ``--dp 2 --ep 2`` (experts sharded over 2
EP ranks, all-to-all dispatch), ``--pp 2`` (1F1B, 2 stages), ``--cp 2`` (sequences split over
2 ranks) and ``--pp 2 --cp 2`` (4 ranks: each stage context-parallel), each a fresh ``torchrun`` of
the real ``train`` on the same synthetic mix and curriculum.  Per row: global tokens/s
(median over the steps after the first two; ratio to ``dp2``), peak RSS per rank, and the
bytes of parameters + gradients + optimizer state per rank measured by ``--memory-report``
next to what ``trainer_memory_plan`` (the dry run's model of this trainer) predicts for that
layout.  On 2 shared cores the processes of one row compete for the CPU, so tokens/s measure
overheads (communication, pipeline bubbles), not scaling (the 4-rank row even more so).
``--model small`` runs the same rows on the ~1B-parameter config; on the shared 2-core machine
only with the cheapest settings (``--ns-steps 1 --seq-len 32 --batch 2 --steps 2``: ~1-2 min
per step, docs/benchmarks/parallel.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse
import json
import os
import statistics
import subprocess
import tempfile

CURRICULUM = """\
name: bench
tokenizer: {{vocab_size: 256}}
attention_block: 32
sources: {{web: {{}}}}
stages:
  - name: pre
    phases:
      - name: main
        tokens: {tokens}
        seq_len: {seq_len}
        mixture: {{web: 1.0}}
        schedule:
          global_batch: {batch}
          lr: {{shape: constant, peak: 0.003}}
          mtp_weight: 0.3
          bias_update_rate: 0.001
          ep_loss_coef: 0.001
"""

LAYOUTS = [("1 process", 1, []), ("dp2", 2, []), ("dp2 x ep2", 2, ["--ep", "2"]), ("pp2", 2, ["--pp", "2"]),
           ("cp2", 2, ["--cp", "2"]), ("pp2 x cp2", 4, ["--pp", "2", "--cp", "2"])]


def run(name: str, nproc: int, flags: list[str], root: Path, steps: int, model: str = "tiny",
        ns_steps: int = 6) -> dict:
    out = root / name.replace(" ", "")
    argv = ["--curriculum", str(root / "cur.yaml"), "--mix", str(root / "mix"), "--out", str(out),
            "--model", model, "--set", "vocab_size=256", "--ns-steps", str(ns_steps), "--no-progress", "--no-tensorboard", "--threads", "1", "--checkpoint-every", "0",
            "--micro-batch-tokens", "512", "--max-steps", str(steps), "--memory-report", *flags]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if nproc == 1:
        cmd = [sys.executable, "-m", "model.train", *argv]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(nproc), "-m", "model.train", *argv]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode:
        raise SystemExit(f"{name}: train failed\n{proc.stderr[-3000:]}")
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    mem = [json.loads(p.read_text()) for p in sorted(out.glob("memory_rank*.json"))]
    return {"tok_s": statistics.median(r["tokens_per_s"] for r in metrics[2:] or metrics),
            "loss": metrics[-1]["loss"], "mem": mem,
            "ep": statistics.mean(r["ep/max_over_mean"] for r in metrics) if "ep/max_over_mean" in metrics[0] else None}


def predicted(flags: list[str], nproc: int, model: str = "tiny") -> float:
    from model.config import get_config
    from model.parallel.layout import resolve_layout
    from model.train import count_params_meta, trainer_memory_plan

    kw = dict(zip(flags[::2], flags[1::2]))
    lay = resolve_layout(nproc, ep=int(kw.get("--ep", 1)), pp=int(kw.get("--pp", 1)), cp=int(kw.get("--cp", 1)))
    cfg = get_config(model, vocab_size=256)
    counts = count_params_meta(cfg)
    # MTP heads 2..n are inactive (pre-training trains MTP-1 only): no gradients
    inactive = counts["mtp"] * (cfg.n_mtp - cfg.mtp_active_depths) // cfg.n_mtp
    return trainer_memory_plan(counts, lay, no_grad=inactive)["total"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--model", default="tiny", choices=["tiny", "small"],
                    help="small: ~1B parameters, ~14 GB of fp32 state per 1-process row; on 2 cores use "
                         "--ns-steps 1 --seq-len 32 --batch 2 --steps 2 (docs/benchmarks/parallel.md)")
    ap.add_argument("--ns-steps", type=int, default=6, help="Muon Polar Express steps (train --ns-steps)")
    ap.add_argument("--layouts", nargs="+", default=[n for n, _, _ in LAYOUTS],
                    help=f"rows to run (default all: {', '.join(n for n, _, _ in LAYOUTS)}); dp2 is the ratio base")
    args = ap.parse_args()
    layouts = [x for x in LAYOUTS if x[0] in args.layouts or x[0] == "dp2"]
    from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_seq = args.steps * args.batch
        (root / "cur.yaml").write_text(CURRICULUM.format(tokens=n_seq * args.seq_len, seq_len=args.seq_len,
                                                         batch=args.batch))
        write_synthetic_mix(root / "mix", [SyntheticPhase("main", args.seq_len, n_seq)], vocab_size=256,
                            seed=1, stage="pre", curriculum="bench")
        rows = []
        for name, nproc, flags in layouts:
            r = run(name, nproc, flags, root, args.steps, args.model, args.ns_steps)
            rows.append((name, nproc, flags, r))
            # as each row finishes, so a run cut short still reports its per-step time
            print(f"# {name}: {r['tok_s']:.1f} tokens/s = {args.batch * args.seq_len / r['tok_s']:.1f} s/step",
                  file=sys.stderr, flush=True)
    base = next(r for n, _, _, r in rows if n == "dp2")["tok_s"]
    print(f"{args.model} model, seq_len {args.seq_len}, global batch {args.batch}, {args.steps} steps, CPU gloo, "
          f"1 thread per rank")
    hdr = (f"{'layout':12} {'ranks':>5} {'tokens/s':>9} {'vs dp2':>7} {'peak RSS/rank MiB':>18} "
           f"{'state/rank KiB (measured)':>26} {'predicted':>10} {'meas/pred':>9} {'EP max/mean':>11} {'loss':>7}")
    print(hdr)
    print("-" * len(hdr))
    for name, nproc, flags, r in rows:
        rss = "/".join(f"{m['peak_rss'] / 2**20:.0f}" for m in r["mem"])
        meas = [m["total"] for m in r["mem"]]
        pred = predicted(flags, nproc, args.model)
        ratio = "/".join(f"{x / pred:.3f}" for x in meas)
        ep = f"{r['ep']:.3f}" if r["ep"] else "-"
        print(f"{name:12} {nproc:>5} {r['tok_s']:>9.0f} {r['tok_s'] / base:>7.2f} {rss:>18} "
              f"{'/'.join(f'{x / 1024:.0f}' for x in meas):>26} {pred / 1024:>10.0f} {ratio:>9} {ep:>11} "
              f"{r['loss']:>7.4f}")


if __name__ == "__main__":
    main()
