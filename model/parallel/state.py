"""Checkpoint adapter: DCP sees every expert bank as one global ``[E, out, in]`` tensor.

Under expert parallelism a rank's expert parameters (and their Muon momentum) are plain local
tensors ``[E/ep, ...]``.  Saved as they are, DCP would store ``ep`` different tensors under one
name and a run could only resume under the same ``ep``.  Wrapping them, for the save and the
load, as ``DTensor.from_local(t, ep_mesh, [Shard(0)])`` (a view: no copy) makes DCP store and
read the global tensor chunk by chunk, so a checkpoint written under dp2×ep2 loads under dp4,
ep1 or one process, and the other way round.  FSDP2's dense parameters are DTensors already.
"""

from __future__ import annotations

from model.parallel.expert import EXPERT_PARAM


class ExpertStateAdapter:
    def __init__(self, ep_mesh, local_experts: int) -> None:
        self.mesh, self.local = ep_mesh, local_experts

    def _wrap(self, key: str, v):
        from torch.distributed.tensor import DTensor, Shard
        import torch

        if (isinstance(v, torch.Tensor) and not isinstance(v, DTensor) and v.ndim >= 1
                and v.shape[0] == self.local and EXPERT_PARAM.search(key)):
            d = DTensor.from_local(v, self.mesh, [Shard(0)], run_check=False)
            d._ep_wrapped = True   # only what is wrapped here is unwrapped after the load
            return d
        return v

    @staticmethod
    def _unwrap(v):
        from torch.distributed.tensor import DTensor
        return v.to_local() if isinstance(v, DTensor) and getattr(v, "_ep_wrapped", False) else v

    def to_global(self, model_sd: dict, optim_sd: dict) -> tuple[dict, dict]:
        model_sd = {k: self._wrap(k, v) for k, v in model_sd.items()}
        state = optim_sd.get("state", {})
        optim_sd = dict(optim_sd, state={k: ({n: self._wrap(k, t) for n, t in s.items()}
                                             if isinstance(s, dict) else s) for k, s in state.items()})
        return model_sd, optim_sd

    def to_local(self, model_sd: dict, optim_sd: dict) -> tuple[dict, dict]:
        model_sd = {k: self._unwrap(v) for k, v in model_sd.items()}
        state = optim_sd.get("state", {})
        optim_sd = dict(optim_sd, state={k: ({n: self._unwrap(t) for n, t in s.items()}
                                             if isinstance(s, dict) else s) for k, s in state.items()})
        return model_sd, optim_sd
