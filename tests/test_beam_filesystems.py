"""The Beam pipelines on a non-local Beam FileSystem: no local-path assumption survives.

``MemtestFileSystem`` is a real Beam ``FileSystem`` plugin (registered like gs:// or s3://,
by subclassing) for the scheme ``memtest://``; it stores objects under a temp folder, but a
``memtest://`` URL is not a local path, so any code in beam_pipelines that opened, listed or
renamed a path with ``open``/``os``/``pathlib`` instead of ``apache_beam.io.filesystems``
fails here. Runs on the DirectRunner in-process (the plugin lives in this process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

from beam_pipelines import curate as beam_curate
from beam_pipelines.testing import SampleSpec, write_sample_warcs
from stepcrawl.curate import CurateConfig, curate
from stepcrawl.io import read_documents

SCHEME = "memtest"
PREFIX = SCHEME + "://"


class MemtestFileSystem(FileSystem):
    """``memtest://bucket/key`` ↔ ``<root>/bucket/key``: every path in and out is translated,
    the work is delegated to Beam's LocalFileSystem."""

    root: str | None = None

    def __init__(self, pipeline_options):
        super().__init__(pipeline_options)
        self.fs = LocalFileSystem(pipeline_options)

    def has_dirs(self):
        return True

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    @classmethod
    def local(cls, url: str) -> str:
        assert url.startswith(PREFIX), f"not a {SCHEME} URL: {url}"
        assert cls.root is not None, "MemtestFileSystem.root is not set"
        return str(Path(cls.root) / url[len(PREFIX):])

    @classmethod
    def url(cls, local: str) -> str:
        rel = Path(local).resolve().relative_to(Path(cls.root).resolve())
        return PREFIX + rel.as_posix()

    def _md(self, md: FileMetadata) -> FileMetadata:
        return FileMetadata(self.url(md.path), md.size_in_bytes, md.last_updated_in_seconds)

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        Path(self.local(path)).mkdir(parents=True, exist_ok=True)

    def _list(self, dir_or_prefix):
        for md in self.fs._list(self.local(dir_or_prefix)):
            yield self._md(md)

    def create(self, path, *args, **kwargs):
        Path(self.local(path)).parent.mkdir(parents=True, exist_ok=True)  # object stores have no folders
        return self.fs.create(self.local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self.fs.open(self.local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return self.fs.copy([self.local(s) for s in sources], [self.local(d) for d in destinations])

    def rename(self, sources, destinations):
        for d in destinations:
            Path(self.local(d)).parent.mkdir(parents=True, exist_ok=True)
        return self.fs.rename([self.local(s) for s in sources], [self.local(d) for d in destinations])

    def exists(self, path):
        return self.fs.exists(self.local(path))

    def size(self, path):
        return self.fs.size(self.local(path))

    def last_updated(self, path):
        return self.fs.last_updated(self.local(path))

    def checksum(self, path):
        return self.fs.checksum(self.local(path))

    def metadata(self, path):
        return self._md(self.fs.metadata(self.local(path)))

    def delete(self, paths):
        return self.fs.delete([self.local(p) for p in paths])

    def report_lineage(self, path, lineage):
        return None


@pytest.fixture()
def memtest(tmp_path):
    MemtestFileSystem.root = str(tmp_path / "store")
    Path(MemtestFileSystem.root).mkdir()
    yield MemtestFileSystem.root
    MemtestFileSystem.root = None


def test_plugin_is_what_filesystems_uses(memtest):
    assert type(FileSystems.get_filesystem(PREFIX + "b/x")) is MemtestFileSystem
    with FileSystems.create(PREFIX + "b/dir/x.txt") as fh:
        fh.write(b"hello")
    assert [m.path for m in FileSystems.match([PREFIX + "b/**"])[0].metadata_list] == [PREFIX + "b/dir/x.txt"]


def test_curate_reads_and_writes_only_through_beam_filesystems(memtest, tmp_path):
    """WARCs, an eval set and the output all on memtest://: the same documents and drops as
    the local executor on the same files, errors named by URL, provenance by file name."""
    local_crawl = tmp_path / "crawl"
    write_sample_warcs(str(local_crawl), SampleSpec(n_files=2, seed=4))
    data = (local_crawl / "crawl-00001.warc.gz").read_bytes()
    (local_crawl / "zz-cut.warc.gz").write_bytes(data[: len(data) // 2])  # a damaged file
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "Unique words that appear in no page of the sample crawl at all."}) + "\n")
    for f in sorted(local_crawl.iterdir()):
        with FileSystems.create(f"{PREFIX}bucket/crawl/{f.name}", compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            fh.write(f.read_bytes())
    with FileSystems.create(PREFIX + "bucket/evals/eval.jsonl") as fh:
        fh.write((tmp_path / "eval.jsonl").read_bytes())

    cfg = CurateConfig(langs=["en"], decontam_sets=[f"quiz={tmp_path / 'eval.jsonl'}"])
    local = curate([str(local_crawl)], str(tmp_path / "local"), cfg, progress=False).to_dict()
    beam_curate.run(["--input", PREFIX + "bucket/crawl", "--output", PREFIX + "bucket/out", "--langs", "en",
                     "--decontam", f"quiz={PREFIX}bucket/evals/eval.jsonl", "--keep_rejected",
                     "--runner", "DirectRunner", "--cc_max_rounds", "6"])

    out = Path(MemtestFileSystem.local(PREFIX + "bucket/out"))
    manifest = json.loads((out / "web" / "_manifest.json").read_text())
    b = {d.id: d for d in read_documents(out / "web")}
    l = {d.id: d for d in read_documents(tmp_path / "local" / "web")}
    assert set(b) == set(l) and len(b) > 20
    # the same copy of each record survives (the truncated copy's records are URL duplicates)
    assert all((b[i].warc_file, b[i].warc_offset, b[i].dup_cluster) == (l[i].warc_file, l[i].warc_offset, l[i].dup_cluster) for i in b)
    assert manifest["drops"]["dup:url"] >= 5
    assert manifest["drops"] == local["drops"] and manifest["docs_in"] == local["docs_in"]
    errors = manifest["extra"]["errors"]
    assert len(errors) == 1, errors
    err = errors[0]
    assert err["file"] == PREFIX + "bucket/crawl/zz-cut.warc.gz"
    assert err["offset"] == local["extra"]["errors"][0]["offset"]
    rejected = list((out / "rejected").glob("part-*.parquet"))
    assert rejected and not list(out.rglob("beam-temp-*"))  # temp files of the sink were cleaned up


def _upload(local: Path, url: str) -> None:
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        with FileSystems.create(f"{url}/{f.relative_to(local).as_posix()}", compression_type=CompressionTypes.UNCOMPRESSED) as fh:
            fh.write(f.read_bytes())


def _files(folder: Path, skip=("wall_time_s", "corpus", "path", "tokens_dir", "input")) -> dict[str, object]:
    """{relative path: bytes, or parsed JSON without the fields that name a location}."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in skip}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return {str(f.relative_to(folder)): strip(json.loads(f.read_text())) if f.suffix == ".json" else f.read_bytes()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_tokenize_and_build_mix_on_a_remote_filesystem(memtest, tmp_path):
    """Corpus, tokenizer, token shards and the mix on memtest://: the same bytes as the local
    commands (manifest fields that name a location aside)."""
    from beam_pipelines import build_mix as beam_mix
    from beam_pipelines import tokenize as beam_tokenize
    from curricula.mixer import build_mix
    from curricula.synthetic import write_corpus
    from stepcrawl.document import Document
    from stepcrawl.io import write_documents
    from tokenizer.encode import tokenize_corpus
    from tokenizer.train import TokenizerConfig, train_tokenizer

    root = Path(__file__).resolve().parent.parent
    texts = [json.loads(x)["text"] for x in (root / "samples/quality/positive.jsonl").read_text().splitlines()[:30]]
    corpus = tmp_path / "corpus"
    write_documents(corpus / "web" / "part-00000.parquet", [Document(id=f"w{i}", text=t, source="web", tier="High") for i, t in enumerate(texts)])
    tok = tmp_path / "tok"
    train_tokenizer([corpus], tok, TokenizerConfig(vocab_size=400, threads=1))
    tokenize_corpus(corpus, tok, tmp_path / "tokens", workers=1, progress=False)
    _upload(corpus, PREFIX + "b/corpus")
    _upload(tok, PREFIX + "b/tok")
    beam_tokenize.run(["--input", PREFIX + "b/corpus", "--tokenizer", PREFIX + "b/tok", "--output", PREFIX + "b/tokens", "--runner", "DirectRunner"])
    remote, local = _files(Path(MemtestFileSystem.local(PREFIX + "b/tokens"))), _files(tmp_path / "tokens")
    assert "web/part-00000.bin" in remote and set(remote) == set(local)
    assert {k: v for k, v in remote.items() if not k.endswith(".done.json")} == {k: v for k, v in local.items() if not k.endswith(".done.json")}

    tokens = tmp_path / "mixtokens"
    write_corpus(tokens, {s: 80 for s in ("web", "code", "commits", "issues", "pr_dialogue", "tool_use", "reasoning")},
                 min_len=32, max_len=800, docs_per_shard=40)
    curriculum = str(root / "curricula" / "tiny.yaml")
    build_mix(curriculum, "mid", tokens, tmp_path / "mix", seed=1, progress=False)
    _upload(tokens, PREFIX + "b/mixtokens")
    beam_mix.run(["--curriculum", curriculum, "--stage", "mid", "--tokens", PREFIX + "b/mixtokens", "--output", PREFIX + "b/mix",
                  "--seed", "1", "--runner", "DirectRunner"])
    assert _files(Path(MemtestFileSystem.local(PREFIX + "b/mix"))) == _files(tmp_path / "mix")
