"""Atomic, resumable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout::

    RUN_DIR/checkpoints/step_00000120/
        .metadata, __0_0.distcp, ...   model + optimizer (DCP; sharded tensors under FSDP2)
        trainer_state.json             loader state, step, schedule position, monitor state
        rng_rank00000.pt ...           per-rank RNG states (torch, CUDA, numpy, python)
        checksums_rank00000.json ...   sha256 of the files each rank wrote (rank 0: also .metadata, state)
        COMPLETE                       written last, before the rename

Atomicity: every rank writes into ``.tmp-step_XXXXXXXX``; after a barrier rank 0 writes
``COMPLETE`` and renames the folder to ``step_XXXXXXXX`` (one ``rename`` on the same file
system). A crash while saving leaves only a ``.tmp-*`` folder, which loading ignores and the next
save removes, so the previous checkpoint stays usable. Only the newest ``keep`` complete
checkpoints are kept.

Integrity: ``load_checkpoint`` re-hashes the files against the checksum lists before DCP reads a
byte, so a damaged checkpoint (a zeroed block inside a ``.distcp``) is refused instead of
resuming with garbage weights; ``load_latest_intact`` then falls back to the newest checkpoint
that verifies and says which ones it skipped and why.

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
from torch.distributed.checkpoint.api import CheckpointException
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from model.distributed import DistInfo, barrier
from stepcrawl.faults import kill_point
from stepcrawl.io import read_json, write_json

CKPT_RE = re.compile(r"^step_(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded into this model/optimizer (refuse: exit 2)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose files do not match the checksums recorded when it was saved (or are
    missing/unreadable): an older intact checkpoint may be used instead."""


CHECKSUMS_RE = re.compile(r"^checksums_rank(\d{5})\.json$")
_RANK_FILE_RE = re.compile(r"^(?:__(\d+)_\d+\.distcp|rng_rank(\d+)\.pt)$")


def _file_sha256(path: Path) -> str:
    from stepcrawl.manifest import file_hash

    return file_hash(path)


def _owner(name: str) -> int:
    """The rank that wrote (and so hashes) a checkpoint file: DCP's ``__R_N.distcp`` and
    ``rng_rankR.pt`` belong to rank R, everything else (``.metadata``, trainer state) to 0."""
    m = _RANK_FILE_RE.match(name)
    return int(m.group(1) or m.group(2)) if m else 0


def _is_checksummed(name: str) -> bool:
    """Whether a file in a checkpoint being saved belongs in a checksum list. Not COMPLETE or the
    lists themselves, and not another rank's write still in flight (``atomic_open``'s
    ``.tmp-NAME.XXXX``): rank 0 hashes while rank 1 may be writing its list, and a temp name
    listed by rank 0 is gone after the rename, which made the checkpoint look corrupt."""
    return name != "COMPLETE" and not CHECKSUMS_RE.match(name) and not name.startswith(".tmp-")


def record_checksums(folder: Path, rank: int = 0) -> dict[str, str]:
    """sha256 of the files of ``folder`` this rank wrote, into ``checksums_rankRRRRR.json``.
    Every rank hashes its own shards, so the cost is spread like the writes are."""
    sums = {str(p.relative_to(folder)): _file_sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and _is_checksummed(p.name) and _owner(p.name) == rank}
    write_json(folder / f"checksums_rank{rank:05d}.json", sums)
    return sums


def verify_checkpoint(path: str | Path) -> bool:
    """Raise CorruptCheckpointError naming the first file that is missing or differs from the
    checksums recorded at save time (or a rank's checksum list that is missing). Returns False
    (nothing to verify) for a checkpoint saved before checksums were recorded, True when every
    file matched."""
    path = Path(path)
    lists = sorted(p for p in path.iterdir() if CHECKSUMS_RE.match(p.name)) if path.is_dir() else []
    if not lists:
        return False
    try:
        world = int(json.loads((path / "COMPLETE").read_text()).get("world", 1))
    except (OSError, ValueError, AttributeError):
        world = len(lists)
    missing = sorted(set(range(world)) - {int(CHECKSUMS_RE.match(p.name).group(1)) for p in lists})
    if missing:
        raise CorruptCheckpointError(f"{path}: no checksum list of rank(s) {missing}")
    for sums_file in lists:
        try:
            sums = read_json(sums_file)
            if not isinstance(sums, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise CorruptCheckpointError(f"{sums_file}: unreadable ({exc})") from None
        for rel, digest in sorted(sums.items()):
            f = path / rel
            if not f.is_file():
                raise CorruptCheckpointError(f"{f}: missing (listed in {sums_file.name})")
            if _file_sha256(f) != digest:
                raise CorruptCheckpointError(f"{f}: sha256 does not match the checksum recorded at save time (corrupt)")
    return True


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
    record_checksums(tmp, info.rank)  # this rank's files, before COMPLETE makes them count
    kill_point("checkpoint.files-written")  # kill matrix: every file written, no COMPLETE, no rename
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


def _dcp_reason(exc: BaseException) -> str:
    """One line for a DCP load failure: DCP wraps each rank's traceback in one long message, so
    take its last ``SomeError: why`` line (e.g. a size mismatch), else its first line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errs = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception): ", ln)]
    line = (errs or lines or [type(exc).__name__])[-1 if errs else 0]
    return line if len(line) <= 300 else line[:297] + "..."


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    info: DistInfo, adapter=None) -> dict:
    """Load model + optimizer (resharding as needed) and this rank's RNG; returns trainer_state."""
    path = Path(path)
    if not (path / "COMPLETE").is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no COMPLETE marker)")
    verify_checkpoint(path)  # before DCP reads a byte: a corrupt file must not become weights
    try:  # read first too: an unreadable state must not leave the model half-loaded
        trainer_state = read_json(path / "trainer_state.json")
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path / 'trainer_state.json'}: unreadable ({exc})") from None
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
    except (Exception, CheckpointException) as exc:  # DCP's CheckpointException is a BaseException
        raise CheckpointError(f"{path}: cannot load into this model/optimizer: {_dcp_reason(exc)}") from exc
    if adapter is not None:
        state["model"], state["optim"] = adapter.to_local(state["model"], state["optim"])
    if groups:
        state["optim"]["param_groups"] = groups
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng_file = path / f"rng_rank{info.rank:05d}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return trainer_state


def load_latest_intact(run_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                       info: DistInfo, adapter=None) -> tuple[Path | None, dict | None, list[tuple[Path, str]]]:
    """Load the newest checkpoint of ``run_dir`` that verifies against its checksums.

    Returns ``(path, trainer_state, skipped)``: ``skipped`` lists the newer checkpoints passed
    over as corrupt, with the reason; ``path`` is None when there is none at all (or none
    intact). A checkpoint that verifies but does not fit the model (another --model/--set)
    raises CheckpointError: an older one would not fit either, so that is a refusal.

    Verification happens before any tensor is loaded, so skipping one leaves the model as it
    was (every rank verifies the same files, so all ranks pick the same checkpoint)."""
    skipped: list[tuple[Path, str]] = []
    for ck in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(ck)
        except CorruptCheckpointError as exc:
            skipped.append((ck, str(exc)))
            continue
        try:
            return ck, load_checkpoint(ck, model, optimizer, info, adapter=adapter), skipped
        except CorruptCheckpointError as exc:  # raised before any tensor was loaded
            skipped.append((ck, str(exc)))
    return None, None, skipped
