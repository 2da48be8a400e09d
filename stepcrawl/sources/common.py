"""Shared machinery of the source adapters: chat rendering with loss spans, and the stage writer.

Every adapter is a generator of ``Document | Drop | BadRecord`` items; ``write_stage`` is the one
thin executor that turns such a stream into ``OUT/part-*.parquet`` + ``_manifest.json`` with
exact accounting (in = out + Σ drops), optional ``OUT/rejected/`` shards, and a list of the
malformed records by file:line. Adapters therefore stay pure and testable without any I/O.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tqdm import tqdm

from stepcrawl.document import Document, Span, text_id
from stepcrawl.faults import kill_point
from stepcrawl.io import BadRecord, ShardWriter
from stepcrawl.manifest import Accounting, StageManifest, clear_stage, config_hash, file_hash
from stepcrawl.steps import Drop

log = logging.getLogger(__name__)

# The tokenizer reserves exactly these strings as single tokens (see tokenizer area).
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
TOOL_CALL, TOOL_RESULT, END = "<|tool_call|>", "<|tool_result|>", "<|end|>"
THINK, END_THINK = "<|think|>", "<|/think|>"
MARKERS = (SYSTEM, USER, ASSISTANT, TOOL_CALL, TOOL_RESULT, END, THINK, END_THINK)

# Roles used in spans. "scaffold" = template text / role markers that a sampler or chat template
# inserts (never a loss target: the model is not asked to predict boilerplate).
ROLES = ("system", "user", "assistant", "tool_call", "tool_result", "think", "scaffold")

# How many malformed records are listed by file:line in the manifest (all are counted).
MAX_LISTED_ERRORS = 200


def strip_markers(text: str) -> str:
    """Defuse reserved marker strings that occur inside content (e.g. a trace quoting a
    marker) so a document's structure cannot be forged by its content: ``<|end|>`` →
    ``<| end |>``. Keeps the text readable; the tokenizer then sees ordinary characters."""
    if "<|" not in text:
        return text
    for m in MARKERS:
        if m in text:
            text = text.replace(m, m.replace("<|", "<| ").replace("|>", " |>"))
    return text


@dataclass
class SpanText:
    """Builds a text from (piece, role) parts and the spans that cover it exactly.

    Adjacent pieces with the same role are merged into one span, so the result is the minimal
    exact cover: spans are sorted, contiguous, non-overlapping, and ``spans[0].start == 0``,
    ``spans[-1].end == len(text)``. Loss is assigned per role by ``loss_roles``.
    """

    loss_roles: frozenset[str]
    parts: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    length: int = 0

    def add(self, piece: str, role: str) -> "SpanText":
        if not piece:
            return self
        if role not in ROLES:
            raise ValueError(f"unknown span role {role!r}")
        loss = role in self.loss_roles
        start, end = self.length, self.length + len(piece)
        if self.spans and self.spans[-1].role == role and self.spans[-1].loss == loss:
            last = self.spans.pop()
            self.spans.append(Span(last.start, end, role, loss))
        else:
            self.spans.append(Span(start, end, role, loss))
        self.parts.append(piece)
        self.length = end
        return self

    def build(self) -> tuple[str, list[Span]]:
        return "".join(self.parts), list(self.spans)


def check_spans(text: str, spans: list[Span]) -> None:
    """Raise ValueError unless ``spans`` cover every character of ``text`` exactly once."""
    pos = 0
    for s in spans:
        if s.start != pos or s.end <= s.start:
            raise ValueError(f"span {s} does not continue at offset {pos}")
        pos = s.end
    if pos != len(text):
        raise ValueError(f"spans end at {pos}, text has {len(text)} characters")


def parse_roles(value: str | Iterable[str]) -> frozenset[str]:
    """``"assistant,tool_call"`` → frozenset; unknown role names are an error (typos would
    silently mask everything)."""
    roles = [r.strip() for r in (value.split(",") if isinstance(value, str) else value) if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad:
        raise ValueError(f"unknown role(s) {bad}; known: {', '.join(ROLES)}")
    return frozenset(roles)


def natural_language(text: str) -> tuple[str | None, float | None]:
    """(language code, score) of the prose of a document (issue text, user turns, problem
    statements) with the project's bundled fastText model (``stepcrawl.langid``); (None, None)
    when there is no prose or the model cannot be loaded. Code docs use the programming
    language instead (``Document.lang`` = "python", …; see code.py)."""
    if not text.strip():
        return None, None
    try:
        from stepcrawl.langid import identify

        lang, score = identify(text)
    except (ImportError, FileNotFoundError, OSError, ValueError) as exc:  # pragma: no cover
        log.debug("language id unavailable: %s", exc)
        return None, None
    return (None, None) if lang == "und" else (lang, round(float(score), 4))


def make_id(source: str, *key: Any) -> str:
    """A stable document id from the source name and a natural key (repo, sha, path, …)."""
    return text_id("\x1f".join(str(k) for k in key), prefix=source)


def rejected_doc(err: BadRecord, raw: str = "") -> Document:
    """A placeholder document for a malformed record, so ``--keep-rejected`` loses nothing
    (a ``RejectedRecord`` carries the record's JSON as its text)."""
    return Document(
        id=make_id("malformed", err.path, err.line),
        text=raw or getattr(err, "raw", ""),
        source="malformed",
        kind="other",
        meta={"file": err.path, "line": err.line, "error": str(err)},
    )


class RejectedRecord(BadRecord):
    """A well-formed record we cannot render faithfully (unknown role, wrong-typed field, a
    content part we do not understand, …). Counted under its named ``reason`` instead of
    ``malformed``, listed by file:line like a malformed record, never a document with parts
    missing."""

    def __init__(self, path: str, line: int | None, reason: str, message: str, raw: str = ""):
        super().__init__(path, line, f"[{reason}] {message}")
        # after BadRecord's __init__, which sets ``message`` to the formatted "[reason] …" form
        self.reason, self.message, self.raw = reason, message, raw

    def __reduce__(self):  # picklable across worker processes despite the extra arguments
        return (RejectedRecord, (self.path, self.line, self.reason, self.message, self.raw))


# ---------------------------------------------------------------- record readers
# Suffixes an input folder is searched for (compressed variants included).
RECORD_SUFFIXES = tuple(f"{s}{c}" for s in (".jsonl", ".json", ".traj") for c in ("", ".gz", ".zst"))
_CHUNK = 1 << 20  # characters read at a time from a JSON array / document stream
_PEEK = 1 << 16  # characters read to tell JSONL from a JSON document
_NON_BLANK = re.compile(r"[^ \t\r\n]")


def open_text(path: str | Path):
    """A text handle on ``path``, transparently decompressing ``.gz`` (gzip) and ``.zst``
    (zstandard). Undecodable bytes are kept as surrogates, so one bad byte costs only the
    record it sits in (it then fails as malformed JSON or renders as-is)."""
    path = str(path)
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape")
    if path.endswith(".zst"):
        import io

        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
        return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
    return open(path, encoding="utf-8", errors="surrogateescape")


def _element_of_one_record(group: Any, item: Any) -> bool:
    return group is not None and bool(group(item))


def iter_json_records(path: str | Path, *, group: Any = None) -> Iterator[tuple[int, Any] | BadRecord]:
    """Records of one file: JSONL, a JSON array, one JSON object (pretty-printed or not), or
    several concatenated JSON documents — told apart by the content, not the name — plain,
    ``.gz`` or ``.zst``.

    Yields ``(line, record)``; malformed records are yielded as ``BadRecord`` (never raised),
    so a caller counts them and goes on. "line" is the line number in JSONL, the 1-based index
    of the element in a JSON array, the index of the document in a document stream.

    A JSON array cut off at the end (or broken in the middle, where JSON offers no way to
    resynchronise) keeps every complete element before the damage and reports the damage once
    as ``FILE:OFFSET`` (character offset) with the reason.

    ``group(element) -> bool`` (tool-use: "is this a chat message / agent event?"): an array
    whose first element satisfies it is *one* record (a bare message list), yielded as a list.
    Without ``group`` every record is a JSON object.
    """
    path = str(path)
    try:
        fh = open_text(path)
        with fh:
            # Peek by lines (a damaged compressed stream then loses only the chunk it breaks in).
            head = ""
            while True:
                line = fh.readline(_PEEK)
                head += line
                if not line or line.strip():
                    break
            stripped = head.lstrip()
            if not stripped:
                return
            if not line.endswith("\n") and len(line) == _PEEK:
                documents = stripped[0] == "["  # one long first line: an array streams, an object is one JSONL line
            else:
                documents = stripped[0] in "[{" and not _parses(stripped)
            if documents:  # a JSON document, not JSONL: an array, or pretty-printed object(s)
                # "{" alone on the first line is how pretty-printers start an object: a damaged one
                # is one bad record. Anything else that does not parse may be a damaged JSONL line.
                pretty = stripped.strip() in ("{", "[")
                try:
                    yield from _iter_documents(path, fh, head, group, fallback=not pretty)
                    return
                except _FirstDocumentBroken:
                    pass  # not a pretty-printed object after all: JSONL whose first line is damaged
            else:
                yield from _iter_lines(path, head, fh, group)
                return
        with open_text(path) as fh:  # start again, line by line, so only the bad lines are lost
            yield from _iter_lines(path, "", fh, group)
    except _READ_ERRORS as exc:  # unreadable file / corrupt compressed stream: what came before is kept
        yield BadRecord(path, None, f"cannot read further: {type(exc).__name__}: {exc}")


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover - zstandard is a core dependency
        pass
    return errors


_READ_ERRORS = _read_errors()


def _not_utf8(text: str) -> bool:
    """Undecodable bytes arrive as lone surrogates (``surrogateescape``); such a record cannot
    be written as UTF-8 later, so it is reported here, where its file and line are known."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _records_of_value(path: str, where: int, value: Any, group: Any) -> Iterator[tuple[int, Any] | BadRecord]:
    if isinstance(value, dict):
        yield where, value
    elif isinstance(value, list) and value and _element_of_one_record(group, value[0]):
        yield where, value
    else:
        yield BadRecord(path, where, f"expected a JSON object, got {type(value).__name__}")


def _iter_lines(path: str, head: str, fh, group: Any) -> Iterator[tuple[int, Any] | BadRecord]:
    import itertools

    if head and not head.endswith("\n"):
        head += fh.readline()  # complete a first line longer than the peek
    for lineno, line in enumerate(itertools.chain(head.splitlines(keepends=True), fh), 1):
        if not line.strip():
            continue
        if _not_utf8(line):
            yield BadRecord(path, lineno, "not valid UTF-8")
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield BadRecord(path, lineno, f"malformed JSON: {exc}")
            continue
        if (isinstance(value, list) and value and all(isinstance(x, dict) for x in value)
                and not _element_of_one_record(group, value[0])):
            # a compact JSON array of records on one line (a .json file written without indent)
            for index, item in enumerate(value, 1):
                yield index if lineno == 1 else lineno, item
            continue
        yield from _records_of_value(path, lineno, value, group)


class _Buffer:
    """A growing window on a text stream for ``json.JSONDecoder.raw_decode``.

    Written by hand because neither the standard library nor an installed package parses a
    JSON array *incrementally while reporting where it broke* (``ijson`` would be a new
    dependency and gives no offsets); raw_decode does the actual parsing."""

    def __init__(self, fh, head: str):
        self.fh, self.buf, self.pos, self.base, self.eof = fh, head, 0, 0, False
        self.dirty = _not_utf8(head)  # any undecodable byte read so far: then elements are checked one by one

    def more(self, size: int = _CHUNK) -> bool:
        if self.eof:
            return False
        data = self.fh.read(size)
        if not data:
            self.eof = True
            return False
        if self.pos > _CHUNK:  # drop what was consumed; memory stays ~ one element + one chunk
            self.base += self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += data
        self.dirty = self.dirty or _not_utf8(data)
        return True

    def skip_ws(self) -> str:
        """The next non-blank character ('' at the end of the stream), not consumed."""
        while True:
            m = _NON_BLANK.search(self.buf, self.pos)
            if m:
                self.pos = m.start()
                return self.buf[self.pos]
            self.pos = len(self.buf)
            if not self.more():
                return ""

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def not_utf8_since(self, start: int) -> bool:
        """Whether the element from absolute offset ``start`` to the cursor holds undecodable bytes."""
        return self.dirty and _not_utf8(self.buf[start - self.base:self.pos])

    def value(self, dec: json.JSONDecoder) -> Any:
        """Decode the value at the cursor, reading more as needed; ValueError at the damage."""
        size = _CHUNK
        while True:
            try:
                value, end = dec.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                genuine = exc.pos + 64 < len(self.buf) and not exc.msg.startswith("Unterminated")
                if genuine or not self.more(size):
                    raise
                size = min(size * 2, 1 << 28)  # a long element is re-parsed O(log n) times, not O(n)
                continue
            if end == len(self.buf) and self.more():
                continue  # a number at the buffer's end may continue in the next chunk
            self.pos = end
            return value


class _FirstDocumentBroken(Exception):
    """The first '{' document of a file does not decode: read the file as JSONL instead."""


def _iter_documents(path: str, fh, head: str, group: Any, fallback: bool = False) -> Iterator[tuple[int, Any] | BadRecord]:
    dec = json.JSONDecoder()
    b = _Buffer(fh, head)
    if b.skip_ws() != "[":  # one or several (pretty-printed) JSON documents
        index = 0
        while b.skip_ws():
            index += 1
            start = b.offset
            try:
                value = b.value(dec)
            except ValueError as exc:
                if index == 1 and fallback:
                    raise _FirstDocumentBroken from exc
                yield BadRecord(path, start, f"JSON document {index} broken at offset {start}: {exc}; "
                                f"{index - 1} complete document(s) kept")
                return
            if b.not_utf8_since(start):
                yield BadRecord(path, index, "not valid UTF-8")
                continue
            yield from _records_of_value(path, index, value, group)
        return
    b.pos += 1
    kept: list[Any] = []
    index, grouped = 0, None
    while True:
        c = b.skip_ws()
        if c == "]":
            b.pos += 1
            break
        damage = None
        if index:
            if c == ",":
                b.pos += 1
                c = b.skip_ws()
            else:
                damage = "end of file" if not c else f"expected ',' or ']', found {c!r}"
        if damage is None and not c:
            damage = "end of file"
        start = b.offset
        if damage is None:
            try:
                value = b.value(dec)
            except ValueError as exc:
                damage = str(exc)
        if damage is not None:
            # a bare message list cut short is one incomplete record: nothing of it is kept
            kept_note = "the message list is incomplete and not kept" if grouped else f"{index} complete element(s) kept"
            yield BadRecord(path, start, f"JSON array cut off or broken at offset {start} ({damage}); {kept_note}")
            return
        index += 1
        if b.not_utf8_since(start):
            if grouped:
                yield BadRecord(path, index, "not valid UTF-8 (in the message list)")
                return
            yield BadRecord(path, index, "not valid UTF-8")
            continue
        if grouped is None:
            grouped = _element_of_one_record(group, value)
        if grouped:
            kept.append(value)
        else:
            yield from _records_of_value(path, index, value, group)
    if grouped:
        yield 1, kept
    if b.skip_ws():
        yield BadRecord(path, b.offset, f"unexpected content after the JSON array at offset {b.offset}")


def iter_records(paths: Iterable[str | Path], stats: dict | None = None, *, group: Any = None) -> Iterator[tuple[str | Path, int, Any] | BadRecord]:
    """The records of every file in ``paths`` (see :func:`iter_json_records`) as
    ``(path, line, record)``; malformed ones are passed on as ``BadRecord``. When the files are
    exhausted, the number of well-formed records is stored in ``stats["records"]``."""
    n = 0
    for path in paths:
        for item in iter_json_records(path, group=group):
            if isinstance(item, BadRecord):
                yield item
                continue
            n += 1
            lineno, rec = item
            yield path, lineno, rec
    if stats is not None:
        stats["records"] = n


def input_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand inputs: files as given; folders → their JSONL / JSON / ``.traj`` files (also
    ``.gz`` / ``.zst``), sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(RECORD_SUFFIXES)))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such input: {p}")
    return out


def inputs_hash(paths: Iterable[Path]) -> str:
    """Hash of the input files' contents (for the manifest's input identity)."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        h.update(file_hash(p).encode())
    return h.hexdigest()[:16]


@dataclass
class StageResult:
    manifest: StageManifest
    errors: list[str]
    skipped: bool = False


def write_stage(
    items: Iterable[Document | Drop | BadRecord],
    out: str | Path,
    stage: str,
    config: Any,
    *,
    input_id: str | None = None,
    keep_rejected: bool = False,
    shard_docs: int = 10_000,
    force: bool = True,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> StageResult:
    """Consume an adapter's stream and write the stage folder.

    * ``Document`` → kept, written to ``OUT/part-NNNNN.parquet``.
    * ``Drop(reason, doc)`` → counted under ``reason``; with ``keep_rejected`` written to
      ``OUT/rejected/part-*.parquet`` with a ``drop_reason`` column.
    * ``BadRecord`` → counted under ``malformed`` and listed (file:line: message) in the
      manifest's ``extra.errors`` and the log; the job goes on.

    Re-running with the same config and input on a finished folder is a no-op unless ``force``;
    an input without an identity (``input_id=None``: a folder outside git) is always re-run.
    Old shards of a previous run are removed first so a folder never mixes two runs.
    """
    out = Path(out)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    chash = config_hash(cfg)
    if not force and (prev := StageManifest.reusable(out, chash, input_id)):
        log.info("%s: %s is up to date (same config and input); skipping", stage, out)
        return StageResult(prev, [], skipped=True)
    clear_stage(out)
    started = time.time()
    acc = Accounting()
    errors: list[str] = []
    writer = ShardWriter(out, "part", shard_docs)
    rej = ShardWriter(out / "rejected", "part", shard_docs, rejected=True) if keep_rejected else None
    for item in tqdm(items, desc=stage, unit="doc", disable=not progress, leave=False):
        if isinstance(item, Document):
            acc.seen(item.n_chars)
            acc.kept(item.n_chars)
            writer.write(item)
        elif isinstance(item, Drop):
            n = item.doc.n_chars if item.doc is not None else 0
            acc.seen(n)
            acc.dropped(item.reason, n)
            if rej is not None and item.doc is not None:
                rej.write(item.doc, item.reason)
        elif isinstance(item, BadRecord):
            reason = getattr(item, "reason", "malformed")  # RejectedRecord: a named reason
            acc.seen(0)
            acc.dropped(reason, 0)
            errors.append(str(item))
            if len(errors) <= MAX_LISTED_ERRORS:
                log.warning("%s record: %s", "malformed" if reason == "malformed" else "rejected", item)
            if rej is not None:
                rej.write(rejected_doc(item), reason)
        else:  # pragma: no cover - adapter bug
            raise TypeError(f"adapter yielded {type(item).__name__}")
        kill_point("ingest.record")  # kill matrix: mid-stage, some shards written, no manifest
    files = writer.close()
    if rej is not None:
        rej.close()
    manifest = StageManifest.from_shards(
        stage, cfg, chash, input_id, acc, folder=out, files=files, started=started,
        extra={
            **(extra or {}),
            "n_malformed": acc.drops.get("malformed", 0),
            "errors": errors[:MAX_LISTED_ERRORS],
        },
    )
    manifest.write(out)
    return StageResult(manifest, errors)


# --------------------------------------------------------------------------- pseudonymisation
import re  # noqa: E402  (kept with the helpers below, which are the only users)

# GitHub logins: letters, digits and single inner hyphens, at most 39 characters. A mention is
# "@login" not preceded by a word character (that would be an e-mail address) and not followed
# by "/" (team mentions @org/team and npm scopes @types/node name organisations, not people).
_MENTION = re.compile(r"(?<![\w@./+-])@([A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38})(?![\w/@-]|\.[A-Za-z0-9])")
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b")
# Markdown code: fenced blocks (``` or ~~~, to the closing fence or the end) and inline code
# spans. GitHub does not turn "@name" inside code into a mention, and code is full of
# decorators (@property, @pytest.fixture) that must stay as they are.
_CODE = re.compile(r"(?ms)^[ \t]{0,3}(```|~~~)[^\n]*\n.*?(?:^[ \t]{0,3}\1[^\n]*$|\Z)|`[^`\n]+`")
# Git trailers that name a person: "Signed-off-by: Ada Lovelace <ada@example.org>".
_TRAILER = re.compile(
    r"(?im)^(?P<key>(?:Signed-off|Co-authored|Reviewed|Acked|Tested|Reported|Suggested|Helped|Reviewed-on-behalf-of)-by|Cc)"
    r":[ \t]*(?P<name>[^<\n]*?)[ \t]*<(?P<email>[^>\n]+)>[ \t]*$"
)


class Pseudonymizer:
    """Stable pseudonyms within one document: GitHub logins → ``user_N`` (in order of first
    appearance; register the thread author first to make them ``user_0``), e-mail addresses →
    ``person_N@example.com``, and the person in a git trailer → ``person_N <person_N@example.com>``
    (keyed by the e-mail, so one person keeps one pseudonym across trailers and prose).

    Rewritten: @mentions outside Markdown code (participants *and* anyone else mentioned) and
    every e-mail address (code spans included: an address is personal data wherever it is).
    ``enabled=False`` leaves everything verbatim (``--no-pseudonymize``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.logins: dict[str, str] = {}  # lowercased login → alias (logins are case-insensitive)
        self.emails: dict[str, str] = {}  # lowercased address → person alias
        self._aliases: set[str] = set()  # addresses we produced (never rewritten again)

    def login(self, login: str) -> str:
        if not login:
            return "unknown"
        if not self.enabled:
            return login
        key = login.lower()
        if key not in self.logins:
            self.logins[key] = f"user_{len(self.logins)}"
        return self.logins[key]

    def person(self, email: str) -> str:
        key = email.strip().lower()
        if key not in self.emails:
            self.emails[key] = f"person_{len(self.emails)}"
            self._aliases.add(f"{self.emails[key]}@example.com")
        return self.emails[key]

    def _email(self, m: re.Match) -> str:
        addr = m.group(0)
        return addr if addr.lower() in self._aliases else f"{self.person(addr)}@example.com"

    def _mentions(self, text: str) -> str:
        return _MENTION.sub(lambda m: "@" + self.login(m.group(1)), text)

    def text(self, text: str) -> str:
        """Mentions (outside code) and e-mail addresses of a prose text."""
        if not self.enabled or not text:
            return text
        out, pos = [], 0
        for m in _CODE.finditer(text):
            out.append(self._mentions(text[pos : m.start()]))
            out.append(m.group(0))
            pos = m.end()
        out.append(self._mentions(text[pos:]))
        return _EMAIL.sub(self._email, "".join(out))

    def trailers(self, message: str) -> str:
        """Git trailers naming a person (Signed-off-by, Co-authored-by, …): name and address
        become ``person_N <person_N@example.com>``; then the rest as :meth:`text`."""
        if not self.enabled:
            return message

        def sub(m: re.Match) -> str:
            alias = self.person(m.group("email"))
            return f"{m.group('key')}: {alias} <{alias}@example.com>"

        return self.text(_TRAILER.sub(sub, message))
