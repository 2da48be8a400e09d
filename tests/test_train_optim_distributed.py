"""Distributed Muon (model.optim): the work split over 2 gloo processes gives the one-process
update to float round-off, and each rank orthogonalises only its share.

Covered in one spawn: 2-D FSDP2-style DTensors (``Shard(0)``) with uneven shards, one with no
rows at all on rank 1 and one with a fused-projection split; a 3-D expert bank sharded on the
expert dim (uneven); a 3-D expert-parallel bank replicated over both ranks (uneven expert
split).  One thread per process, fixed seeds."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch

# (shape, split) per Muon matrix; the last two are expert banks
MATRICES = [((7, 5), None), ((1, 4), None), ((10, 4), (6, 4)), ((5, 9), None), ((4, 4), None)]
FSDP_BANK = ((3, 4, 6), None)   # FSDP2 shards experts 2 | 1
EP_BANK = ((3, 5, 4), None)     # replicated: replica 0 orthogonalises 2 experts, replica 1 one
STEPS = 2


def _data():
    g = torch.Generator().manual_seed(0)
    shapes = [s for s, _ in MATRICES] + [FSDP_BANK[0], EP_BANK[0]]
    params = [torch.randn(*s, generator=g) for s in shapes]
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(STEPS)]
    return params, grads


def _splits():
    return [sp for _, sp in MATRICES] + [FSDP_BANK[1], EP_BANK[1]]


def _count_orthogonalize(monkeypatch_target, calls: list) -> None:
    """Wrap model.optim.orthogonalize: record the shape of every call (what this rank computed)."""
    import model.optim as mo
    real = mo.__dict__.setdefault("_real_orthogonalize", mo.orthogonalize)

    def counting(update, split, steps, dtype):
        calls.append(list(update.shape))
        return real(update, split, steps, dtype)

    monkeypatch_target.orthogonalize = counting


def _run(params, grads, wrap, opt_hook=None):
    from model.optim import MuonAdamW

    ps = [torch.nn.Parameter(wrap(i, p.clone())) for i, p in enumerate(params)]
    opt = MuonAdamW([{"params": ps, "kind": "muon", "splits": _splits()}], lr=0.02,
                    weight_decay=0.1, ns_steps=3, ortho_dtype=torch.float32)
    opt.init_state()
    if opt_hook:
        opt_hook(opt, ps)
    for step in range(STEPS):
        for i, p in enumerate(ps):
            p.grad = wrap(i, grads[step][i].clone())
        opt.step()
    return ps, opt


def _worker(rank: int, world: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist
    import model.optim as mo

    torch.set_num_threads(1)
    params, grads = _data()
    # the one-process reference, before any process group exists (the unchanged code path)
    ref_calls: list = []
    _count_orthogonalize(mo, ref_calls)
    ref, _ = _run(params, grads, lambda i, t: t)

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    n_dtensor = len(MATRICES) + 1   # the 2-D matrices and the FSDP-sharded bank

    def wrap(i, t):
        return distribute_tensor(t, mesh, [Shard(0)]) if i < n_dtensor else t

    calls: list = []
    _count_orthogonalize(mo, calls)
    ps, opt = _run(params, grads, wrap,
                   lambda opt, ps: opt.set_replica_group([ps[-1]], dist.group.WORLD))
    err = []
    for p, r in zip(ps, ref):
        full = p.detach().full_tensor() if isinstance(p.data, DTensor) else p.detach()
        err.append((full - r.detach()).abs().max().item())
    mom = opt.state[ps[0]]["momentum_buffer"]
    res = {"err": err, "calls": calls, "ref_calls": ref_calls,
           "momentum_sharded": isinstance(mom, DTensor) and tuple(mom.placements) == (Shard(0),),
           "local_rows": [p.to_local().shape[0] for p in ps[:n_dtensor]]}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    dist.destroy_process_group()


def _matrices(shapes) -> int:
    return sum(math.prod(s[:-2]) if len(s) > 2 else 1 for s in shapes)


@pytest.mark.timeout(120)
def test_distributed_muon_matches_one_process_and_splits_the_work(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tempfile.mktemp(dir=tmp_path)}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # uneven shards really happened: rank 1 holds no row of the (1, 4) matrix, one expert of 3
    assert res[0]["local_rows"] == [4, 1, 5, 3, 2, 2] and res[1]["local_rows"] == [3, 0, 5, 2, 2, 1]
    for r in res:
        assert max(r["err"]) < 1e-5, r["err"]
        assert r["momentum_sharded"]
    ref_calls = res[0]["ref_calls"]
    per_step = len(ref_calls) // STEPS
    # one process: every matrix every step, one call each
    assert _matrices(ref_calls) == STEPS * (len(MATRICES) + 3 + 3)
    # 2-D matrices: each orthogonalised (whole) on exactly one rank
    two_d = [sorted(map(tuple, (c for c in r["calls"] if len(c) == 2))) for r in res]
    assert sorted(two_d[0] + two_d[1]) == sorted(tuple(c) for c in ref_calls if len(c) == 2)
    assert two_d[0] and two_d[1]           # both ranks own some
    # expert banks: each rank did only its experts; together exactly the reference's
    banks = [[c for c in r["calls"] if len(c) == 3] for r in res]
    assert _matrices(banks[0]) == STEPS * (2 + 2) and _matrices(banks[1]) == STEPS * (1 + 1)
    for r in res:   # a rank's share is strictly less than all of it
        assert _matrices(r["calls"]) < _matrices(ref_calls)
    assert _matrices(res[0]["calls"]) + _matrices(res[1]["calls"]) == _matrices(ref_calls)
    assert per_step == len(MATRICES) + 2


def test_owner_assignment_is_greedy_and_deterministic():
    from model.optim import assign_owners, polar_express_flops

    assert assign_owners([5.0, 1.0, 4.0, 3.0], 2) == [0, 0, 1, 1]     # 5+1 | 4+3
    assert assign_owners([1.0, 1.0, 1.0], 4) == [0, 1, 2]
    assert assign_owners([], 3) == []
    # tall and wide cost the same; a split costs its parts
    assert polar_express_flops((8, 4), None, 1) == polar_express_flops((4, 8), None, 1)
    assert polar_express_flops((6, 4), (2, 4), 2) == (polar_express_flops((2, 4), None, 2)
                                                       + polar_express_flops((4, 4), None, 2))
    assert polar_express_flops((3, 4, 4), None, 1) == 3 * polar_express_flops((4, 4), None, 1)
