"""trainer_bridge: batch rules, mix validation, deterministic/resumable/DP-sharded loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenizer.indexed import IndexedDatasetWriter
from tokenizer.masks import LOSS, META, PAD
from trainer_bridge.batch import IGNORE, make_batch, segment_ids_and_positions
from trainer_bridge.loader import CurriculumLoader, PhasePlan, walk_phase_steps
from trainer_bridge.mix import MixError, discover_mixes, open_mix
from trainer_bridge.sampler import EpochOrder, micro_batching, rank_slice
from trainer_bridge.synthetic import SyntheticPhase, write_synthetic_mix


@pytest.fixture(scope="module")
def mix_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return write_synthetic_mix(root, [SyntheticPhase("p0", 32, 96), SyntheticPhase("p1", 64, 40)],
                               vocab_size=300, seed=3)


# ------------------------------------------------------------------------------------------
# batch construction
# ------------------------------------------------------------------------------------------
def test_labels_stay_inside_segments_and_respect_flags():
    #            doc A (meta, meta, body, body, eos) | doc B (body, body) | pad pad pad
    tokens = np.array([[5, 6, 10, 11, 2, 20, 21, 0, 0, 0]])
    flags = np.array([[LOSS | META, LOSS | META, LOSS, 0, LOSS, LOSS, LOSS, PAD, PAD, PAD]], dtype=np.uint8)
    segs = [np.array([5, 2, 3])]
    b = make_batch(tokens, flags, segs, mask_meta=False)
    labels = b.labels[0].tolist()
    # position 0 predicts 6 (META, counted while the mask is off); position 2 predicts 11 which
    # has no LOSS flag (a prompt token): ignored; 4 (EOS of A) must not predict B's first token
    assert labels == [6, 10, IGNORE, 2, IGNORE, 21, IGNORE, IGNORE, IGNORE, IGNORE]
    assert b.loss_mask[0].tolist() == [x != IGNORE for x in labels]
    assert b.document_ids[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert b.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 1, 2]

    masked = make_batch(tokens, flags, segs, mask_meta=True)
    assert masked.labels[0].tolist()[0] == IGNORE       # target 6 is META: masked now
    assert masked.labels[0].tolist()[1] == 10           # body target still counts
    assert masked.n_loss_tokens == b.n_loss_tokens - 1


def test_pad_is_never_a_target_even_if_flagged_loss():
    tokens = np.array([[7, 8, 9, 0]])
    flags = np.array([[LOSS, LOSS, LOSS, PAD | LOSS]], dtype=np.uint8)
    b = make_batch(tokens, flags, [np.array([4])], mask_meta=False)
    assert b.labels[0].tolist() == [8, 9, IGNORE, IGNORE]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=8))
def test_positions_restart_per_segment(segs):
    t = sum(segs)
    doc, pos = segment_ids_and_positions([np.array(segs)], t)
    starts = np.cumsum([0] + segs[:-1])
    for i, (s, n) in enumerate(zip(starts, segs)):
        assert (doc[0, s:s + n] == i).all()
        assert pos[0, s:s + n].tolist() == list(range(n))


def test_batch_rules_on_a_real_mix(mix_dir):
    mix = open_mix(mix_dir)
    ph = mix.phases[0]
    ids = np.arange(ph.n_sequences)
    tok = ph.tokens.data.reshape(-1, ph.seq_len)[ids]
    flg = ph.mask.data.reshape(-1, ph.seq_len)[ids]
    segs = [ph.segments[i] for i in ids]
    for mask_meta in (False, True):
        b = make_batch(tok, flg, segs, mask_meta)
        tgt_flags = torch.from_numpy(flg[:, 1:].astype(np.int64))
        counted = b.loss_mask[:, :-1]
        assert not b.loss_mask[:, -1].any()                        # last position never
        assert not (counted & ((tgt_flags & PAD) > 0)).any()        # PAD never
        assert not (counted & ((tgt_flags & LOSS) == 0)).any()      # only LOSS targets
        meta_counted = (counted & ((tgt_flags & META) > 0)).any()
        assert meta_counted == (not mask_meta)                      # META follows the schedule
        same = b.document_ids[:, 1:] == b.document_ids[:, :-1]
        assert not (counted & ~same).any()                          # never across documents
        assert (b.labels[:, :-1][counted] == b.input_ids[:, 1:][counted]).all()


# ------------------------------------------------------------------------------------------
# mix validation: clear errors naming the file
# ------------------------------------------------------------------------------------------
def test_missing_mix_and_missing_shards(tmp_path, mix_dir):
    with pytest.raises(MixError, match="mix folder not found"):
        open_mix(tmp_path / "nope")
    bad = tmp_path / "bad"
    write_synthetic_mix(bad, [SyntheticPhase("p0", 32, 8)], vocab_size=100)
    (bad / "p0" / "segments.idx").unlink()
    with pytest.raises(MixError, match=r"segments\.idx"):
        open_mix(bad)
    with pytest.raises(MixError, match="not a build-mix manifest"):
        discover_mixes([tmp_path / "bad" / "p0"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixError, match="neither a mix"):
        discover_mixes([tmp_path / "empty"])


def test_bad_segments_and_counts_are_reported(tmp_path):
    root = write_synthetic_mix(tmp_path / "m", [SyntheticPhase("p0", 32, 8)], vocab_size=100)
    with IndexedDatasetWriter(root / "p0" / "segments", np.int32) as w:
        for i in range(8):
            w.add([16, 15] if i == 5 else [32])
    with pytest.raises(MixError, match="sequence 5 has segments"):
        open_mix(root)
    man = json.loads((root / "manifest.json").read_text())
    man["phases"][0]["n_sequences"] = 9
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MixError, match="n_sequences=9"):
        open_mix(root)


def test_folder_of_mixes_one_per_stage(tmp_path):
    write_synthetic_mix(tmp_path / "all" / "a", [SyntheticPhase("p0", 32, 4)], stage="pre")
    write_synthetic_mix(tmp_path / "all" / "b", [SyntheticPhase("q0", 32, 4)], stage="mid")
    mixes = discover_mixes([tmp_path / "all"])
    assert sorted(m.stage for m in mixes) == ["mid", "pre"]
    with pytest.raises(MixError, match="materialised twice"):
        discover_mixes([tmp_path / "all", tmp_path / "all" / "a"])


# ------------------------------------------------------------------------------------------
# sampling and sharding
# ------------------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**31), world=st.sampled_from([1, 2, 3, 4, 8]),
       per_rank=st.integers(1, 6), steps=st.integers(1, 12))
def test_dp_slices_are_disjoint_and_cover_each_global_batch(n, seed, world, per_rank, steps):
    order = EpochOrder(n, seed, "phase")
    gb = world * per_rank
    for s in range(steps):
        ids = order.take(s * gb, gb)
        parts = [ids[rank_slice(gb, r, world)] for r in range(world)]
        assert sum(len(p) for p in parts) == gb
        assert np.array_equal(np.concatenate(parts), ids)          # cover, in order
        positions = [set(range(r * per_rank, (r + 1) * per_rank)) for r in range(world)]
        assert all(a.isdisjoint(b) for i, a in enumerate(positions) for b in positions[i + 1:])
    # one epoch visits every sequence exactly once, and the order is a pure function of the seed
    assert sorted(order.take(0, n).tolist()) == list(range(n))
    assert np.array_equal(EpochOrder(n, seed, "phase").take(0, 3 * n), order.take(0, 3 * n))


@settings(max_examples=25, deadline=None)
@given(world=st.sampled_from([1, 2, 4]), seed=st.integers(0, 1000), per_rank=st.integers(1, 4))
def test_loader_ranks_partition_the_global_batches(mix_dir, world, seed, per_rank):
    mix = open_mix(mix_dir, validate=False)
    gb = world * per_rank

    def plans():
        return [PhasePlan("p0", mix.phases[0], global_batch=lambda t: gb, budget_sequences=48)]

    single = [s.sequence_ids for s in CurriculumLoader(plans(), seed=seed)]
    per_rank_ids = [[s.sequence_ids for s in CurriculumLoader(plans(), seed=seed, rank=r, world=world)]
                    for r in range(world)]
    assert len(single) == walk_phase_steps(48, lambda t: gb, 32)
    for step, ids in enumerate(single):
        joined = np.concatenate([per_rank_ids[r][step] for r in range(world)])
        assert np.array_equal(joined, ids)
    # the whole budget (48 sequences, an exact epoch when gb divides it) is covered once
    if 48 % gb == 0:
        assert sorted(np.concatenate(single).tolist()) == sorted(set(np.concatenate(single).tolist()))


def test_micro_batching_fits_token_budget():
    assert micro_batching(8, 32, 128) == (4, 2)
    assert micro_batching(8, 64, 128) == (2, 4)
    assert micro_batching(6, 64, 256) == (3, 2)       # largest divisor of 6 that fits 4 seqs
    assert micro_batching(5, 4096, 1024) == (1, 5)    # at least one sequence


# ------------------------------------------------------------------------------------------
# phase switching, ramps, resume
# ------------------------------------------------------------------------------------------
def _ramp_plans(mix):
    return [
        PhasePlan("s/p0", mix.phases[0], global_batch=lambda t: 4 if t < 32 * 16 else 8),
        PhasePlan("s/p1", mix.phases[1], global_batch=lambda t: 4,
                  mask_meta=lambda t: t >= 64 * 8),
    ]


def test_seq_len_batch_ramp_and_meta_switch_across_phases(mix_dir):
    mix = open_mix(mix_dir)
    steps = list(CurriculumLoader(_ramp_plans(mix), seed=1, world=2, micro_batch_tokens=64))
    p0 = [s for s in steps if s.phase == "s/p0"]
    p1 = [s for s in steps if s.phase == "s/p1"]
    # p0: 16 sequences at batch 4 (4 steps), then batch 8 for the remaining 80 (10 steps)
    assert [s.global_batch for s in p0] == [4] * 4 + [8] * 10
    assert {s.seq_len for s in p0} == {32} and {s.seq_len for s in p1} == {64}
    # per rank: 2 or 4 sequences; 64 tokens per micro-batch → 2 seqs of 32, 1 seq of 64
    assert [(s.micro_batch, s.grad_accum) for s in p0[:1] + p0[-1:]] == [(2, 1), (2, 2)]
    assert all((s.micro_batch, s.grad_accum) == (1, 2) for s in p1)
    assert all(b.shape == (s.micro_batch, s.seq_len) for s in steps for b in s.micro_batches)
    assert [s.mask_meta for s in p1] == [False, False] + [True] * 8
    assert steps[-1].tokens_into_run + steps[-1].global_tokens == 96 * 32 + 40 * 64


def test_last_step_of_a_phase_is_partial():
    class FakePhase:
        seq_len, n_sequences = 8, 10
    plan = PhasePlan("x", FakePhase(), global_batch=lambda t: 4)
    assert plan.steps == 3
    assert [plan.batch_at(c) for c in (0, 4, 8)] == [4, 4, 2]
    assert plan.batch_at(8, world=4) == 4   # rounded up to the world size


def test_state_dict_resumes_exactly(mix_dir):
    mix = open_mix(mix_dir)
    full = [s for s in CurriculumLoader(_ramp_plans(mix), seed=7, micro_batch_tokens=64)]
    first = CurriculumLoader(_ramp_plans(mix), seed=7, micro_batch_tokens=64)
    head = [first.next() for _ in range(11)]
    state = json.loads(json.dumps(first.state_dict()))      # survives JSON (checkpoint format)
    resumed = CurriculumLoader(_ramp_plans(mix), seed=7, micro_batch_tokens=64)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full):
        assert a.phase == b.phase and a.step_in_phase == b.step_in_phase
        assert np.array_equal(a.sequence_ids, b.sequence_ids)
        for x, y in zip(a.micro_batches, b.micro_batches):
            assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    other_seed = CurriculumLoader(_ramp_plans(mix), seed=8)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_seed_changes_the_order(mix_dir):
    mix = open_mix(mix_dir)
    a = CurriculumLoader(_ramp_plans(mix), seed=1).next().sequence_ids
    b = CurriculumLoader(_ramp_plans(mix), seed=2).next().sequence_ids
    assert not np.array_equal(a, b)
