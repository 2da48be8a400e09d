"""``python -m beam_pipelines.build_mix``: materialise a curriculum stage with Apache Beam.

What is distributed, exactly: the **phases** of the stage. Every check ``stepcrawl
build-mix`` makes before writing (schema, allocation, plan-wide data supply under epoch caps,
one tokenizer, existing outputs with another config) runs first, on the driver, with
``curricula``' own functions; then each phase is one Beam element (``Create`` → ``Reshuffle``
→ ``ParDo(BuildPhase)``) and a worker runs ``curricula.mixer.build_phase`` on it — the local
mixer's allocation, Feistel draw order, stride interleaving and packer, unchanged — so each
``MIX/<phase>/`` is byte-identical to the local command's. The stage manifest
``MIX/manifest.json`` is written once every phase is done.

What is *not* distributed: the inside of a phase. Interleaving is a sequential stride schedule
("take from the entry furthest behind its target") whose every prefix must track the mixture;
splitting it would change the output. A phase is bounded by its token budget and reads shards
by mmap, so one worker per phase is the natural unit (a full-size phase of hundreds of
billions of tokens should be split into several phases in the curriculum).

Token shards and the curriculum may live on any FileSystem: remote ones are copied to the
worker's disk first (the mixer reads shards by mmap); outputs are written through
FileSystems. Evaluation sets for contamination reports must be files both driver and workers
can read (their path and size are part of the phase config hash, as locally).

Example::

    python -m beam_pipelines.build_mix --curriculum curricula/tiny.yaml --stage mid \\
        --tokens data/tokens --output data/mix/mid --runner DirectRunner
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import io as bio
from beam_pipelines.options import make_options, run_pipeline

log = logging.getLogger(__name__)


def stage_locally(tokens_dir: str, sources: Sequence[str]) -> str:
    """A local TOKENS folder with ``sources`` (itself when local; else a per-process copy)."""
    import os
    import tempfile

    if not bio.is_remote(tokens_dir):
        return tokens_dir
    key = f"{tokens_dir}|{','.join(sorted(sources))}"
    if key in _STAGED:
        return _STAGED[key]
    root = tempfile.mkdtemp(prefix="stepcrawl-tokens-")
    for s in sources:
        os.makedirs(os.path.join(root, s), exist_ok=True)
        for m in FileSystems.match([FileSystems.join(tokens_dir.rstrip("/"), s, "*")])[0].metadata_list:
            bio.download(m.path, os.path.join(root, s, FileSystems.split(m.path)[1]))
    _STAGED[key] = root
    return root


_STAGED: dict[str, str] = {}


def prepare(curriculum: str, stage: str, tokens_dir: str, out_dir: str, scale=None, seed: int = 0, eval_sets=(),
            phases: list[str] | None = None, overwrite: bool = False, ngram: int = 13) -> dict[str, Any]:
    """The driver half of ``curricula.mixer.build_mix``: every check, the phase configs and
    which phases still need building. Returns what the workers need."""
    from curricula.mixer import phase_config, select_phases, sources_needed, verify_source_files
    from curricula.planner import parse_scale, plan, read_source_manifest
    from curricula.schema import CurriculumError, load_curriculum
    from stepcrawl.manifest import config_hash

    cur = load_curriculum(bio.localize(curriculum))
    scale_f = parse_scale(scale)
    todo = select_phases(cur, stage, phases)
    eval_sets = [str(p) for p in eval_sets]
    for p in eval_sets:
        if not FileSystems.exists(p):
            raise CurriculumError(f"--eval-set: no such file {p}")
    needed = sources_needed(cur, todo, scale_f)
    local_tokens = stage_locally(tokens_dir, needed)
    manifests = {s: read_source_manifest(local_tokens, s) for s in needed}
    for m in manifests.values():  # what the manifests promise, before any use (as build-mix does)
        verify_source_files(m)
    plan(cur, local_tokens, scale_f, sources=set(needed)).check()
    shas = {m.tokenizer.get("sha256") for m in manifests.values()}
    if len(shas) > 1:
        raise CurriculumError(f"token sources were made with different tokenizers: { {s: m.tokenizer.get('sha256') for s, m in manifests.items()} }")
    tok_info = next(iter(manifests.values())).tokenizer if manifests else {}
    configs = {p.name: phase_config(cur, p, scale_f, seed, manifests, eval_sets, ngram) for p in todo}
    build, reuse = [], []
    for p in todo:
        mf = FileSystems.join(out_dir.rstrip("/"), p.name, "manifest.json")
        if FileSystems.exists(mf) and not overwrite:
            old = bio.read_json(mf)
            if old.get("config_hash") != config_hash(configs[p.name]):
                raise CurriculumError(f"{FileSystems.join(out_dir, p.name)}: holds a mix built with a different configuration; use another --out or --overwrite")
            reuse.append(p.name)
        else:
            build.append(p.name)
    tokens_abs = tokens_dir if bio.is_remote(tokens_dir) else resolve_local(tokens_dir)
    return {
        "curriculum": curriculum, "stage": stage, "tokens_dir": tokens_dir, "tokens_abs": tokens_abs, "out_dir": out_dir,
        "scale": str(scale_f), "seed": seed, "eval_sets": eval_sets, "ngram": ngram, "needed": needed,
        "configs": configs, "order": [p.name for p in todo], "build": build, "reuse": reuse, "tok_info": tok_info,
        "cur_name": cur.name,
    }


def resolve_local(path: str) -> str:
    """The absolute form the local mixer records for a local TOKENS folder."""
    from pathlib import Path

    return str(Path(path).resolve())


def build_phase_local(cur, job: dict[str, Any], phase, readers, counter) -> dict:
    """``curricula.mixer.build_phase`` into the output (local) or a temp folder that is then
    copied out through FileSystems (remote)."""
    import tempfile
    from pathlib import Path

    from curricula.mixer import build_phase
    from curricula.planner import parse_scale

    remote = bio.is_remote(job["out_dir"])
    with tempfile.TemporaryDirectory(prefix="stepcrawl-mix-") as tmp:
        out = Path(tmp if remote else job["out_dir"])
        m = build_phase(cur, job["stage"], phase, readers, out, parse_scale(job["scale"]), job["seed"], counter,
                        job["configs"][phase.name], progress=False)
        if remote:
            files = sorted(p.name for p in (out / phase.name).iterdir())
            bio.upload_folder(str(out / phase.name), FileSystems.join(job["out_dir"].rstrip("/"), phase.name), files)
    return m


class BuildPhase(beam.DoFn):
    """A phase name → its manifest, built by ``curricula.mixer.build_phase`` on this worker."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def setup(self) -> None:
        # Once per worker, shared by the phases it builds (as the local build_mix shares them):
        # the curriculum, the shard readers and the eval-set n-gram indexes.
        from curricula.contamination import load_eval_sets
        from curricula.mixer import SourceReader
        from curricula.planner import read_source_manifest
        from curricula.schema import load_curriculum

        j = self.job
        self.cur = load_curriculum(bio.localize(j["curriculum"]))
        local_tokens = stage_locally(j["tokens_dir"], j["needed"])
        self.readers = {s: SourceReader(read_source_manifest(local_tokens, s)) for s in j["needed"]}
        self.indexes = load_eval_sets([bio.localize(p) for p in j["eval_sets"]], j["tok_info"], j["ngram"]) if j["eval_sets"] else []

    def process(self, phase_name: str) -> Iterator[dict]:
        from curricula.contamination import ContaminationCounter

        phase = next(p for p in self.cur.stage(self.job["stage"]).phases if p.name == phase_name)
        counter = ContaminationCounter(self.indexes) if self.indexes else None  # fresh per phase, as locally
        yield build_phase_local(self.cur, self.job, phase, self.readers, counter)


class WriteMixManifest(beam.DoFn):
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job

    def process(self, element) -> Iterator[str]:
        from curricula.mixer import mix_manifest  # the local builder, so both manifests agree

        built = [m for m in element[1] if m is not None]
        j = self.job
        by_name = {m["phase"]: m for m in built}
        for name in j["reuse"]:
            by_name[name] = bio.read_json(FileSystems.join(j["out_dir"].rstrip("/"), name, "manifest.json"))
        mix = mix_manifest(j["cur_name"], j["stage"], j["seed"], j["scale"], j["tokens_abs"], j["tok_info"],
                           [by_name[n] for n in j["order"]])
        path = FileSystems.join(j["out_dir"].rstrip("/"), "manifest.json")
        bio.write_json(path, mix)
        yield path


def build_pipeline(p: beam.Pipeline, job: dict[str, Any]):
    built = (
        p
        | "Phases" >> beam.Create(job["build"])
        | "Spread" >> beam.Reshuffle()
        | "BuildPhase" >> beam.ParDo(BuildPhase(job))
    )
    # Gathered by a GroupByKey, not a side input: on the DaskRunner a side input is a nested
    # computation inside a worker task. The None element makes the group exist when every
    # phase is reused (nothing to build).
    once = p | "Once" >> beam.Create([None])
    return (
        (built, once)
        | "AllPhases" >> beam.Flatten()
        | "OneKey" >> beam.Map(lambda m: (None, m))
        | "Gather" >> beam.GroupByKey()
        | "WriteMixManifest" >> beam.ParDo(WriteMixManifest(job))
    )


def run(argv: Sequence[str] | None = None):
    ap = argparse.ArgumentParser(
        prog="python -m beam_pipelines.build_mix",
        description="Materialise a curriculum stage (same output as `stepcrawl build-mix`), one Beam element per phase.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="pipeline options: --curriculum YAML --stage NAME --tokens TOKENS --output MIX (required), --seed N\n"
        "Beam options (--runner, --num_workers, --setup_file, …) are passed through. Example:\n"
        "  python -m beam_pipelines.build_mix --curriculum curricula/tiny.yaml --stage mid \\\n"
        "      --tokens data/tokens --output data/mix/mid --runner DirectRunner\n",
    )
    ap.add_argument("--scale", default=None, help="scale every budget (as `stepcrawl build-mix --scale`)")
    ap.add_argument("--eval_set", "--eval-set", action="append", default=[], help="eval set for contamination reports (repeatable)")
    ap.add_argument("--phase", action="append", default=None, help="only these phases (repeatable)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--ngram", type=int, default=13)
    args, rest = ap.parse_known_args(list(argv) if argv is not None else sys.argv[1:])
    opts, ours = make_options(rest, "curriculum", "stage", "tokens", "output")
    job = prepare(ours.curriculum, ours.stage, ours.tokens, ours.output, scale=args.scale,
                  seed=ours.seed if ours.seed is not None else 0, eval_sets=args.eval_set, phases=args.phase,
                  overwrite=args.overwrite, ngram=args.ngram)
    return run_pipeline(opts, lambda p: build_pipeline(p, job))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
