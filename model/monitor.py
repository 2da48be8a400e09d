"""Training monitoring as the report recommends (PAPER §4.1.2-4.1.3).

Per step: loss (and its parts), loss-spike detection, gradient norm, learning rate, tokens,
phase, seq_len, batch, throughput; from ``model.routing_stats()``: per-expert load, dead experts,
and per layer the max/median and min/median expert activation norm ratios (router dispatch
statistics alone miss expert collapse; a min/median ratio falling towards 0 marks dying experts,
a max/median ratio growing marks blow-ups). Written to

* ``RUN_DIR/metrics.jsonl``: one JSON object per step (always ``step`` and ``loss``),
* TensorBoard event files under ``RUN_DIR/tensorboard`` (``SummaryWriter``),
* a tqdm progress bar with loss and tokens/s (rank 0 only).

Spike rule: with an exponential moving mean/variance of the loss (``alpha``), step ``t`` is a
spike when ``loss > mean + k * std`` after ``warmup`` steps. Spikes do not update the statistics
(so one spike cannot hide the next), and each is logged with a warning and in the JSONL.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stepcrawl.io import atomic_open

log = logging.getLogger("train")


@dataclass
class SpikeDetector:
    alpha: float = 0.05
    k: float = 4.0
    warmup: int = 20
    min_std: float = 0.02
    mean: float | None = None
    var: float = 0.0
    n: int = 0
    n_spikes: int = 0

    def update(self, loss: float) -> bool:
        """Feed one loss; True if it is a spike."""
        if not math.isfinite(loss):
            self.n_spikes += 1
            return True
        if self.mean is None:
            self.mean, self.n = loss, 1
            return False
        std = max(math.sqrt(self.var), self.min_std)
        spike = self.n >= self.warmup and loss > self.mean + self.k * std
        if spike:
            self.n_spikes += 1
            return True
        d = loss - self.mean
        self.mean += self.alpha * d
        self.var = (1 - self.alpha) * (self.var + self.alpha * d * d)
        self.n += 1
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, st: dict) -> None:
        for k, v in st.items():
            setattr(self, k, v)


def _to_list(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().tolist()
    return x


def expert_health(stats: dict) -> dict[str, float]:
    """Scalar health metrics from ``Step35Model.routing_stats()``: ``{"layers": {idx: {...}},
    **totals}``, per layer ``load`` (tokens or fraction per expert), ``act_norm`` (mean output
    norm per expert) and the layer's own scalar statistics."""
    out: dict[str, float] = {}
    layers = {str(k): v for k, v in (stats.get("layers") or {}).items()}
    dead_total = 0
    for name, d in layers.items():
        load = d.get("load")
        if load is not None:
            load = torch.as_tensor(_to_list(load), dtype=torch.float64)
            if load.numel():
                frac = load / load.sum().clamp_min(1e-12)
                dead = int((load == 0).sum())
                dead_total += dead
                out[f"experts/layer{name}/dead"] = dead
                out[f"experts/layer{name}/load_max_over_mean"] = float(frac.max() * frac.numel())
                out[f"experts/layer{name}/load_min_over_mean"] = float(frac.min() * frac.numel())
        for key, v in d.items():  # scalar per-layer stats the model computed itself
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(f"experts/layer{name}/{key}", float(v))
        norms = d.get("act_norm")
        if norms is not None:
            norms = torch.as_tensor(_to_list(norms), dtype=torch.float64).flatten()
            norms = norms[torch.isfinite(norms)]
            if norms.numel():
                med = float(norms.median())
                if med > 0:
                    out[f"experts/layer{name}/act_max_over_median"] = float(norms.max()) / med
                    out[f"experts/layer{name}/act_min_over_median"] = float(norms.min()) / med
    if layers:
        out["experts/dead_total"] = dead_total
    for k, v in stats.items():  # scalar extras the model reports (e.g. ep loss, bias norms)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"routing/{k}"] = float(v)
        elif isinstance(v, torch.Tensor) and v.numel() == 1:
            out[f"routing/{k}"] = float(v)
    return out


def expert_loads(stats: dict) -> dict[str, list[float]]:
    """Per-expert load fraction per MoE layer (``experts/layerN/load``), for the JSONL and for
    TensorBoard histograms."""
    out = {}
    for name, d in (stats.get("layers") or {}).items():
        load = d.get("load")
        if load is not None:
            vals = [float(x) for x in _to_list(load)]
            total = sum(vals) or 1.0
            out[f"experts/layer{name}/load"] = [round(v / total, 6) for v in vals]
    return out


@dataclass
class Monitor:
    run_dir: Path
    enabled: bool = True                 # rank 0 only writes
    total_steps: int | None = None
    tensorboard: bool = True
    progress: bool = True
    spikes: SpikeDetector = field(default_factory=SpikeDetector)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self._fh = None
        self._tb = None
        self._bar = None
        self._t_last = time.perf_counter()
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if self.progress:
            from tqdm import tqdm
            self._bar = tqdm(total=self.total_steps, unit="step", dynamic_ncols=True)

    def start(self, step: int) -> None:
        """Resuming at ``step`` (steps done): drop JSONL lines of later steps (an abandoned future)."""
        self._t_last = time.perf_counter()
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()
        if not self.enabled:
            return
        path = self.run_dir / "metrics.jsonl"
        self._fh.close()
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 1 << 62) <= step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        with atomic_open(path, "w", encoding="utf-8") as fh:  # a crash here keeps the old file
            fh.write("".join(k + "\n" for k in kept))
        self._fh = open(path, "a", encoding="utf-8")

    def log(self, record: dict, routing: dict | None = None) -> dict:
        """Add derived fields (spike, tokens/s, expert health), write everywhere, return it."""
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-9)
        self._t_last = now
        rec = dict(record)
        rec["spike"] = self.spikes.update(float(rec["loss"]))
        rec["tokens_per_s"] = rec.get("step_tokens", 0) / dt
        rec["step_time_s"] = dt
        loads: dict[str, list[float]] = {}
        if routing:
            rec.update(expert_health(routing))
            loads = expert_loads(routing)
            rec.update(loads)
        if rec["spike"]:
            log.warning("loss spike at step %d: %.4f (EMA %.4f)", rec["step"], rec["loss"],
                        self.spikes.mean or float("nan"))
        if not self.enabled:
            return rec
        self._fh.write(json.dumps(rec, sort_keys=True, default=float) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k if "/" in k else f"train/{k}", v, rec["step"])
            for k, v in loads.items():
                if v:
                    self._tb.add_histogram(k, torch.tensor(v), rec["step"])
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{rec['loss']:.4f}", phase=rec.get("phase", ""),
                                  tok_s=f"{rec['tokens_per_s']:.0f}", refresh=False)
        return rec

    def close(self) -> None:
        if self._fh:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
