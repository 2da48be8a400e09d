"""The exit-code convention of every command (``stepcrawl …`` and ``train``), and the project
error type that carries the file and field a refusal is about.

=====  ==========================================================================================
code   meaning
=====  ==========================================================================================
0      done. Ordinary filtering (duplicates, quality, language, licence) is work, not an error.
1      done, but some *input* was malformed or unreadable and was dropped (counted in the
       manifest under an input-error reason, listed as FILE:LINE / FILE:ROW with the reason).
2      refused: nothing (more) was done: a missing or unreadable input, a bad option or
       config file, a corrupt shard or checkpoint. One line ``PROG: error: FILE: field: why``.
130    interrupted (Ctrl-C); re-run with the same arguments to resume.
=====  ==========================================================================================
"""

from __future__ import annotations

from typing import Any, Mapping

EXIT_OK = 0
EXIT_DROPPED_INPUT = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130

# Drop reasons that mean "the input was bad", as opposed to filtering decisions. A reason
# ``malformed:<detail>`` / ``unreadable:<detail>`` counts too.
INPUT_ERROR_REASONS = frozenset({
    "malformed", "unreadable", "malformed_input",
    # WARC records we could not read or decode (stepcrawl.readers); a body over the size caps
    # (extract:too-large, extract:decompressed-too-large) is a limit we set, not bad input
    "warc:damaged", "extract:bad-content-encoding",
})


def is_input_error(reason: str) -> bool:
    return reason in INPUT_ERROR_REASONS or reason.startswith(("malformed:", "unreadable:"))


def dropped_input(manifest: Mapping[str, Any]) -> int:
    """How many input items a stage manifest (its ``to_dict()`` form) reports as malformed or
    unreadable: drops under input-error reasons, else the errors it lists (a damaged WARC's
    unread tail is listed, not counted per record)."""
    drops = sum(n for r, n in (manifest.get("drops") or {}).items() if is_input_error(r))
    extra = manifest.get("extra") or {}
    listed = max(len(extra.get("errors") or []), int(extra.get("n_malformed") or 0))
    return max(drops, listed)


def exit_code(manifest: Mapping[str, Any] | None) -> int:
    """0, or 1 when the stage dropped input (the convention above)."""
    return EXIT_DROPPED_INPUT if manifest is not None and dropped_input(manifest) else EXIT_OK


class StepcrawlError(Exception):
    """A refusal (exit code 2): ``path`` and ``field`` name what is wrong, when known.

    Picklable (``__reduce__``), so it reaches the parent intact from a worker process."""

    def __init__(self, message: str, path: str | None = None, field: str | None = None):
        self.message, self.path, self.field = message, None if path is None else str(path), field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return ": ".join(str(x) for x in (self.path, self.field, self.message) if x)

    def __reduce__(self):
        return (type(self), (self.message, self.path, self.field))


def one_line(exc: BaseException) -> str:
    """An exception as one line that names the file when the exception knows it."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first if len(first) <= 500 else first[:497] + "..."
