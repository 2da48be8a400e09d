"""Schedule arithmetic (hypothesis): batch ramps, exact phase steps, LR shapes, meta mask."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curricula import load_curriculum
from curricula.schedule import (
    batch_at_step,
    batch_segments,
    bias_update_rate_at,
    global_batch_at,
    lr_at,
    meta_loss_masked,
    phase_steps,
    tokens_at_step,
)
from curricula.schema import Phase, Schedule


def _phase(tokens, seq_len, batch, lr=None, **sched) -> Phase:
    return Phase(
        name="p",
        tokens=tokens,
        seq_len=seq_len,
        mixture={"web": 1.0},
        schedule=Schedule(global_batch=batch, lr=lr or {"shape": "constant", "peak": 1e-3}, **sched),
    )


ramps = st.lists(
    st.tuples(st.integers(1, 5000), st.integers(1, 64)), min_size=0, max_size=4
).map(lambda xs: [{"at": 0, "batch": 8}] + [
    {"at": sum(a for a, _ in xs[: i + 1]), "batch": b} for i, (_, b) in enumerate(xs)
])


@settings(max_examples=150, deadline=None)
@given(ramps, st.integers(0, 200_000), st.sampled_from([16, 64, 128]))
def test_phase_steps_walk_the_ramp_exactly(steps, tokens, seq_len):
    phase = _phase(tokens, seq_len, {"steps": steps})
    segs = batch_segments(phase)
    n = phase_steps(phase)
    assert n == sum(s.n_steps for s in segs)
    # segments are contiguous, and together cover the budget with less than one step to spare
    pos, step = 0, 0
    for s in segs:
        assert s.first_step == step and s.tokens_start == pos and s.n_steps > 0
        assert s.batch == global_batch_at(phase.schedule, pos)
        pos += s.n_steps * s.batch * seq_len
        step += s.n_steps
    assert pos >= tokens
    if segs:
        assert pos - segs[-1].batch * seq_len < tokens
    # step-by-step simulation agrees
    sim_pos, sim_steps = 0, 0
    while sim_pos < tokens:
        sim_pos += global_batch_at(phase.schedule, sim_pos) * seq_len
        sim_steps += 1
    assert sim_steps == n
    for k in range(0, n, max(1, n // 7)):
        assert batch_at_step(phase, k) == global_batch_at(phase.schedule, tokens_at_step(phase, k))


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=5, unique=True).map(sorted), st.integers(0, 2 * 10**6))
def test_global_batch_is_monotone_for_an_increasing_ramp(ats, probe):
    steps = [{"at": 0, "batch": 1}] + [{"at": a, "batch": 2 + i} for i, a in enumerate(ats)]
    sched = Schedule(global_batch={"steps": steps}, lr={"shape": "constant", "peak": 1.0})
    assert global_batch_at(sched, probe) <= global_batch_at(sched, probe + 1)
    assert global_batch_at(sched, probe) == 1 + sum(1 for a in ats if a <= probe)


lr_shapes = st.sampled_from(["warmup_cosine", "warmup_constant", "cosine", "linear_decay", "constant"])


@settings(max_examples=200, deadline=None)
@given(lr_shapes, st.integers(1, 3000), st.integers(0, 400), st.floats(1e-6, 1e-2), st.floats(0, 1))
def test_lr_shapes_have_monotone_pieces(shape, total, warmup, peak, end_frac):
    end = peak * end_frac
    lr = {"shape": shape, "peak": peak, "end": end, "start": peak if shape in ("cosine", "linear_decay") else 0.0}
    if shape in ("warmup_cosine", "warmup_constant"):
        lr["warmup"] = warmup
    sched = Schedule(global_batch=1, lr=lr)
    vals = [lr_at(sched, s, total) for s in range(total)]
    assert all(v >= 0 and math.isfinite(v) for v in vals)
    w = min(warmup, total) if shape.startswith("warmup") else 0
    rise, fall = vals[:w], vals[w:]
    assert all(a <= b + 1e-15 for a, b in zip(rise, rise[1:]))
    if rise:
        assert rise[-1] == pytest.approx(peak)
    if shape in ("warmup_constant", "constant"):
        assert all(v == pytest.approx(peak) for v in fall)
    else:
        assert all(a >= b - 1e-15 for a, b in zip(fall, fall[1:]))
        if len(fall) > 1:
            assert fall[-1] == pytest.approx(end, abs=1e-15)


def test_full_yaml_lr_matches_the_report():
    cur = load_curriculum("full")
    s1 = cur.phase("stage1")
    n = phase_steps(s1)
    assert lr_at(s1.schedule, 1999, n) == pytest.approx(2.5e-4)
    assert lr_at(s1.schedule, 999, n) == pytest.approx(1.25e-4)
    assert lr_at(s1.schedule, n - 1, n) == pytest.approx(5e-5)
    an = cur.phase("anneal")
    assert lr_at(an.schedule, 0, phase_steps(an)) == pytest.approx(5e-5)
    assert lr_at(an.schedule, phase_steps(an) - 1, phase_steps(an)) == pytest.approx(2e-5)
    m1, m2 = cur.phase("mid1"), cur.phase("mid2")
    total_mid = phase_steps(m1) + phase_steps(m2)
    assert m1.schedule.lr.warmup == math.ceil(0.03 * total_mid)  # "first 3% of iterations"
    assert lr_at(m1.schedule, phase_steps(m1) - 1, phase_steps(m1)) == pytest.approx(2e-5)
    assert lr_at(m2.schedule, phase_steps(m2) - 1, phase_steps(m2)) == pytest.approx(7.3e-6)
    # batch ramp of stage 1: 4096 → 16384 by 400B tokens, 67M tokens/step afterwards
    assert global_batch_at(s1.schedule, 0) == 4096
    assert global_batch_at(s1.schedule, 399 * 10**9) == 12288
    assert global_batch_at(s1.schedule, 400 * 10**9) == 16384
    assert cur.phase("anneal_long").schedule.global_batch * 32768 == 16384 * 4096
    an_rate = [bias_update_rate_at(an.schedule, k, phase_steps(an)) for k in (0, phase_steps(an) - 1)]
    assert an_rate == [pytest.approx(0.001), pytest.approx(0.0)]


def test_meta_loss_mask_switches_on_after_3_8T():
    cur = load_curriculum("full")
    s1 = cur.phase("stage1").schedule
    assert not meta_loss_masked(s1, 3_799_999_999_999)
    assert meta_loss_masked(s1, 3_800_000_000_000)
    assert meta_loss_masked(cur.phase("mid2").schedule, cur.phase_start_tokens("mid2"))
    assert meta_loss_masked(Schedule(global_batch=1, lr={"shape": "constant", "peak": 1}, meta_loss_mask=True), 0)
    assert cur.phase_start_tokens("mid1") == 17_600 * 10**9
