"""The parallel layout of a run and its one ``DeviceMesh``.

``world = pp × dp × cp`` (× tp, dry run only).  Expert parallelism is carved out of the
data-parallel dimension, as Megatron-core and torchtitan do: the ``dp`` ranks of a pipeline
stage form ``dp / ep`` *expert-data-parallel* replicas of ``ep`` ranks each; within one EP group
every rank trains on its own data and holds ``n_experts / ep`` of every MoE layer's experts.

Mesh dimensions (outermost first): ``("pp", "edp", "ep", "cp")``.  Derived (flattened) views:

* ``dp``      = (edp, ep)      — the ranks that read different sequences (the loader's world);
* ``dense``   = (edp, ep, cp)  — the FSDP2 mesh of every non-expert parameter (CP ranks see
  different tokens of the same sequences, so their gradients are summed too);
* ``replica`` = (edp, cp)      — ranks holding the *same* experts: expert gradients are summed
  over it.

Everything here is plain arithmetic until :func:`build_mesh`, so a bad layout fails before any
process group or parameter exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


class LayoutError(ValueError):
    """A parallel layout that cannot work for this world size / model / curriculum."""


@dataclass(frozen=True)
class ParallelLayout:
    dp: int = 1   # data parallel, EP included (ep divides dp)
    ep: int = 1   # expert parallel, inside dp
    pp: int = 1   # pipeline stages
    cp: int = 1   # context parallel (sequence split)
    tp: int = 1   # tensor parallel: dry-run arithmetic only

    @property
    def world(self) -> int:
        return self.pp * self.dp * self.cp * self.tp

    @property
    def edp(self) -> int:
        """Expert-data-parallel degree: replicas of each expert shard."""
        return self.dp // self.ep

    def describe(self) -> str:
        tp = f" x TP{self.tp}" if self.tp > 1 else ""
        return (f"PP{self.pp} x DP{self.dp} x CP{self.cp}{tp} (EP{self.ep} inside DP, "
                f"expert-DP {self.edp})")


def resolve_layout(world: int, dp: int | None = None, ep: int | None = None, pp: int | None = None,
                   cp: int | None = None, tp: int | None = None) -> ParallelLayout:
    """Fill the unspecified ``dp`` as ``world / (pp·cp·tp)``; check the product."""
    pp, cp, ep, tp = pp or 1, cp or 1, ep or 1, tp or 1
    for name, v in (("pp", pp), ("cp", cp), ("ep", ep), ("tp", tp), ("dp", dp or 1)):
        if v < 1:
            raise LayoutError(f"--{name} {v}: must be ≥ 1")
    if not dp:
        if world % (pp * cp * tp):
            raise LayoutError(f"world size {world} is not divisible by pp·cp·tp = {pp}·{cp}·{tp} = "
                              f"{pp * cp * tp}")
        dp = world // (pp * cp * tp)
    lay = ParallelLayout(dp=dp, ep=ep, pp=pp, cp=cp, tp=tp)
    if lay.world != world:
        raise LayoutError(f"--pp {pp} x --dp {dp} x --cp {cp}" + (f" x --tp {tp}" if tp > 1 else "")
                          + f" = {lay.world} ranks, but the world size is {world}")
    if dp % ep:
        raise LayoutError(f"--ep {ep} must divide --dp {dp}: expert parallelism is carved out of "
                          f"the data-parallel ranks")
    return lay


def validate_layout(lay: ParallelLayout, cfg, seq_lens: Iterable[int] = ()) -> None:
    """Model / curriculum constraints of a layout (no memory, no process group)."""
    if cfg.n_experts and cfg.n_experts % lay.ep:
        raise LayoutError(f"--ep {lay.ep}: model {cfg.name!r} has {cfg.n_experts} experts per MoE "
                          f"layer, not divisible by {lay.ep}")
    if lay.ep > 1 and not cfg.n_experts:
        raise LayoutError(f"--ep {lay.ep}: model {cfg.name!r} has no routed experts")
    if lay.pp > cfg.n_layers:
        raise LayoutError(f"--pp {lay.pp}: more pipeline stages than the model's {cfg.n_layers} "
                          f"layers (every stage needs at least one block)")
    for s in sorted(set(seq_lens)):
        if s % lay.cp:
            raise LayoutError(f"--cp {lay.cp}: does not divide the curriculum's seq_len {s}")


def stage_layers(n_layers: int, pp: int) -> list[range]:
    """Backbone blocks per pipeline stage.  The first stage also runs the embedding and the last
    the final norm, LM head and MTP heads, so both get one block fewer when blocks are left
    over (uneven stages are expected)."""
    base, extra = divmod(n_layers, pp)
    sizes = [base] * pp
    # hand the extra blocks to the middle stages first, then the ends
    order = list(range(1, pp - 1)) + [0, pp - 1] if pp > 2 else list(range(pp))
    for i in range(extra):
        sizes[order[i % len(order)]] += 1
    out, start = [], 0
    for n in sizes:
        out.append(range(start, start + n))
        start += n
    return out


@dataclass
class ParallelMesh:
    """The run's ``DeviceMesh`` (None on one process) and this rank's coordinates."""
    layout: ParallelLayout
    mesh: object | None = None        # DeviceMesh ("pp", "edp", "ep", "cp")
    dp_rank: int = 0
    ep_rank: int = 0
    pp_rank: int = 0
    cp_rank: int = 0

    def sub(self, name: str):
        """A (possibly flattened) sub-mesh: pp, edp, ep, cp, dp, dense, replica."""
        if self.mesh is None:
            return None
        return self._subs[name]

    def group(self, name: str):
        m = self.sub(name)
        return None if m is None else m.get_group()


def build_mesh(lay: ParallelLayout, device_type: str, rank: int = 0) -> ParallelMesh:
    """One ``init_device_mesh`` for the whole run (collective: every rank calls it)."""
    if lay.tp != 1:
        raise LayoutError("--tp: tensor parallelism is dry-run arithmetic only")
    pm = ParallelMesh(lay)
    if lay.world == 1:
        return pm
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device_type, (lay.pp, lay.edp, lay.ep, lay.cp),
                            mesh_dim_names=("pp", "edp", "ep", "cp"))
    subs = {n: mesh[n] for n in ("pp", "edp", "ep", "cp")}
    subs["dp"] = mesh["edp", "ep"]._flatten("dp")
    subs["dense"] = mesh["edp", "ep", "cp"]._flatten("dense")
    subs["replica"] = mesh["edp", "cp"]._flatten("replica")
    pm.mesh = mesh
    pm._subs = subs
    pm.pp_rank = subs["pp"].get_local_rank()
    pm.ep_rank = subs["ep"].get_local_rank()
    pm.cp_rank = subs["cp"].get_local_rank()
    pm.dp_rank = subs["dp"].get_local_rank()
    return pm
