"""Train a sentencepiece BPE tokenizer (byte fallback) on a deterministic sample of a corpus.

Why these trainer settings:
- ``byte_fallback``: no ``<unk>`` ever reaches the model; rare characters become bytes.
- ``normalization_rule_name=identity`` and ``remove_extra_whitespaces=False``: decoding gives
  back the exact text (code indentation, runs of spaces) — the round trip is tested.
- ``split_digits``: numbers tokenize digit by digit, as in Llama/DeepSeek tokenizers.
- ``"\\n"`` is a user-defined piece so that training chunks can keep line structure (code!).
- Our control symbols (meta delimiters, role markers, reserved) get fixed low ids right after
  pad/bos/eos/unk, so ids of special tokens are identical across vocabulary sizes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow.parquet as pq
import sentencepiece as spm

from stepcrawl.document import Document
from stepcrawl.io import atomic_path, document_files, read_documents, write_json
from stepcrawl.manifest import file_hash
from tokenizer import special
from tokenizer.meta import meta_body

log = logging.getLogger(__name__)

TOKENIZER_MODEL = "tokenizer.model"
TOKENIZER_INFO = "tokenizer.json"


@dataclass
class TokenizerConfig:
    vocab_size: int = 32_000
    character_coverage: float = 0.9995
    sample_docs: int = 200_000  # documents sampled across all sources
    max_chunk_chars: int = 2_000  # training "sentences" are chunks of this many characters
    max_sentences: int = 2_000_000  # sentencepiece's input_sentence_size
    pad_to_multiple: int = 128  # embedding rows are padded to this multiple
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_to_multiple
        return -(-self.vocab_size // m) * m


def _count_docs(path: Path) -> int:
    if path.name.endswith(".parquet"):
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _selected(doc_id: str, keep_per_million: int, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 1_000_000 < keep_per_million


def sample_documents(corpus_dirs: Iterable[str | os.PathLike], cfg: TokenizerConfig,
                     errors: list[str] | None = None) -> Iterator[Document]:
    """A deterministic, streaming sample of about ``cfg.sample_docs`` documents (hash of id).
    Malformed records are skipped and appended to ``errors`` (FILE:LINE / FILE:ROW: why); they
    never raise here, which matters: this generator runs inside sentencepiece's C++ trainer."""
    files = [f for d in corpus_dirs for f in document_files(d)]
    if not files:
        raise ValueError(f"no Parquet/JSONL documents found under {list(map(str, corpus_dirs))}")
    total = sum(_count_docs(f) for f in files)
    keep = 1_000_000 if total <= cfg.sample_docs else max(1, cfg.sample_docs * 1_000_000 // total)
    for f in files:
        for doc in read_documents(f, on_error=lambda e: (errors if errors is not None else []).append(str(e))):
            if _selected(doc.id, keep, cfg.seed):
                yield doc


def chunk_text(text: str, max_chars: int) -> Iterator[str]:
    """Chunks of whole lines up to ``max_chars`` (a longer single line is cut)."""
    buf: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        while len(line) > max_chars:
            if buf:
                yield "".join(buf)
                buf, size = [], 0
            yield line[:max_chars]
            line = line[max_chars:]
        if size + len(line) > max_chars and buf:
            yield "".join(buf)
            buf, size = [], 0
        buf.append(line)
        size += len(line)
    if buf:
        yield "".join(buf)


def training_sentences(docs: Iterable[Document], cfg: TokenizerConfig) -> Iterator[str]:
    for doc in docs:
        # The meta body is part of every training sequence, so the tokenizer learns it too.
        yield meta_body(doc)
        for chunk in chunk_text(doc.text, cfg.max_chunk_chars):
            # Marker strings are control symbols: keep them out of the learned merges.
            for marker in special.SPLIT_MARKERS:
                chunk = chunk.replace(marker, "\n")
            if chunk.strip():
                yield chunk



def train_tokenizer(corpus_dirs: list[str | os.PathLike], out_dir: str | os.PathLike, cfg: TokenizerConfig) -> dict:
    """Train and write ``out_dir/tokenizer.model`` + ``tokenizer.json``; returns the info dict."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_docs = 0

    def counted(docs):
        nonlocal n_docs
        for d in docs:
            n_docs += 1
            yield d

    errors: list[str] = []
    sentences = training_sentences(counted(sample_documents(corpus_dirs, cfg, errors)), cfg)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        model_type="bpe",
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        pad_id=special.PAD_ID,
        bos_id=special.BOS_ID,
        eos_id=special.EOS_ID,
        unk_id=special.UNK_ID,
        pad_piece=special.PAD,
        bos_piece=special.BOS,
        eos_piece=special.EOS,
        unk_piece=special.UNK,
        control_symbols=list(special.CONTROL_SYMBOLS),
        user_defined_symbols=["\n"],
        max_sentence_length=cfg.max_chunk_chars * 4 + 16,  # bytes
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=1_000_000,
        hard_vocab_limit=False,
        num_threads=max(1, cfg.threads),
        minloglevel=2,
    )
    if n_docs == 0:
        raise ValueError("the corpus sample is empty: nothing to train a tokenizer on")
    model_path = out / TOKENIZER_MODEL
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    info = {
        "model": TOKENIZER_MODEL,
        "sha256": file_hash(model_path),
        "vocab_size": sp.get_piece_size(),
        "padded_vocab_size": -(-sp.get_piece_size() // cfg.pad_to_multiple) * cfg.pad_to_multiple,
        "special": {
            "pad": special.PAD_ID,
            "bos": special.BOS_ID,
            "eos": special.EOS_ID,
            "unk": special.UNK_ID,
            **{s: sp.piece_to_id(s) for s in special.CONTROL_SYMBOLS},
        },
        "trained_on": {"corpus": [str(d) for d in corpus_dirs], "documents": n_docs,
                       **({"malformed": len(errors), "errors": errors[:20]} if errors else {})},
        "config": asdict(cfg),
    }
    for e in errors[:20]:
        log.warning("train-tokenizer: skipped malformed record %s", e)
    write_json(out / TOKENIZER_INFO, info)
    log.info("tokenizer: %d pieces trained on %d documents → %s", info["vocab_size"], n_docs, model_path)
    return info
