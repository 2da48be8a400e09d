"""``stepcrawl stats PATH``: the curate funnel (documents and characters kept after each step,
drops by reason, languages, quality tiers), optionally as a PNG; a crawl folder (one holding
``frontier.sqlite``) is summarised by the crawler's own report instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepcrawl.document import TIERS
from stepcrawl.errors import is_input_error
from stepcrawl.io import read_json
from stepcrawl.manifest import MANIFEST_NAME


# the order ``stepcrawl stats`` prints the per-stage times in (manifest extra.stage_times_s)
STAGE_ORDER = ("read", "extract", "langid", "signals", "classifier", "tier", "write", "dedup", "decontam", "cluster", "publish")


def read_curate_manifest(path: str | Path) -> dict[str, Any]:
    """The ``_manifest.json`` of a curate output (PATH itself, PATH/web, or any PATH/<source>/),
    parsed: the first with stage "curate", else the first one found."""
    p = Path(path)
    candidates = [p / MANIFEST_NAME, p / "web" / MANIFEST_NAME] + sorted(p.glob(f"*/{MANIFEST_NAME}"))
    first = None
    for c in candidates:
        if c.exists():
            m = read_json(c)
            if m.get("stage") == "curate":
                return m
            first = m if first is None else first
    if first is not None:
        return first
    raise FileNotFoundError(f"{p}: no _manifest.json here or in a source folder (run `stepcrawl curate ... --out {p}` first)")


def load_stats(path: str | Path) -> dict[str, Any]:
    m = read_curate_manifest(path)
    extra = m.get("extra", {})
    funnel = extra.get("funnel") or [{"step": m.get("stage", "stage"), **{k: m.get(k) for k in ("docs_in", "docs_out", "chars_in", "chars_out", "drops")}}]
    return {"stage": m.get("stage"), "docs_in": m.get("docs_in", 0), "docs_out": m.get("docs_out", 0), "chars_in": m.get("chars_in", 0),
            "chars_out": m.get("chars_out", 0), "funnel": funnel, "drops": m.get("drops", {}), "langs": extra.get("langs", {}),
            "tiers": extra.get("tiers", {}), "errors": extra.get("errors", []), "stage_times_s": extra.get("stage_times_s", {}),
            # documents per output source (web / math / books: the routing of curate)
            "outputs": extra.get("outputs", {})}


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:5.1f}%" if b else "    -"


def format_stats(s: dict[str, Any]) -> str:
    lines = [f"funnel ({s['docs_in']} input records → {s['docs_out']} documents kept)", "",
             f"{'step':<10} {'docs in':>9} {'docs out':>9} {'kept':>7} {'chars out':>12}   drops"]
    for f in s["funnel"]:
        drops = ", ".join(f"{r}={n}" for r, n in sorted((f.get("drops") or {}).items(), key=lambda kv: -kv[1]))
        lines.append(f"{f['step']:<10} {f.get('docs_in') or 0:>9} {f.get('docs_out') or 0:>9} {_pct(f.get('docs_out') or 0, f.get('docs_in') or 0):>7} "
                     f"{f.get('chars_out') or 0:>12}   {drops}")
    lines += ["", "drops by reason:"]
    for r, n in sorted(s["drops"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {r:<32} {n:>8}  {_pct(n, s['docs_in'])}")
    if s.get("outputs"):
        lines += ["", "sources (kept, routed by curate):"]
        for src, o in sorted(s["outputs"].items()):
            tiers = ", ".join(f"{t}={n}" for t, n in o.get("tiers", {}).items())
            lines.append(f"  {src:<8} {o.get('docs', 0):>8} docs {o.get('chars', 0):>12} chars   {tiers}")
    lines += ["", "languages (kept):"]
    for lang, n in sorted(s["langs"].items(), key=lambda kv: -kv[1])[:20]:
        lines.append(f"  {lang:<8} {n:>8}")
    lines += ["", "quality tiers (kept):"]
    for t in TIERS:
        n = s["tiers"].get(t, 0)
        lines.append(f"  {t:<12} {n:>8}  {'#' * min(50, round(50 * n / max(1, s['docs_out'])))}")
    times = s.get("stage_times_s") or {}
    if times:
        total_s = sum(times.values()) or 1.0
        n_in = max(1, s["docs_in"])
        lines += ["", f"time per stage (wall s summed over work units; {total_s:.2f} s in all):",
                  f"  {'stage':<12} {'seconds':>9} {'share':>7} {'ms/record':>10}"]
        order = [k for k in STAGE_ORDER if k in times] + sorted(k for k in times if k not in STAGE_ORDER)
        for k in order:
            lines.append(f"  {k:<12} {times[k]:>9.2f} {_pct(times[k], total_s):>7} {1000 * times[k] / n_in:>10.2f}")
    bad = {r: n for r, n in s["drops"].items() if is_input_error(r)}
    if bad or s["errors"]:
        total = max(sum(bad.values()), len(s["errors"]))
        lines += ["", f"dropped input (malformed or unreadable; exit code 1): {total}"]
        lines += [f"  {r:<32} {n:>8}" for r, n in sorted(bad.items(), key=lambda kv: -kv[1])]
        lines += [f"  {e.get('error') if isinstance(e, dict) else e}" for e in s["errors"][:20]]
        if len(s["errors"]) > 20:
            lines.append(f"  … {len(s['errors']) - 20} more in the manifest (extra.errors)")
    return "\n".join(lines)


def plot_stats(s: dict[str, Any], png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stepcrawl.io import atomic_path

    outputs = s.get("outputs") or {}
    fig, axes = plt.subplots(1, 4 if outputs else 3, figsize=(20 if outputs else 15, 4.5))
    steps = ["input"] + [f["step"] for f in s["funnel"]]
    docs = [s["funnel"][0].get("docs_in") or 0 if s["funnel"] else 0] + [f.get("docs_out") or 0 for f in s["funnel"]]
    axes[0].bar(steps, docs, color="#4c72b0")
    axes[0].set_title("documents kept after each step")
    for i, v in enumerate(docs):
        axes[0].text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    drops = sorted(s["drops"].items(), key=lambda kv: kv[1])[-12:]
    axes[1].barh([r for r, _ in drops], [n for _, n in drops], color="#c44e52")
    axes[1].set_title("drops by reason")
    axes[1].tick_params(axis="y", labelsize=7)
    axes[2].bar(list(TIERS), [s["tiers"].get(t, 0) for t in TIERS], color="#55a868")
    axes[2].set_title("quality tiers (kept)")
    axes[2].tick_params(axis="x", labelrotation=30, labelsize=8)
    if outputs:
        names = sorted(outputs)
        axes[3].bar(names, [outputs[n].get("docs", 0) for n in names], color="#8172b2")
        axes[3].set_title("documents kept per source")
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png
