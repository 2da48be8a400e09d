"""Math-preserving extraction: every form in tests/fixtures/math/ comes out as $…$ / $$…$$ LaTeX,
once (no rendered duplicates), with both extractors; pages without math are left untouched."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcrawl.extract import ExtractConfig, RawRecord, extract_html, extract_record
from stepcrawl.extractors.math import mathml_to_latex, preserve_math

FIX = Path(__file__).parent / "fixtures" / "math"
EXPECTED = json.loads((FIX / "expected.json").read_text())


def squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def formulas(text: str) -> tuple[list[str], list[str]]:
    display = re.findall(r"\$\$(.+?)\$\$", text, re.S)
    rest = re.sub(r"\$\$(.+?)\$\$", " ", text, flags=re.S)
    inline = re.findall(r"\$([^$]+?)\$", rest)
    return [squash(x) for x in inline], [squash(x) for x in display]


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_math_form_is_kept_as_latex(name, extractor):
    want = EXPECTED[name]
    html = (FIX / name).read_text(encoding="utf-8")
    text, meta = extract_html(html, "http://math.test/" + name, ExtractConfig(extractor=extractor))
    inline, display = formulas(text)
    for tex in want["inline"]:
        assert inline.count(squash(tex)) == 1, (tex, inline, text)
    for tex in want["display"]:
        assert display.count(squash(tex)) == 1, (tex, display, text)
    for junk in want["absent"]:
        assert junk not in text, (junk, text)
    for verbatim in want.get("verbatim", []):
        assert verbatim in text, (verbatim, text)  # code is never rewritten
    assert "the main result once more" in text  # the prose around the math is kept too


def test_formula_recall_over_fixtures_and_no_math_without_prepass():
    """Recall of the fixtures' formulas: all with the pre-pass; the plain extractor loses most."""
    total = kept_with = kept_without = 0
    for name, want in EXPECTED.items():
        html = (FIX / name).read_text(encoding="utf-8")
        with_math = formulas(extract_html(html, "", ExtractConfig(math=True))[0])
        without = formulas(extract_html(html, "", ExtractConfig(math=False))[0])
        for kind, idx in (("inline", 0), ("display", 1)):
            for tex in want[kind]:
                total += 1
                kept_with += squash(tex) in with_math[idx]
                kept_without += squash(tex) in without[idx]
    assert kept_with == total
    assert kept_without < total / 2


def test_page_without_math_is_not_touched():
    html = "<html><body><p>Prices are $5 and $10 today; see f(x) and [1].</p></body></html>"
    out = preserve_math(html)
    assert out.formulas == 0 and out.html == html


def test_presentation_mathml_conversion():
    from lxml import etree

    el = etree.fromstring("<math><msubsup><mo>∑</mo><mrow><mi>i</mi><mo>=</mo><mn>1</mn></mrow><mi>n</mi></msubsup>"
                          "<msup><mi>x</mi><mi>i</mi></msup><mo>≠</mo><mi>α</mi></math>")
    assert squash(mathml_to_latex(el)) == squash(r"\sum_{i=1}^n x^i \neq \alpha")


def test_extract_record_counts_formulas():
    body = (FIX / "katex.html").read_bytes()
    doc = extract_record(RawRecord("f.warc.gz", 0, "<urn:uuid:k>", "http://m.test/k", None, 200, "text/html", body))
    assert doc.meta["math_formulas"] == 2
    assert "$$e^{i\\pi} + 1 = 0$$" in doc.text


def test_extractor_choice_is_validated():
    with pytest.raises(ValueError, match="extractor"):
        ExtractConfig(extractor="lynx")


# the marker search before the lower-casing speed-up: re.IGNORECASE on the raw page
_MARKERS_IGNORECASE = re.compile(
    r"math/tex|<math[\s>]|katex|mwe-math|class=\"[^\"]*\b(?:math|tex|latex)\b|\\\(|\\\[|alt=\"[^\"]*\\[a-zA-Z]", re.I)
_MARKER_PIECES = ["math", "MATH", "Math", "/tex", "TeX", "<", ">", " ", "\n", "katex", "KaTeX", "mwe-", "class=\"", "alt=\"",
                  "\"", "\\", "(", "[", "la", "LA", "x", "-", "é", "İ", "text", "a", "Z"]


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(st.sampled_from(_MARKER_PIECES), max_size=25).map("".join))
def test_math_marker_search_matches_the_case_insensitive_regex(html):
    from stepcrawl.extractors.math import has_math_markers

    assert has_math_markers(html) == (_MARKERS_IGNORECASE.search(html) is not None)


def test_math_marker_search_on_real_fixture_pages():
    from stepcrawl.extractors.math import has_math_markers

    pages = sorted(Path(__file__).parent.glob("fixtures/**/*.html"))
    found = []
    for p in pages:
        html = p.read_text(encoding="utf-8", errors="replace")
        found.append(has_math_markers(html))
        assert found[-1] == (_MARKERS_IGNORECASE.search(html) is not None), p.name
    assert len(pages) >= 15 and 0 < sum(found) < len(pages)  # math pages and plain pages both seen
