"""Process-group setup and FSDP2 wrapping for ``train``.

Launch: ``torchrun --nproc-per-node N -m model.train ...`` (or the ``train`` script under
torchrun). torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``; without them the
run is a single process and nothing is initialised. Backend: NCCL on CUDA, gloo on CPU (the
2-process test runs gloo on CPU).

Parallelism here is data parallel + FSDP2 (``torch.distributed.fsdp.fully_shard``, one unit per
transformer block plus the root) with optional activation checkpointing per block.  The
parallel layout (``--dp/--ep/--pp/--cp``), its ``DeviceMesh`` and expert parallelism live in
``model/parallel/``; FSDP2 then runs on the layout's ``dense`` sub-mesh with the expert banks
ignored (see docs/TRAINING.md).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor, group=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The backbone blocks to shard (and checkpoint) one by one: the children of ``model.layers``."""
    blocks: list[nn.Module] = []
    for name, mod in model.named_children():
        if isinstance(mod, nn.ModuleList) and name in ("layers", "blocks"):
            blocks.extend(mod)
        elif isinstance(mod, nn.ModuleDict) and name in ("layers", "blocks"):  # a pipeline stage
            blocks.extend(mod.values())
    return blocks


def mtp_heads(model: nn.Module) -> list[nn.Module]:
    """The MTP heads (``model.mtp``), each its own FSDP2 unit: ``MTPHead.forward`` uses only
    its own parameters (its output norm included), and the shared embedding / LM head belong to
    the root unit, which stays unsharded for the whole root forward.  Inactive depths never run
    a forward, so their unit is never all-gathered and gets no gradient."""
    heads = getattr(model, "mtp", None)
    return list(heads) if isinstance(heads, nn.ModuleList) else []


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Wrap each transformer block in non-reentrant activation checkpointing; returns count."""
    import functools

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing as _apply, checkpoint_wrapper)

    blocks = set(id(b) for b in transformer_blocks(model))
    if not blocks:
        return 0
    _apply(model,
           checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper,
                                                   checkpoint_impl=CheckpointImpl.NO_REENTRANT),
           check_fn=lambda m: id(m) in blocks)
    return len(blocks)


def shard_model(model: nn.Module, info: DistInfo, mixed_precision: bool = False, mesh=None,
                ignored_params: set | None = None) -> nn.Module:
    """FSDP2: ``fully_shard`` every block and every MTP head, then the root (embedding, final
    norm, LM head). On one process this is a no-op.  ``mesh``: the FSDP mesh (default: all
    ranks; under a parallel layout the ``dense`` sub-mesh of ``model.parallel``);
    ``ignored_params``: parameters FSDP2 must leave alone (expert-parallel expert banks)."""
    if not info.distributed or (mesh is not None and mesh.size() == 1):
        return model  # nothing to shard over (e.g. a pipeline stage without data parallelism)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mesh is None:
        mesh = init_device_mesh(info.device.type, (info.world,))
    kw = {"mesh": mesh}
    if ignored_params:
        kw["ignored_params"] = set(ignored_params)
    if mixed_precision:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in transformer_blocks(model) + mtp_heads(model):
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model
