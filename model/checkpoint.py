"""Atomic, resumable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout::

    RUN_DIR/checkpoints/step_00000120/
        .metadata, __0_0.distcp, ...   model + optimizer (DCP; sharded tensors under FSDP2)
        trainer_state.json             loader state, step, schedule position, monitor state
        rng_rank00000.pt ...           per-rank RNG states (torch, CUDA, numpy, python)
        COMPLETE                       written last, before the rename

Atomicity: every rank writes into ``.tmp-step_XXXXXXXX``; after a barrier rank 0 writes
``COMPLETE`` and renames the folder to ``step_XXXXXXXX`` (one ``rename`` on the same file
system). A crash while saving leaves only a ``.tmp-*`` folder, which loading ignores and the next
save removes, so the previous checkpoint stays usable. Only the newest ``keep`` complete
checkpoints are kept.

DCP stores FSDP2 (DTensor) parameters shard by shard and reshards on load, so a run can resume
on a different number of processes (the loader state is world-size independent too).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from model.distributed import DistInfo, barrier
from stepcrawl.io import read_json, write_json

CKPT_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp-*`` and folders without COMPLETE ignored)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    out = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / "COMPLETE").is_file()]
    return sorted(out, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ck = list_checkpoints(run_dir)
    return ck[-1] if ck else None


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict, info: DistInfo, keep: int = 3, adapter=None) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder.  ``adapter``
    (``model.parallel.state.ExpertStateAdapter``) presents expert-parallel shards as global
    tensors so the checkpoint reshards to other layouts."""
    root = checkpoint_dir(run_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step_*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    if adapter is not None:
        model_sd, optim_sd = adapter.to_global(model_sd, optim_sd)
    with warnings.catch_warnings():  # single process: DCP warns that it runs without a group
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_rank{info.rank:05d}.pt")
    if info.is_main:
        write_json(tmp / "trainer_state.json", trainer_state)
    barrier()
    if info.is_main:
        (tmp / "COMPLETE").write_text(json.dumps({"step": step, "world": info.world}) + "\n")
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = root / f".old-{final.name}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(stale, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    info: DistInfo, adapter=None) -> dict:
    """Load model + optimizer (resharding as needed) and this rank's RNG; returns trainer_state."""
    path = Path(path)
    if not (path / "COMPLETE").is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no COMPLETE marker)")
    # The optimizer's state must already exist for every parameter (MuonAdamW.init_state), so
    # the skeleton DCP loads into has the same structure as what was saved.
    model_sd, optim_sd = get_state_dict(model, optimizer)
    if adapter is not None:
        model_sd, optim_sd = adapter.to_global(model_sd, optim_sd)
    state = {"model": model_sd, "optim": optim_sd}
    # this run's param groups (parameter FQN lists, Muon splits): a checkpoint from another
    # parallel layout (e.g. one pipeline stage per rank) holds another rank's lists
    groups = [dict(g) for g in optim_sd.get("param_groups", [])]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path))
    except Exception as exc:  # DCP raises bare RuntimeErrors; say which checkpoint
        raise CheckpointError(f"{path}: cannot load into this model/optimizer: {exc}") from exc
    if adapter is not None:
        state["model"], state["optim"] = adapter.to_local(state["model"], state["optim"])
    if groups:
        state["optim"]["param_groups"] = groups
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng_file = path / f"rng_rank{info.rank:05d}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return read_json(path / "trainer_state.json")
