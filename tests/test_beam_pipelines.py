"""Beam curate pipeline vs the local executor, dedup parity, picklability, FileSystems-only IO.

Real WARC files (warcio) built from the shipped real prose (beam_pipelines.testing), the real
DirectRunner, the real curation/dedup/decontam code on both sides.
"""

from __future__ import annotations

import ast
import json
import pickle
import random
from collections import Counter
from pathlib import Path

import apache_beam as beam
import cloudpickle
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
import pytest

from beam_pipelines import curate as beam_curate
from beam_pipelines.components import ConnectedComponents, _StarReduce
from beam_pipelines.dedup import Dedup, NearDuplicates, ResolveGroups, SignBatch, cluster_roots
from beam_pipelines.io import ReadWarc, ReadWarcFile, WriteDocuments
from beam_pipelines.testing import SampleSpec, sample_pages, write_sample_warcs
from beam_pipelines.transforms import NAMESPACE, ExtractDoFn, StepsDoFn
from stepcrawl.curate import CurateConfig, curate
from stepcrawl.dedup import DedupConfig, run_dedup
from stepcrawl.document import Document
from stepcrawl.extract import ExtractConfig
from stepcrawl.io import read_documents

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def crawl(tmp_path_factory) -> dict:
    """Three sample WARCs, one more cut in the middle (a damaged file), an eval set that
    contaminates one page, and the local executor's result on all of it."""
    root = tmp_path_factory.mktemp("beam_crawl")
    folder = root / "crawl"
    write_sample_warcs(str(folder), SampleSpec(n_files=3))
    damaged = write_sample_warcs(str(root / "extra"), SampleSpec(n_unique=12, n_exact=1, n_near=1, n_url_dups=1, n_spam=1, n_files=1, seed=5))[0]
    data = Path(damaged).read_bytes()
    (folder / "zz-damaged.warc.gz").write_bytes(data[: len(data) * 2 // 3])
    page = next(p for p in sample_pages(SampleSpec()) if b"/page/0007" in p[0].encode())  # a unique real page
    words = page[3].decode().split("<p>")[2].split("</p>")[0].split()
    evalset = root / "evalset.jsonl"
    evalset.write_text(json.dumps({"question": " ".join(words[:30])}) + "\n")
    cfg = CurateConfig(langs=["en"], decontam_sets=[f"trivia={evalset}"])
    local = curate([str(folder)], str(root / "local"), cfg, progress=False)
    return {"root": root, "folder": folder, "evalset": evalset, "cfg": cfg, "local": local.to_dict()}


def _docs(folder: Path) -> dict[str, Document]:
    return {d.id: d for d in read_documents(folder)}


def test_beam_curate_equals_local_executor(crawl):
    out = crawl["root"] / "beam"
    result = beam_curate.run(
        ["--input", str(crawl["folder"]), "--output", str(out), "--langs", "en", "--decontam", f"trivia={crawl['evalset']}",
         "--runner", "DirectRunner", "--cc_max_rounds", "12"]
    )
    local, manifest = crawl["local"], json.loads((out / "web" / "_manifest.json").read_text())

    # the same documents, the same survivors and dup_cluster labels, the same annotations
    b, l = _docs(out / "web"), _docs(crawl["root"] / "local" / "web")
    assert set(b) == set(l) and len(b) >= 30
    for i in b:
        assert (b[i].dup_cluster, b[i].tier, b[i].lang, b[i].text, b[i].warc_offset) == (l[i].dup_cluster, l[i].tier, l[i].lang, l[i].text, l[i].warc_offset)

    # the same accounting: in = out + Σ drops, drops by reason, and the per-step funnel
    for key in ("docs_in", "docs_out", "chars_in", "chars_out", "drops", "drop_chars"):
        assert manifest[key] == local[key], key
    assert manifest["docs_in"] == manifest["docs_out"] + sum(manifest["drops"].values())
    assert manifest["extra"]["funnel"] == local["extra"]["funnel"]
    assert manifest["extra"]["tiers"] == local["extra"]["tiers"] and manifest["extra"]["langs"] == local["extra"]["langs"]
    drops = manifest["drops"]
    for reason in ("dup:url", "dup:exact", "dup:near", "decontam:trivia", "lang:not-allowed", "extract:http-status"):
        assert drops.get(reason, 0) >= 1, reason  # the sample exercises every kind of drop
    # the damaged file: its readable records are in, the error names file and offset
    (err,) = manifest["extra"]["errors"]
    assert err["file"].endswith("zz-damaged.warc.gz") and err["offset"] > 0
    assert [e["offset"] for e in local["extra"]["errors"]] == [err["offset"]]
    assert manifest["stage"] == "curate" and manifest["config_hash"] == local["config_hash"]
    # the per-keeper near-duplicate report, where and as the local executor writes it
    report = Path("_work") / "dedup" / "_near_clusters.parquet"
    rows = pq.read_table(out / report).to_pylist()
    assert rows == pq.read_table(crawl["root"] / "local" / report).to_pylist()
    assert sum(r["n_dropped"] for r in rows) == drops["dup:near"]

    # Beam counters (what the Dataflow UI shows) agree with the manifest
    counters = {(c.key.metric.namespace, c.key.metric.name): c.committed for c in result.metrics().query()["counters"]}
    assert counters[(NAMESPACE, "docs_in")] == manifest["docs_in"]
    assert counters[(NAMESPACE, "docs_out")] == manifest["docs_out"]
    assert {k[1][5:]: v for k, v in counters.items() if k[0] == NAMESPACE and k[1].startswith("drop:")} == drops
    assert counters[(f"{NAMESPACE}.dedup", "drop:dup:near")] == drops["dup:near"]


def test_dedup_transform_equals_local_run_dedup(tmp_path):
    """Dense duplicate structure (URL → exact → near chains, tiers deciding survivors), run in
    the DirectRunner's multi-processing mode."""
    rng = random.Random(3)
    texts = [json.loads(x)["text"] for x in (ROOT / "samples/quality/positive.jsonl").read_text().splitlines()[:90]]
    tiers = ["High", "Medium-High", "Medium", None]
    docs = [Document(id=f"d{i:03d}", text=t, url=f"https://a.test/{i % 70}", tier=rng.choice(tiers)) for i, t in enumerate(texts)]
    for j in range(40):  # near duplicates: one or two words changed
        words = texts[rng.randrange(90)].split(" ")
        for _ in range(rng.randint(1, 2)):
            words[rng.randrange(len(words))] = "zebra"
        docs.append(Document(id=f"n{j:03d}", text=" ".join(words), url=f"https://n.test/{j}", tier=rng.choice(tiers)))
    docs += [Document(id=f"e{j:03d}", text=texts[j].upper() + " !!", tier="High") for j in range(0, 20, 2)]  # exact after normalisation
    docs += [Document(id="empty", text="   ", url="https://a.test/empty")]  # no shingles
    # the same record read twice (one id): with a URL, without one, and with a worse copy
    docs += [docs[5], docs[-2], Document(id="blank", text=" ", tier="High"), Document(id="blank", text=" ", tier="High")]
    docs += [docs[100], docs[100].replace(tier="High")]
    cfg = DedupConfig()
    run_dedup(docs, tmp_path / "local", cfg, keep_rejected=True, progress=False)
    local_kept = {d.id: d.dup_cluster for d in read_documents(tmp_path / "local")}
    local_drop = {d.id: (r, d.dup_cluster) for d, r in (
        (Document.from_record(rec), rec["drop_reason"]) for rec in __import__("pyarrow.parquet", fromlist=["x"]).read_table(tmp_path / "local" / "rejected").to_pylist()
    )}
    # multi_processing: the DoFns really are pickled and run in two SDK worker processes
    opts = PipelineOptions(["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    with beam.Pipeline(runner="DirectRunner", options=opts) as p:
        kept, dropped = p | beam.Create(docs) | Dedup(cfg, max_rounds=10)
        kept | "WK" >> beam.Map(lambda d: (d.id, d.dup_cluster)) | "SK" >> beam.io.WriteToText(str(tmp_path / "kept"), shard_name_template="")
        dropped | "WD" >> beam.Map(lambda rd: (rd[1].id, (rd[0], rd[1].dup_cluster))) | "SD" >> beam.io.WriteToText(str(tmp_path / "drop"), shard_name_template="")
    beam_kept = dict(ast.literal_eval(x) for x in (tmp_path / "kept").read_text().splitlines())
    beam_drop = dict(ast.literal_eval(x) for x in (tmp_path / "drop").read_text().splitlines())
    assert beam_kept == local_kept
    assert beam_drop == local_drop
    assert set(Counter(r for r, _ in beam_drop.values())) == {"dup:url", "dup:exact", "dup:near"}


def test_cluster_roots_pointer_jumping():
    # x1 →url→ x2 →exact→ x3 →near→ x4 (depth 3), plus a second small tree
    roots = cluster_roots([("x1", "x2"), ("x2", "x3"), ("x3", "x4"), ("y1", "y0"), ("z", "x3")])
    assert roots == {"x1": "x4", "x2": "x4", "x3": "x4", "z": "x4", "x4": "x4", "y1": "y0", "y0": "y0"}


def test_pipeline_parts_pickle():
    """What Beam ships to workers must pickle (pickle and cloudpickle, Beam's default)."""
    cfg = CurateConfig(langs=["en"])
    fns = [
        StepsDoFn(factory=beam_curate.FilterFactory(cfg)),
        StepsDoFn(groups=beam_curate.FilterFactory(cfg)()),
        ExtractDoFn(ExtractConfig()),
        ReadWarcFile(),
        SignBatch(DedupConfig()),
        ResolveGroups("dup:near"),
        _StarReduce("large", 1),
        beam_curate.WriteManifest("gs://bucket/out/web", cfg, ["filter", "dedup"], 0.0, "DataflowRunner"),
    ]
    from beam_pipelines.cluster import AssignClusters, Cluster

    fns.append(AssignClusters())
    transforms = [Cluster(), Dedup(DedupConfig()), NearDuplicates(5), ConnectedComponents(5), ReadWarc("gs://b/*.warc.gz"), WriteDocuments("gs://b/o")]
    for obj in fns + transforms:
        for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
            clone = loads(dumps(obj))
            assert type(clone) is type(obj)
    # a DoFn whose steps were set up (models loaded) still ships only their configs
    fn = StepsDoFn(groups=beam_curate.FilterFactory(cfg)())
    fn.setup()
    clone = pickle.loads(pickle.dumps(fn))
    assert all(not s._ready for _, steps in clone.groups for s in steps)
    clone.setup()
    text = "\n".join(json.loads(x)["text"] for x in (ROOT / "samples/quality/positive.jsonl").read_text().splitlines()[:3])
    outs = list(clone.process(Document(id="x", text=text)))
    kept = [o for o in outs if isinstance(o, Document)]
    assert len(kept) == 1 and kept[0].lang == "en" and kept[0].tier is not None


# Functions allowed to touch the local filesystem, each for a stated reason.
ALLOWED_LOCAL_IO = {
    ("io.py", "download"),  # copies one remote file to a local one (for localize and stage_locally)
    ("io.py", "upload_folder"),  # copies locally written shards/phases out through FileSystems
    ("io.py", "localize"),  # copies remote models/eval sets for fastText/sentencepiece (local files only)
    ("testing.py", "_load"),  # reads the sample prose shipped inside the package
    ("tokenize.py", "encode_file"),  # the tokenizer's shard writer needs a local temp folder
    ("build_mix.py", "stage_locally"),  # the local mixer reads token shards through mmap
    ("build_mix.py", "resolve_local"),  # the mix manifest records a local TOKENS path resolved, as locally
    ("build_mix.py", "build_phase_local"),  # build_phase writes a local folder (then copied out)
    ("worker_requirements.py", "project_requirements"),  # launcher-side: reads the checkout's pyproject.toml
}
FORBIDDEN = ("open", "os.path", "pathlib", "Path", "shutil", "os.listdir", "os.makedirs", "os.remove", "glob")


def _uses(node: ast.AST) -> set[str]:
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "open":
            found.add("open")
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name):
            dotted = f"{n.value.id}.{n.attr}"
            if dotted in FORBIDDEN or n.value.id in ("shutil", "pathlib", "glob"):
                found.add(dotted)
            if n.value.id == "os" and n.attr == "path":
                found.add("os.path")
        elif isinstance(n, ast.Name) and n.id in ("Path", "PurePath"):
            found.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            mod = getattr(n, "module", None) or ""
            names = [a.name for a in n.names]
            if mod in ("pathlib", "glob") or "pathlib" in names or "glob" in names:
                found.add("pathlib/glob import")
    return found


def test_pipelines_do_io_only_through_beam_filesystems():
    """No local-filesystem assumptions in beam_pipelines/ outside the allow-listed helpers."""
    offenders = []
    for path in sorted((ROOT / "beam_pipelines").glob("*.py")):
        tree = ast.parse(path.read_text())
        allowed_nodes = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (path.name, node.name) in ALLOWED_LOCAL_IO:
                allowed_nodes.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in allowed_nodes:
                continue
            if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                bad = _uses(node) if all(id(n) not in allowed_nodes for n in ast.walk(node)) else set()
                if bad:
                    offenders.append(f"{path.name}:{node.lineno}: {sorted(bad)}")
    assert not offenders, "local file access outside apache_beam.io.filesystems:\n" + "\n".join(offenders)
    # and the reading/writing transforms really are built on FileSystems / fileio
    src = (ROOT / "beam_pipelines" / "io.py").read_text()
    assert "fileio.MatchFiles" in src and "FileSystems.open" in src and "FileSystems.create" in src and "WriteToParquet" in src


def test_worker_requirements_leave_out_torch_and_nothing_else():
    """The worker image's requirement list: pyproject's dependencies minus the trainer-only ones."""
    import tomllib

    from beam_pipelines.worker_requirements import NOT_ON_WORKERS, _name, worker_requirements

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = worker_requirements()
    assert not {_name(r) for r in reqs} & {"torch", "tensorboard", "matplotlib"}
    assert reqs == [d for d in deps if _name(d) not in NOT_ON_WORKERS]
    assert {"apache-beam", "warcio", "trafilatura", "fasttext", "sentencepiece"} <= {_name(r) for r in reqs}


def test_curate_pipeline_runs_without_torch(tmp_path):
    """Workers built from worker_requirements have no torch: the curate pipeline (and the
    tokenize/build_mix modules) must not need it. Run in a fresh interpreter where importing
    torch fails, as it would on such a worker."""
    import subprocess
    import sys

    write_sample_warcs(str(tmp_path / "crawl"), SampleSpec(n_unique=8, n_exact=1, n_near=1, n_url_dups=1, n_spam=1, n_files=1))
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "import beam_pipelines.tokenize, beam_pipelines.build_mix\n"
        "from beam_pipelines.curate import run\n"
        f"run(['--input', {str(tmp_path / 'crawl')!r}, '--output', {str(tmp_path / 'out')!r}, '--langs', 'en', '--cc_max_rounds', '4'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "web" / "_manifest.json").read_text())
    assert manifest["docs_out"] >= 5 and manifest["drops"].get("dup:exact") == 1


def test_beam_curate_cluster_annotates_every_document(crawl):
    """--cluster: the same documents and drops as without it, every document labelled by the
    k-means fitted on the deterministic sample, and the saved model reproduces the labels."""
    from stepcrawl.cluster import MODEL_NAME, ClusterModel

    out = crawl["root"] / "beam_cluster"
    beam_curate.run(
        ["--input", str(crawl["folder"]), "--output", str(out), "--langs", "en", "--decontam", f"trivia={crawl['evalset']}",
         "--cluster", "--cluster_sample", "25", "--runner", "DirectRunner", "--cc_max_rounds", "6"]
    )
    manifest, local = json.loads((out / "web" / "_manifest.json").read_text()), crawl["local"]
    docs = _docs(out / "web")
    assert set(docs) == set(_docs(crawl["root"] / "local" / "web"))
    assert manifest["drops"] == local["drops"] and manifest["docs_out"] == local["docs_out"]
    assert manifest["extra"]["stages"][-1] == "cluster" and manifest["config"]["cluster"] is True
    step = manifest["extra"]["funnel"][-1]
    assert (step["step"], step["docs_in"], step["docs_out"], step["drops"]) == ("cluster", local["docs_out"], local["docs_out"], {})
    assert manifest["extra"]["funnel"][:-1] == local["extra"]["funnel"]
    model = ClusterModel.load(out / "_work" / "cluster" / MODEL_NAME)
    assert model.k == 25  # fewer sampled texts than k=64: k lowered to the sample, as locally
    ordered = sorted(docs.values(), key=lambda d: d.id)
    assert [d.cluster for d in ordered] == model.assign([d.text for d in ordered]).tolist()
    assert len({d.cluster for d in ordered}) > 5
