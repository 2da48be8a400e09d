"""The two HTML main-content backends behind ``stepcrawl.extract.extract_html``."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def trafilatura_tree(html: str):
    """The lxml tree trafilatura itself would build for ``html`` (its own ``load_html``), so the
    math pre-pass can rewrite it and hand it over without a second parse."""
    from trafilatura.utils import load_html

    return load_html(html)


def trafilatura_text(html_or_tree: Any, url: str, favor_precision: bool, include_tables: bool,
                     rich_metadata: bool, max_date: str | None) -> tuple[str, dict]:
    """(main text, trafilatura's metadata if asked) with trafilatura's ``bare_extraction``."""
    import trafilatura

    kwargs: dict = {}
    if rich_metadata:
        params = {"extensive_search": False, "original_date": True}
        if max_date:
            params["max_date"] = max_date[:10]  # keeps the guessed date deterministic across runs
        kwargs = {"with_metadata": True, "date_extraction_params": params}
    result = trafilatura.bare_extraction(
        html_or_tree,
        url=url or None,
        favor_precision=favor_precision,
        include_tables=include_tables,
        include_comments=False,
        **kwargs,
    )
    if result is None:
        return "", {}
    d = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    meta = {k: d.get(k) for k in ("title", "date", "author", "sitename", "description") if d.get(k)} if rich_metadata else {}
    return d.get("text") or "", meta


def resiliparse_text(html: str) -> str:
    """Main text with Resiliparse (DCLM's extractor): its main-content heuristics, no image alt
    texts (math images were already turned into TeX by the pre-pass), no links, no comments,
    no form fields — the same choices as our trafilatura settings."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, form_fields=False,
                              noscript=False, comments=False, preserve_formatting=True, list_bullets=True)
    # Resiliparse separates blocks with blank lines and may leave trailing spaces; one newline
    # between blocks, as trafilatura writes them, keeps line-based quality rules comparable
    lines = [ln.strip() for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if ln)
