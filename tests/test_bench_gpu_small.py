"""bench/gpu_small.py (the prepared one-GPU ``small`` benchmark) cannot rot: its whole code path
(model, the trainer's optimizer, bf16 autocast, grouped-matmul experts, timing, FLOP model,
JSON + markdown output) runs here on CPU at tiny size for one timed step; the GPU-only parts
(flex under torch.compile, the peak lookup) are checked as far as a CPU allows."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_small():
    spec = importlib.util.spec_from_file_location("bench_gpu_small", REPO / "bench" / "gpu_small.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help_runs_without_a_gpu(gpu_small, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_small.main(["--help"])
    assert exc.value.code == 0
    assert "--peak-tflops" in capsys.readouterr().out


def test_cpu_smoke_run_writes_json_and_markdown(gpu_small, tmp_path, monkeypatch):
    calls = []
    real = torch._grouped_mm

    def counting(*a, **k):
        calls.append(a[0].dtype)
        return real(*a, **k)

    monkeypatch.setattr(torch, "_grouped_mm", counting)
    rc = gpu_small.main(["--model", "tiny", "--set", "vocab_size=256", "--set", "expert_backend=grouped_mm",
                         "--dtype", "bf16", "--device", "cpu", "--threads", "1", "--seq-len", "64",
                         "--batch", "2", "--doc-len", "32", "--warmup", "1", "--steps", "1",
                         "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "gpu_small.json").read_text())
    assert res["timed_steps"] == 1 and res["seq_len"] == 64 and res["batch"] == 2
    assert res["tokens_per_s"] > 0 and res["step_s"] > 0
    assert res["mfu"] is None and res["peak_tflops"] is None   # CPU: no peak lookup
    assert res["attn_backend"] == "sdpa" and res["expert_backend"] == "grouped_mm"
    assert res["dtype"] == "bf16 autocast"
    assert calls and set(calls) == {torch.bfloat16}             # the experts really ran grouped, in bf16
    assert 0 < res["loss_last"] < 10
    # the FLOP model is the dry run's: 6 · active (+ MTP head) + 3 · attention core
    from model.config import get_config
    from model.parallel.estimate import attention_core_flops
    from model.summary import count_parameters
    cfg = get_config("tiny", vocab_size=256)
    c = count_parameters(cfg)
    assert res["flops_per_token"] == pytest.approx(
        6 * (c["active"] + c["mtp_per_head"]) + 3 * attention_core_flops(cfg, 64, 1))
    md = (tmp_path / "gpu_small.md").read_text().splitlines()
    assert md[0].startswith("| GPU |") and md[2].startswith("| cpu | tiny | 64 × 2 |")


def test_gpu_settings_and_peak_lookup(gpu_small):
    assert gpu_small.backend_overrides(True) == {"attn_backend": "flex", "expert_backend": "grouped_mm"}
    assert gpu_small.backend_overrides(False)["attn_backend"] == "sdpa"
    assert gpu_small.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_small.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert gpu_small.bf16_peak_tflops("NVIDIA H800") == 989.0
    for other in ("NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200 NVL", "NVIDIA A100-SXM4-80GB"):
        with pytest.raises(gpu_small.PeakUnknown, match="pass --peak-tflops"):
            gpu_small.bf16_peak_tflops(other)


def test_the_flex_config_builds_block_masks_on_cpu(gpu_small):
    """What the GPU run compiles: the flex path's BlockMasks (built uncompiled off CUDA) and a
    forward through flex_attention (CPU has no flex backward, so no step here)."""
    from model.config import get_config
    from model.transformer import Step35Model
    cfg = get_config("tiny", vocab_size=256, **gpu_small.backend_overrides(True))
    model = Step35Model(cfg).eval()
    ids = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    docs = (torch.arange(64) // 32)[None]
    with torch.no_grad():
        flex = model(ids, document_ids=docs).logits
        model_sdpa = Step35Model(get_config("tiny", vocab_size=256, attn_backend="sdpa")).eval()
        model_sdpa.load_state_dict(model.state_dict())
        ref = model_sdpa(ids, document_ids=docs).logits
    torch.testing.assert_close(flex, ref, rtol=1e-4, atol=1e-4)
