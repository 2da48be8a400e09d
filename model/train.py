"""``train``: run a curriculum on materialised mixes.

::

    train --curriculum curricula/tiny.yaml --mix data/demo/mix --model tiny --out runs/tiny
    torchrun --nproc-per-node 8 -m model.train --curriculum full.yaml --mix data/mix --model small
    train --curriculum full.yaml --dry-run --gpus-total 4096

The run walks the curriculum's stages and phases in order, for every stage materialised in a
``--mix`` folder (each ``--mix`` is one build-mix output, or a folder holding one per stage;
stages without a mix are skipped, and their tokens still count towards "tokens into the run"
so e.g. the meta-string loss mask switches at the right point). At every optimizer step it
applies the phase's schedule: global batch (ramps), learning rate shape, RoPE θ of full and SWA
layers, MTP loss weight, meta-string loss mask, router frozen or not, loss-free bias update rate
and EP-balance loss coefficient. Everything that can be checked is checked before the model is
built (curriculum, mixes, mix ↔ curriculum ↔ model consistency). See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stepcrawl.faults import kill_point

log = logging.getLogger("train")


class TrainError(RuntimeError):
    """A problem found before (or instead of) training; printed without a traceback."""


# ---------------------------------------------------------------------------------------------
# plan: curriculum x mixes
# ---------------------------------------------------------------------------------------------
@dataclass
class RunPhase:
    stage: Any                  # curricula.schema.Stage
    phase: Any                  # curricula.schema.Phase
    plan: Any                   # trainer_bridge.loader.PhasePlan
    scale: float                # curriculum tokens per materialised token (1.0 = full phase)

    @property
    def key(self) -> str:
        return f"{self.stage.name}/{self.phase.name}"


def load_curriculum_or_fail(path: str):
    from curricula import CurriculumError, load_curriculum
    try:
        return load_curriculum(path)
    except CurriculumError as exc:
        raise TrainError(str(exc)) from None


def build_run_phases(cur, mixes, world: int = 1, global_batch: int | None = None,
                     stages: list[str] | None = None) -> list[RunPhase]:
    """Match mixes to the curriculum and build one loader plan per materialised phase."""
    from curricula.schedule import global_batch_at, meta_loss_masked
    from trainer_bridge.loader import PhasePlan

    by_stage = {m.stage: m for m in mixes}
    names = [s.name for s in cur.stages]
    unknown = sorted(set(by_stage) - set(names))
    if unknown:
        m = by_stage[unknown[0]]
        raise TrainError(f"{m.root}/manifest.json: stage {m.stage!r} is not in curriculum "
                         f"{cur.name!r} (stages: {names})")
    for m in mixes:
        if m.curriculum and m.curriculum != cur.name:
            raise TrainError(f"{m.root}/manifest.json: built for curriculum {m.curriculum!r}, "
                             f"but training curriculum {cur.name!r}")
    if stages:
        missing = sorted(set(stages) - set(by_stage))
        if missing:
            raise TrainError(f"--stage {missing}: no mix given for these stages "
                             f"(mixes cover {sorted(by_stage)})")
    out: list[RunPhase] = []
    for stage in cur.stages:
        if stage.name not in by_stage or (stages and stage.name not in stages):
            continue
        mix = by_stage[stage.name]
        mix_names = [p.name for p in mix.phases]
        cur_names = [p.name for p in stage.phases]
        extra = [n for n in mix_names if n not in cur_names]
        if extra:
            raise TrainError(f"{mix.root}/manifest.json: phase(s) {extra} are not in stage "
                             f"{stage.name!r} of the curriculum ({cur_names})")
        skipped = [n for n in cur_names if n not in mix_names]
        if skipped:
            log.warning("stage %s: phase(s) %s not materialised in %s, skipped", stage.name,
                        skipped, mix.root)
        for phase in stage.phases:
            if phase.name not in mix_names:
                continue
            mp = mix.phase(phase.name)
            where = f"{mp.path}: stage {stage.name!r} / phase {phase.name!r}"
            if mp.seq_len != phase.seq_len:
                raise TrainError(f"{where}: mix seq_len {mp.seq_len} != curriculum seq_len "
                                 f"{phase.seq_len} (rebuild the mix)")
            # Schedules are written in curriculum tokens; a scaled-down mix (build-mix --scale)
            # walks the same schedule compressed: position t maps to t / scale.
            if mix.scale is not None:
                scale = float(1 / mix.scale)
            else:
                budget = mp.budget_tokens or mp.n_tokens
                scale = phase.tokens / budget if phase.tokens and budget < phase.tokens else 1.0
            sched = phase.schedule
            before = cur.phase_start_tokens(phase.name)

            def gb_fn(t: int, sched=sched, scale=scale) -> int:
                return global_batch if global_batch else global_batch_at(sched, int(t * scale))

            def meta_fn(t: int, sched=sched, scale=scale, before=before) -> bool:
                return meta_loss_masked(sched, before + int(t * scale))

            gb0 = gb_fn(0)
            if gb0 % world:
                raise TrainError(f"{where}: global batch {gb0} is not divisible by the "
                                 f"data-parallel world size {world}")
            plan = PhasePlan(name=f"{stage.name}/{phase.name}", data=mp, global_batch=gb_fn,
                             mask_meta=meta_fn, tokens_before=before)
            out.append(RunPhase(stage, phase, plan, scale))
    if not out:
        raise TrainError(f"no stage of curriculum {cur.name!r} is materialised in the given mixes "
                         f"(mix stages: {sorted(by_stage)}, curriculum stages: {names})")
    return out


def check_vocab(mixes, cur, vocab_size: int, scan_limit: int = 200_000_000) -> None:
    """Tokenizer vocab (mix manifest, curriculum) and actual token ids must fit the model."""
    for m in mixes:
        if m.vocab_size is not None and m.vocab_size > vocab_size:
            raise TrainError(f"{m.root}/manifest.json: tokenizer vocab_size {m.vocab_size} > model "
                             f"vocab_size {vocab_size} (use a bigger model or --set vocab_size={m.vocab_size})")
    cv = getattr(getattr(cur, "tokenizer", None), "vocab_size", None)
    if cv is not None and cv > vocab_size:
        raise TrainError(f"curriculum {cur.name!r}: tokenizer vocab_size {cv} > model vocab_size "
                         f"{vocab_size} (use --set vocab_size={cv})")
    for m in mixes:
        for p in m.phases:
            if p.n_tokens <= scan_limit:
                mx = p.max_token_id()
                if mx >= vocab_size:
                    raise TrainError(f"{p.path}/tokens.bin: token id {mx} >= model vocab_size {vocab_size}")


# ---------------------------------------------------------------------------------------------
# model config overrides
# ---------------------------------------------------------------------------------------------
def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set d_model=64 --set n_layers=2``: values are parsed as YAML (ints, floats, lists)."""
    import yaml

    from model.config import ModelConfig
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise TrainError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in fields:
            raise TrainError(f"--set {k}: not a ModelConfig field (fields: {sorted(fields)})")
        val = yaml.safe_load(v)
        out[k] = tuple(val) if isinstance(val, list) else val
    return out


def model_config(name: str, overrides: dict[str, Any]):
    from model.config import get_config
    try:
        return get_config(name, **overrides)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"model config {name!r}: {exc}") from None


def init_config(path: str, overrides: dict[str, Any]):
    """``--init-from``: the architecture comes from the source (HF folder or our checkpoint);
    ``--set`` may change run-time fields only.  An HF folder is fully checked here."""
    from model.hf import HFFormatError, init_source_config
    try:
        return init_source_config(path, overrides)
    except (HFFormatError, OSError) as exc:
        raise TrainError(f"--init-from {exc}") from None


def parse_mtp_depths(items: list[str] | None, n_mtp: int) -> dict[str, int]:
    """``--mtp-depths 3`` (every phase) or ``--mtp-depths mid2=3`` / ``mid/mid2=3`` (one phase).

    Returns ``{"*" | "stage/phase" | "phase": depths}``; checked against the model's ``n_mtp``."""
    out: dict[str, int] = {}
    for item in items or []:
        key, _, val = item.rpartition("=")
        try:
            n = int(val)
        except ValueError:
            raise TrainError(f"--mtp-depths {item!r}: expected N or PHASE=N") from None
        if not 0 <= n <= n_mtp:
            raise TrainError(f"--mtp-depths {item!r}: {n} outside 0..n_mtp={n_mtp} of the model")
        out[key.strip() or "*"] = n
    return out


def mtp_depths_for(stage_name: str, phase, overrides: dict[str, int], default: int) -> int:
    """Active MTP depths of a phase: ``--mtp-depths`` for this phase (``stage/phase`` before
    ``phase`` before ``*``), else the schedule's ``mtp_active_depths`` if the curriculum schema
    has one (read defensively: the field is optional), else the model config's default."""
    for key in (f"{stage_name}/{phase.name}", phase.name, "*"):
        if key in overrides:
            return overrides[key]
    val = getattr(phase.schedule, "mtp_active_depths", None)
    return default if val is None else int(val)


# ---------------------------------------------------------------------------------------------
# dry run
# ---------------------------------------------------------------------------------------------
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _fmt_count(n: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def count_params_meta(cfg) -> dict[str, int]:
    """Parameter counts by kind, from the model built on the meta device (nothing allocated).
    The expert/dense/1-D split the memory plan needs is read off parameter names here; the
    total/active numbers come from ``model.summary.count_parameters`` on the same model."""
    from model.optim import is_adamw_param
    from model.summary import count_parameters
    from model.transformer import Step35Model

    with torch.device("meta"):
        m = Step35Model(cfg)
    counts = {"total": 0, "expert": 0, "dense_matrix": 0, "adamw": 0, "mtp": 0}
    for name, p in m.named_parameters():
        n = p.numel()
        counts["total"] += n
        if name.startswith("mtp."):
            counts["mtp"] += n
        if ".experts." in name:
            counts["expert"] += n
        elif is_adamw_param(name, p):
            counts["adamw"] += n
        else:
            counts["dense_matrix"] += n
    s = count_parameters(cfg, m)
    counts["summary"] = {k: v for k, v in s.items() if isinstance(v, (int, float))}
    return counts


def memory_plan(counts: dict[str, int], gpus: int, ep: int, pp: int, tp: int = 1, cp: int = 1) -> dict[str, float]:
    """Bytes per GPU for parameters, gradients and optimizer state.

    Assumptions (printed with the table): bf16 parameters (2 B) and fp32 gradients (4 B) on
    the owning GPU, fp32 master copy (4 B) plus optimizer state (Muon: 4 B momentum for
    matrices; AdamW: 8 B for 1-D/embeddings/head) sharded ZeRO-1 style over the data-parallel
    group. Dense parameters are split over PP x TP stages and replicated over DP = gpus/(PP*TP);
    routed experts are split over PP x EP and replicated over expert-DP = DP/EP.
    """
    dp = gpus // (pp * tp * cp)
    # the optimizer is sharded over every rank holding the same parameters: DP x CP (dense),
    # expert-DP x CP (experts; EP is carved out of DP)
    edp = max(1, dp // ep) * cp
    dp_opt = dp * cp
    expert = counts["expert"]
    dense = counts["total"] - expert
    muon_dense = counts["dense_matrix"]
    adamw = counts["adamw"]
    p_dense = dense / (pp * tp)
    p_exp = expert / (pp * tp * ep)
    params = (p_dense + p_exp) * 2
    grads = (p_dense + p_exp) * 4
    opt_dense = (muon_dense / (pp * tp)) * (4 + 4) / dp_opt + (adamw / (pp * tp)) * (4 + 8) / dp_opt
    opt_exp = p_exp * (4 + 4) / edp
    return {"dp": dp, "edp": edp, "params": params, "grads": grads,
            "optimizer": opt_dense + opt_exp, "total": params + grads + opt_dense + opt_exp}


def trainer_memory_plan(counts: dict[str, int], lay, no_grad: int = 0) -> dict[str, float]:
    """Bytes per rank of *this* trainer's state (what ``train`` allocates, activations excluded):
    fp32 parameters and gradients; dense parameters FSDP2-sharded over the ``dense`` mesh
    (DP x CP) and split over PP stages; routed experts split over EP (and PP), replicated over
    expert-DP x CP (without EP, FSDP2 shards them like the rest); optimizer state sharded like
    its parameter: Muon momentum 4 B per matrix element, AdamW moments 8 B.  ``no_grad``:
    dense parameters that get no gradient (inactive MTP depths).  An average over pipeline
    stages (the first holds the embedding, the last the head and MTP).  ``bench/parallel.py``
    compares it with a measured run."""
    dense_shard = lay.pp * lay.dp * lay.cp
    expert = counts["expert"] / (lay.pp * lay.ep) if lay.ep > 1 else counts["expert"] / dense_shard
    dense = (counts["total"] - counts["expert"]) / dense_shard
    muon = counts["dense_matrix"] / dense_shard + expert
    adamw = counts["adamw"] / dense_shard
    params = (dense + expert) * 4
    grads = params - no_grad / dense_shard * 4
    opt = muon * 4 + adamw * 8
    return {"params": params, "grads": grads, "optimizer": opt, "total": params + grads + opt}


def _print_phase_estimates(cur, cfg, counts, lay, args, mtp_over, state_bytes_per_gpu: float) -> None:
    """Per phase: micro-batching, activation memory and step time (model/parallel/estimate.py)."""
    from curricula.schedule import batch_segments
    from model.parallel.estimate import phase_estimate

    print(f"per phase, per GPU (estimates; --micro-batch-tokens {args.micro_batch_tokens}, full "
          f"activation checkpointing, 1F1B, {args.gpu_tflops:g} TFLOP/s bf16 peak at MFU "
          f"{args.mfu:g}; activations = saved block inputs + one block's recompute + last-stage fp32 logits):")
    hdr = (f"  {'stage/phase':26} {'seq':>7} {'batch':>6} {'mb x n':>9} {'tok/rank':>9} "
           f"{'ckpt':>10} {'recompute':>10} {'logits':>10} {'+state':>10} {'s/step':>8} {'tokens/s':>10}")
    print(hdr)
    for st in cur.stages:
        for ph in st.phases:
            segs = batch_segments(ph)
            gb = max((g.batch for g in segs), default=1)
            depths = mtp_depths_for(st.name, ph, mtp_over, cfg.mtp_active_depths) if ph.schedule.mtp_weight else 0
            e = phase_estimate(cfg, counts, lay, ph.seq_len, gb, args.micro_batch_tokens, depths,
                               args.gpu_tflops * 1e12, args.mfu)
            print(f"  {st.name + '/' + ph.name:26} {ph.seq_len:>7} {gb:>6} {f'{e.micro_batch}x{e.n_micro}':>9} "
                  f"{e.tokens_per_rank:>9} {_fmt_bytes(e.checkpointed):>10} {_fmt_bytes(e.working):>10} "
                  f"{_fmt_bytes(e.logits):>10} {_fmt_bytes(e.activations + state_bytes_per_gpu):>10} "
                  f"{e.step_seconds:>8.2f} {_fmt_count(e.tokens_per_s):>10}")


def dry_run(args) -> int:
    from curricula import format_tokens
    from curricula.schedule import batch_segments, phase_steps

    cur = load_curriculum_or_fail(args.curriculum)
    cfg = model_config(args.model, parse_overrides(args.set))
    mtp_over = parse_mtp_depths(args.mtp_depths, cfg.n_mtp)
    print(f"curriculum {cur.name}: {len(cur.stages)} stage(s), "
          f"{format_tokens(cur.total_tokens)} tokens")
    hdr = f"{'stage/phase':28} {'tokens':>8} {'seq':>7} {'steps':>9} {'batch (seqs)':>22} " \
          f"{'lr':>24} {'θ full/swa':>13} {'mtp w×depths':>12} {'meta':>6} {'router':>7} {'bias':>8} {'ep':>6}"
    print(hdr)
    print("-" * len(hdr))
    total_steps = 0
    for stage in cur.stages:
        stage_steps = 0
        for ph in stage.phases:
            s = ph.schedule
            steps = phase_steps(ph)
            total_steps += steps
            stage_steps += steps
            segs = batch_segments(ph)
            batch = "→".join(str(g.batch) for g in segs) if segs else "-"
            top = s.lr.peak if s.lr.peak is not None else s.lr.start
            lr = f"{s.lr.shape} {top:.2g}" + (f"→{s.lr.end:.2g}" if s.lr.end is not None else "")
            depths = mtp_depths_for(stage.name, ph, mtp_over, cfg.mtp_active_depths) if cfg.n_mtp else 0
            mtp = f"{s.mtp_weight:g}×{depths}" if s.mtp_weight and depths else "off"
            meta = s.meta_loss_mask if isinstance(s.meta_loss_mask, bool) else f">{format_tokens(s.meta_loss_mask.after)}"
            bias = s.bias_update_rate if isinstance(s.bias_update_rate, (int, float)) else \
                f"{s.bias_update_rate.start:g}→{s.bias_update_rate.end:g}"
            print(f"{stage.name + '/' + ph.name:28} {format_tokens(ph.tokens):>8} {ph.seq_len:>7} "
                  f"{steps:>9} {batch:>22} {lr:>24} {s.rope_theta_full:>6.0e}/{s.rope_theta_swa:<6.0e} "
                  f"{mtp:>12} {str(meta):>6} {'frozen' if s.router_frozen else 'train':>7} "
                  f"{str(bias):>8} {s.ep_loss_coef:>6g}")
        print(f"{'= stage ' + stage.name:28} {format_tokens(sum(p.tokens for p in stage.phases)):>8} "
              f"{'':>7} {stage_steps:>9}")
    print(f"total: {format_tokens(cur.total_tokens)} tokens, {total_steps:,} optimizer steps")

    lay = parallel_layout_or_fail(args, args.gpus_total, cfg,
                                  [p.seq_len for st in cur.stages for p in st.phases], dry_run=True)
    counts = count_params_meta(cfg)
    gpus, ep, pp = lay.world, lay.ep, lay.pp
    mem = memory_plan(counts, gpus, ep, pp, args.tp, lay.cp)
    print()
    print(f"model {cfg.name}: {_fmt_count(counts['total'])} parameters "
          f"(routed experts {_fmt_count(counts['expert'])}, other matrices {_fmt_count(counts['dense_matrix'])}, "
          f"AdamW params {_fmt_count(counts['adamw'])}, MTP {_fmt_count(counts['mtp'])})")
    if "summary" in counts:
        print("model.summary.count_parameters: " + ", ".join(
            f"{k}={_fmt_count(v)}" for k, v in counts["summary"].items()))
    print(f"cluster: {gpus} GPUs = PP{pp} x TP{args.tp} x DP{mem['dp']} x CP{lay.cp} "
          f"(EP{ep} inside DP, expert-DP {mem['edp'] // lay.cp})")
    print("assumptions: bf16 params, fp32 grads, fp32 master + Muon momentum (matrices) / AdamW "
          "m,v (1-D, embeddings, head) sharded ZeRO-1 over DP (experts over expert-DP); "
          "activations not included")
    print(f"per GPU: parameters {_fmt_bytes(mem['params'])}, gradients {_fmt_bytes(mem['grads'])}, "
          f"optimizer+master {_fmt_bytes(mem['optimizer'])}, total {_fmt_bytes(mem['total'])}")
    _print_phase_estimates(cur, cfg, counts, lay, args, mtp_over, mem["total"])
    if lay.tp == 1:
        tm = trainer_memory_plan(counts, lay)
        print(f"this trainer (fp32 params+grads, FSDP2 over DPxCP, experts over EP, unsharded "
              f"Muon/AdamW state per shard): parameters {_fmt_bytes(tm['params'])}, gradients "
              f"{_fmt_bytes(tm['grads'])}, optimizer {_fmt_bytes(tm['optimizer'])}, total "
              f"{_fmt_bytes(tm['total'])} per rank")
    return 0


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _sync_moe_buffers(model, names: tuple[str, ...], group=None) -> None:
    """All-reduce (sum) MoE load buffers over the ranks that see different tokens of the same
    layers (the layout's ``dense`` mesh) so every rank updates the router bias identically."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    for n, b in model.named_buffers():
        if n.rsplit(".", 1)[-1] in names:
            dist.all_reduce(b, op=dist.ReduceOp.SUM, group=group)


def state_bytes(params: list[torch.Tensor], opt) -> dict[str, int]:
    """Bytes this rank holds for parameters, gradients and optimizer state (local shards of
    DTensors), for ``--memory-report`` (compared with ``trainer_memory_plan`` in bench/)."""
    def local(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()
    out = {"params": sum(local(p) for p in params),
           "grads": sum(local(p.grad) for p in params if p.grad is not None),
           "optimizer": sum(local(v) for st in opt.state.values() for v in st.values()
                            if isinstance(v, torch.Tensor) and v.ndim > 0)}
    out["total"] = sum(out.values())
    return out


def _count_mtp_targets(mb, k: int, cpx) -> int:
    """Non-ignored targets of MTP depth ``k`` in a micro-batch (this CP rank's chunk)."""
    from model.mtp import mtp_targets
    t = mtp_targets(mb.labels, k, mb.document_ids)
    return int(((cpx.local(t) if cpx else t) != -100).sum())


def _grad_norm_and_clip(params: list[torch.Tensor], max_norm: float) -> float:
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def parallel_layout_or_fail(args, world: int, cfg, seq_lens: list[int], dry_run: bool = False):
    """``--dp/--ep/--pp/--cp`` checked against the world size, the model and the curriculum's
    sequence lengths: plain arithmetic, before any process group or parameter exists."""
    from model.parallel.layout import LayoutError, resolve_layout, validate_layout
    ep, pp = args.ep, args.pp
    if not dry_run and (args.tp or 1) != 1:
        raise TrainError(f"parallel layout: --tp {args.tp}: tensor parallelism is dry-run "
                         f"arithmetic only (train with --dp/--ep/--pp/--cp)")
    if dry_run:  # the report's layout unless told otherwise
        ep, pp = ep or 8, pp or 8
    try:
        lay = resolve_layout(world, args.dp, ep, pp, args.cp, args.tp if dry_run else 1)
        validate_layout(lay, cfg, seq_lens)
    except LayoutError as exc:
        raise TrainError(f"parallel layout: {exc}") from None
    return lay


def train(args) -> int:
    from model.checkpoint import latest_checkpoint
    from model.distributed import init_distributed, shutdown
    from trainer_bridge.mix import MixError, discover_mixes

    # ---- everything that can fail cheaply, before any compute --------------------------
    cur = load_curriculum_or_fail(args.curriculum)
    if not args.mix:
        raise TrainError("--mix is required (a build-mix output folder, or a folder of them)")
    try:
        mixes = discover_mixes(args.mix)
    except MixError as exc:
        raise TrainError(str(exc)) from None
    overrides = parse_overrides(args.set)
    if args.vocab_from_mix and "vocab_size" not in overrides:
        sizes = [int(m.tokenizer.get("padded_vocab_size") or m.vocab_size or 0) for m in mixes]
        if not any(sizes):
            raise TrainError("--vocab-from-mix: no mix manifest records the tokenizer's vocab_size")
        overrides["vocab_size"] = max(sizes)
    cfg = init_config(args.init_from, overrides) if args.init_from else model_config(args.model, overrides)
    mtp_overrides = parse_mtp_depths(args.mtp_depths, cfg.n_mtp)  # fail now, not at the phase that uses it
    check_vocab(mixes, cur, cfg.vocab_size)
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    layout = parallel_layout_or_fail(args, world_env, cfg, [p.seq_len for s in cur.stages for p in s.phases])
    phases = build_run_phases(cur, mixes, layout.dp, args.global_batch, args.stage)
    run_dir = Path(args.out)
    if not args.resume and latest_checkpoint(run_dir) is not None:
        raise TrainError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                         f"or choose another --out")

    info = init_distributed(args.device)
    try:
        return _train_loop(args, cur, cfg, phases, mtp_overrides, run_dir, info, layout)
    finally:
        shutdown()


def _train_loop(args, cur, cfg, phases: list[RunPhase], mtp_overrides: dict[str, int],
                run_dir: Path, info, layout=None) -> int:
    from curricula.schedule import bias_update_rate_at, lr_at
    from model.checkpoint import CheckpointError, load_latest_intact, save_checkpoint
    from model.distributed import all_reduce_sum, shard_model
    from model.monitor import Monitor
    from model.optim import build_optimizer, iter_params, set_lr
    from model.parallel import ParallelLayout, build_mesh
    from model.parallel.expert import apply_expert_parallel, clip_grad_norm, ep_load_balance, reduce_expert_grads
    from model.parallel.context import apply_context_parallel
    from model.parallel.pipeline import apply_pipeline
    from model.parallel.state import ExpertStateAdapter
    from model.transformer import Step35Model
    from stepcrawl.io import atomic_open
    from trainer_bridge.loader import CurriculumLoader

    # every generator a checkpoint saves (model.checkpoint.rng_state), not only torch's: seeded,
    # a run's rng_rank*.pt no longer depends on what the process did before (tests, notebooks)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    dev = info.device
    use_amp = dev.type == "cuda" and not args.no_amp
    if dev.type == "cpu":
        torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))

    layout = layout or ParallelLayout(dp=info.world)
    pm = build_mesh(layout, dev.type, info.rank)
    n_dense = layout.dp * layout.cp        # ranks averaging the dense gradients (FSDP2 mesh)
    dense_group = pm.group("dense")
    # the loader's world is the data-parallel mesh: EP ranks read different sequences
    loader = CurriculumLoader([p.plan for p in phases], seed=args.seed, rank=pm.dp_rank,
                              world=layout.dp, micro_batch_tokens=args.micro_batch_tokens)
    total_steps = loader.total_steps
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for p in phases:
            log.info("phase %-24s seq_len %6d  sequences %8d  steps %6d  (schedule scale x%.3g)",
                     p.key, p.plan.seq_len, p.plan.budget_sequences, p.plan.steps, p.scale)

    model = Step35Model(cfg).to(dev)
    if args.init_from and not (args.resume and latest_checkpoint(run_dir) is not None):
        from model.hf import load_init_weights  # weights only: optimizer, data and step start fresh
        load_init_weights(model, args.init_from, progress=info.is_main and not args.no_progress)
        if info.is_main:
            log.info("initialised from %s", args.init_from)
    if args.activation_checkpointing:
        model.set_activation_checkpointing(True)
    model.set_balance_scope(args.ep_balance)
    model.balance_group = dense_group
    # expert parallelism first (slices the expert banks), then the pipeline stage, then FSDP2
    # on the dense mesh
    disp = apply_expert_parallel(model, pm.group("ep"), layout.ep, pm.ep_rank)
    cpx = apply_context_parallel(model, pm.group("cp"), layout.cp, pm.cp_rank)
    pipe = None
    if layout.pp > 1:
        pipe = apply_pipeline(model, pm.group("pp"), layout.pp, pm.pp_rank, dev)
        model = pipe.model
    expert_ids: set[int] = set()
    if disp is not None:
        from model.parallel.expert import expert_parameters
        expert_ids = {id(p) for _, p in expert_parameters(model)}
    expert_set = {p for p in model.parameters() if id(p) in expert_ids}
    model = shard_model(model, info, mixed_precision=False, mesh=pm.sub("dense"),
                        ignored_params=expert_set)
    model.train()
    # expert banks are identical on the replica ranks: Muon splits their orthogonalisation there
    opt = build_optimizer(model, lr=0.0, weight_decay=args.weight_decay, ns_steps=args.ns_steps,
                          replica_group=pm.group("replica") if disp is not None else None,
                          replicated=expert_set)

    adapter = ExpertStateAdapter(pm.sub("ep"), disp.local) if disp is not None else None
    mtp_depths = cfg.mtp_active_depths  # depths trained so far (restored on resume)
    monitor = Monitor(run_dir, enabled=info.is_main, total_steps=min(total_steps, args.max_steps or total_steps),
                      tensorboard=not args.no_tensorboard, progress=not args.no_progress)
    step = 0
    if args.resume:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                ck, st, skipped = load_latest_intact(run_dir, model, opt, info, adapter=adapter)
            except CheckpointError as exc:
                raise TrainError(f"{exc} (was the run started with another --model/--set?)") from None
        for bad, why in skipped:
            log.warning("--resume: skipping corrupt checkpoint %s: %s", bad.name, why)
        if ck is None and skipped:
            raise TrainError(f"--resume: no intact checkpoint in {run_dir / 'checkpoints'} "
                             f"({len(skipped)} corrupt; newest: {skipped[0][1]})")
        if ck is None:
            if info.is_main:
                log.info("--resume: no checkpoint in %s, starting from scratch", run_dir)
        else:
            if skipped and info.is_main:
                log.warning("--resume: fell back to %s, the newest intact checkpoint", ck.name)
            if st.get("curriculum") != cur.name:
                raise TrainError(f"{ck}: checkpoint of curriculum {st.get('curriculum')!r}, "
                                 f"not {cur.name!r}")
            loader.load_state_dict(st["loader"])
            monitor.spikes.load_state_dict(st.get("spikes", {}))
            step = int(st["step"])
            mtp_depths = int(st.get("mtp_depths", mtp_depths))
            if info.is_main:
                log.info("resumed from %s at step %d", ck, step)
    monitor.start(step)
    if info.is_main:
        with atomic_open(run_dir / "config.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"model": cfg.to_dict(), "curriculum": cur.name,
                                 "args": {k: v for k, v in vars(args).items() if k != "func"}},
                                indent=2, default=str) + "\n")

    def trainer_state() -> dict:
        return {"step": step, "curriculum": cur.name, "model": cfg.name, "mtp_depths": mtp_depths,
                "loader": loader.state_dict(), "spikes": monitor.spikes.state_dict()}

    def checkpoint() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            save_checkpoint(run_dir, step, model, opt, trainer_state(), info, keep=args.keep,
                            adapter=adapter)

    params = list(iter_params(opt))
    dense_params = [p for p in params if id(p) not in expert_ids]
    expert_params = [p for p in params if id(p) in expert_ids]
    max_steps = args.max_steps or total_steps
    applied_phase = -1
    last_saved = step
    while not loader.done and step < max_steps:
        sb = loader.next()
        rp = phases[sb.phase_index]
        sched = rp.phase.schedule
        n_steps = rp.plan.steps
        if sb.phase_index != applied_phase:
            if sb.step_in_phase == 0 and step > 0:  # kill matrix: a later phase's first step
                kill_point("train.phase-switch")
            model.set_rope_theta(sched.rope_theta_full, sched.rope_theta_swa)
            model.freeze_router(bool(sched.router_frozen))
            model.set_ep_loss_coef(0.0 if sched.router_frozen else float(sched.ep_loss_coef))
            want = mtp_depths_for(rp.stage.name, rp.phase, mtp_overrides, cfg.mtp_active_depths)
            if want > mtp_depths >= 1 and step > 0:
                # the report's final MTP phase: heads that never trained start as copies of
                # MTP-1 (once: the depth count is in the checkpoint, so a resume does not re-clone;
                # at step 0 there is nothing to copy, every head keeps its own random init)
                model.clone_mtp_heads(range(mtp_depths, want))
                if info.is_main:
                    log.info("phase %s: MTP depths %d -> %d, heads %s cloned from MTP-1", rp.key,
                             mtp_depths, want, list(range(mtp_depths + 1, want + 1)))
            model.set_mtp_active_depths(want)
            mtp_depths = max(mtp_depths, want)
            applied_phase = sb.phase_index
            if info.is_main:
                log.info("phase %s: seq_len %d, batch %d, θ %g/%g, mtp %g, router %s, ep %g",
                         rp.key, sb.seq_len, sb.global_batch, sched.rope_theta_full,
                         sched.rope_theta_swa, sched.mtp_weight,
                         "frozen" if sched.router_frozen else "trained", sched.ep_loss_coef)
        lr = lr_at(sched, sb.step_in_phase, n_steps) * args.lr_scale
        set_lr(opt, lr)

        # Loss normalisation: the mean over every loss token of the *global* batch, whatever the
        # world size and micro-batching (FSDP averages gradients over its mesh, hence * n_dense).
        # context parallel: this rank's chunk of every sequence holds only some loss tokens
        mb_loss = [int((cpx.local(mb.labels) != -100).sum()) if cpx else mb.n_loss_tokens
                   for mb in sb.micro_batches]
        # MTP depth k: a mean over its own targets (fewer than the LM's: document ends, the
        # sequence end), each micro-batch weighted by its share of the global count, so the
        # MTP loss too is the same whatever the micro-batches, DP split or CP chunks
        n_mtp_active = min(model.mtp_active_depths, cfg.n_mtp) if sched.mtp_weight else 0
        mb_mtp = [[_count_mtp_targets(mb, k, cpx) for k in range(1, n_mtp_active + 1)]
                  for mb in sb.micro_batches]
        counts = torch.tensor([sum(mb_loss)] + [sum(c[k] for c in mb_mtp) for k in range(n_mtp_active)],
                              dtype=torch.float64, device=dev)
        counts = all_reduce_sum(counts, dense_group).tolist()
        n_global, mtp_global = int(counts[0]), [max(int(c), 1) for c in counts[1:]]
        denom = max(n_global, 1)
        mtp_w = torch.tensor(cfg.mtp_loss_weights[:n_mtp_active], dtype=torch.float64)
        mtp_w = (mtp_w / mtp_w.sum()).tolist() if n_mtp_active else []
        # lm, mtp, aux, total: summed on the device (NCCL reduces device tensors only; no host
        # sync per micro-batch), read back once after the all-reduce
        sums = torch.zeros(4, dtype=torch.float64, device=dev)
        if pipe is not None:
            # 1F1B over the loader's micro-batches; the stages weigh each micro-batch like the
            # loop below and report their parts of the sums (LM/MTP on the last stage, the
            # balance loss of its layers on every stage)
            model.set_step(n_global, sb.global_tokens, n_dense, float(sched.mtp_weight), mtp_global)
            pipe.step([mb.to(dev) for mb in sb.micro_batches])
            sums = model.step_sums.to(dev)
            sums[2] /= len(sb.micro_batches)
        for i, mb in enumerate(sb.micro_batches if pipe is None else []):
            mb = mb.to(dev)
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(i == len(sb.micro_batches) - 1)
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
            with ctx:
                out = model(mb.input_ids, labels=mb.labels, document_ids=mb.document_ids,
                            position_ids=mb.position_ids, mtp_weight=float(sched.mtp_weight))
            w = mb_loss[i] / denom
            # LM/MTP terms are weighted by this micro-batch's share of the global *loss* tokens;
            # the balance term by its share of the global *routed* tokens (every token is
            # routed, loss or not), so the sum over micro-batches and ranks is the global mean.
            v = mb.input_ids.numel() / layout.cp / max(sb.global_tokens, 1)
            loss = out.lm_loss * w
            mtp_part = None
            if out.mtp_loss is not None:
                mtp_part = sum(out.mtp_losses[k] * (mtp_w[k] * mb_mtp[i][k] / mtp_global[k])
                               for k in range(n_mtp_active))
                loss = loss + float(sched.mtp_weight) * mtp_part
            if out.aux_loss is not None and model.ep_loss_coef:
                loss = loss + v * model.ep_loss_coef * out.aux_loss
            (loss * n_dense).backward()
            sums[0] += out.lm_loss.detach().double() * w
            if mtp_part is not None:
                sums[1] += mtp_part.detach().double()
            if out.aux_loss is not None:
                sums[2] += out.aux_loss.detach().double() / (len(sb.micro_batches) * n_dense)
            sums[3] += loss.detach().double()
        # pipelined: every stage holds part of the sums, so over all ranks
        lm_sum, mtp_sum, aux_sum, total_sum = all_reduce_sum(sums, dense_group if pipe is None else None).tolist()
        if disp is not None:
            reduce_expert_grads(expert_params, pm.group("replica"), n_dense)
        if disp is not None or pipe is not None:
            gnorm = clip_grad_norm(dense_params, expert_params, args.clip,
                                   pm.group("ep") if disp is not None else None,
                                   pm.group("pp") if pipe is not None else None)
        else:
            gnorm = _grad_norm_and_clip(params, args.clip)
        kill_point("train.mid-step")  # kill matrix: gradients computed, optimizer step not taken
        opt.step()
        if args.memory_report:
            mem_seen = state_bytes(params, opt)
        opt.zero_grad(set_to_none=True)
        _sync_moe_buffers(model, ("bias_load",), dense_group)
        rate = 0.0 if sched.router_frozen else bias_update_rate_at(sched, sb.step_in_phase, n_steps)
        model.update_router_bias(rate)
        model.reset_balance_window()
        step += 1

        routing = None
        if step % args.routing_every == 0 or step == max_steps:
            _sync_moe_buffers(model, ("stat_load", "stat_norm"), dense_group)
            routing = model.routing_stats(reset=True)
        rec = {
            "step": step, "loss": lm_sum, "total_loss": total_sum,
            "mtp_loss": mtp_sum if sched.mtp_weight else None, "aux_loss": aux_sum,
            "lr": lr, "grad_norm": gnorm, "phase": rp.key, "phase_step": sb.step_in_phase,
            "seq_len": sb.seq_len, "batch": sb.global_batch, "micro_batch": sb.micro_batch,
            "grad_accum": sb.grad_accum, "loss_tokens": n_global,
            "tokens": sb.tokens_into_run + sb.global_tokens, "step_tokens": sb.global_tokens,
            "meta_masked": sb.mask_meta, "mtp_weight": float(sched.mtp_weight),
            "mtp_depths": model.mtp_active_depths,
            "rope_theta_full": float(sched.rope_theta_full), "router_frozen": bool(sched.router_frozen),
            "bias_update_rate": rate,
            **ep_load_balance(disp, dense_group, dev, pm.group("pp") if pipe is not None else None),
        }
        monitor.log(rec, routing)
        if not math.isfinite(rec["loss"]):
            checkpoint()
            raise TrainError(f"step {step}: loss is {rec['loss']} (checkpoint saved for inspection)")
        if args.checkpoint_every and step % args.checkpoint_every == 0:
            checkpoint()
            last_saved = step
    if step != last_saved:
        checkpoint()
    monitor.close()
    if args.memory_report and step > 0:
        import resource
        rep_ = dict(mem_seen, rank=info.rank, world=info.world, layout=dataclasses.asdict(layout),
                    peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        with atomic_open(run_dir / f"memory_rank{info.rank:05d}.json", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(rep_) + "\n")
    if info.is_main:
        _print_summary(run_dir)
        log.info("done: step %d of %d, checkpoint in %s", step, total_steps, run_dir / "checkpoints")
    return 0


def _print_summary(run_dir: Path) -> None:
    """Loss at the start and end of each phase of this run (from metrics.jsonl)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    by_phase: dict[str, list[float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_phase.setdefault(r.get("phase", "?"), []).append(float(r["loss"]))
    if not by_phase:
        return
    print("loss by phase (mean of the first / last 3 steps):")
    for ph, losses in by_phase.items():
        k = min(3, len(losses))
        print(f"  {ph:28} {sum(losses[:k]) / k:8.4f} -> {sum(losses[-k:]) / k:8.4f}  ({len(losses)} steps)")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
EPILOG = """\
examples:
  # tiny model on the demo mix, on CPU (a few minutes)
  train --curriculum curricula/tiny.yaml --mix data/demo/mix --model tiny --out runs/tiny
  # continue it later
  train --curriculum curricula/tiny.yaml --mix data/demo/mix --model tiny --out runs/tiny --resume
  # 8 GPUs, FSDP2 + activation checkpointing
  torchrun --nproc-per-node 8 -m model.train --curriculum full.yaml --mix data/mix \\
      --model small --out runs/small --activation-checkpointing
  # the report's final MTP phase: MTP-1 cloned into heads 2-3 when phase mid2 starts, all 3 train
  train --curriculum full.yaml --mix data/mix --model small --set n_mtp=3 --mtp-depths mid/mid2=3
  # mid-training on the released weights (python -m model.hf import/export convert both ways)
  train --curriculum full.yaml --mix data/mix --stage mid --init-from Step-3.5-Flash/ --out runs/mid
  # long-context phases: 2 pipeline stages, each context-parallel over 4 GPUs
  torchrun --nproc-per-node 8 -m model.train --curriculum full.yaml --mix data/mix --model small \\
      --out runs/small --pp 2 --cp 4 --resume
  # plan and memory for the full model on 4096 GPUs, nothing allocated
  train --curriculum full.yaml --model full --dry-run --gpus-total 4096 --ep 8 --pp 8

--mix may be given several times (one build-mix output per stage) or name a folder whose
sub-folders are build-mix outputs. Metrics: RUN_DIR/metrics.jsonl and RUN_DIR/tensorboard.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description="Train the Step 3.5 Flash-style model on a curriculum.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--curriculum", required=True, help="curriculum YAML (or a bundled name: tiny, full)")
    p.add_argument("--mix", action="append", default=[], metavar="DIR",
                   help="build-mix output folder, or a folder of them (repeatable)")
    p.add_argument("--model", default="tiny", choices=["tiny", "small", "proxy", "full"])
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a ModelConfig field, e.g. --set d_model=64 (repeatable)")
    p.add_argument("--mtp-depths", action="append", metavar="[PHASE=]N",
                   help="active MTP depths: N for every phase, or STAGE/PHASE=N / PHASE=N (repeatable). "
                        "Default: the schedule's mtp_active_depths if the curriculum has it, else the "
                        "model's (1). Going from 1 to N>1 at a phase switch clones MTP-1 into heads 2..N")
    p.add_argument("--ep-balance", choices=["global", "micro"], default="global",
                   help="EP-group balance loss load fractions over the whole global batch (all "
                        "micro-batches and data-parallel ranks of the step, the report's choice) or "
                        "per micro-batch")
    p.add_argument("--vocab-from-mix", action="store_true",
                   help="size the model's vocabulary from the mix's tokenizer (padded_vocab_size)")
    p.add_argument("--out", default="runs/train", help="run folder: checkpoints, metrics, tensorboard")
    p.add_argument("--stage", action="append", help="train only these stages (default: every stage with a mix)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0 = whole run)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--init-from", metavar="PATH",
                   help="start from these weights: a released/HF folder (config.json + safetensors) or one of "
                        "our checkpoints (step folder or run folder); the architecture comes from it (--model "
                        "is ignored, --set may change run-time fields only); optimizer, data and step start "
                        "fresh. Ignored by --resume once --out has a checkpoint")
    p.add_argument("--dry-run", action="store_true", help="print the plan and memory per GPU; no model, no data")
    p.add_argument("--gpus-total", type=int, default=4096, help="cluster size for --dry-run")
    p.add_argument("--dp", type=int, default=None,
                   help="data-parallel degree, EP included (default: world / (pp·cp))")
    p.add_argument("--ep", type=int, default=None,
                   help="expert-parallel degree, carved out of --dp (default 1; --dry-run: 8)")
    p.add_argument("--pp", type=int, default=None,
                   help="pipeline-parallel stages (default 1; --dry-run: 8)")
    p.add_argument("--cp", type=int, default=None, help="context-parallel degree (default 1)")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel degree assumed by --dry-run")
    p.add_argument("--gpu-tflops", type=float, default=989.0,
                   help="--dry-run: bf16 dense peak per GPU in TFLOP/s (H800/H100 SXM: 989)")
    p.add_argument("--mfu", type=float, default=0.4, help="--dry-run: assumed model-FLOPs utilisation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--micro-batch-tokens", type=int, default=8192,
                   help="tokens per micro-batch per rank (micro-batch = largest divisor of the local batch that fits)")
    p.add_argument("--global-batch", type=int, default=0,
                   help="override the curriculum's global batch (sequences), e.g. for a scaled-down mix")
    p.add_argument("--lr-scale", type=float, default=1.0, help="multiply the curriculum's learning rate")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="gradient clipping norm (0 = off)")
    p.add_argument("--ns-steps", type=int, default=6, help="Polar Express steps")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (0 = only at the end)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep")
    p.add_argument("--routing-every", type=int, default=10, help="steps between expert-health metrics")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--memory-report", action="store_true",
                   help="write RUN_DIR/memory_rankN.json: parameter/gradient/optimizer bytes and peak RSS per rank")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.dry_run:
            return dry_run(args)
        return train(args)
    except TrainError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # a missing/unreadable/malformed input file: one line, exit 2
        from stepcrawl.errors import one_line

        print(f"train: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
