"""Math-preserving HTML pre-pass: every formula becomes LaTeX text before the extractor runs.

HTML extractors keep text, and the web carries math in forms that are not text (or that the
extractor throws away as boilerplate): trafilatura keeps a Sphinx page's inline ``\\(…\\)`` but
drops every display ``<div class="math">``, and it loses MathJax ``<script type="math/tex">``,
KaTeX and MathML entirely. OpenWebMath (Paster et al., 2023) and MegaMath (Zhou et al., 2025)
solve this the same way: find each math element in the DOM, recover its TeX source, and put it
back as delimited text so the extractor keeps it. This module does that with lxml (the forms
and their precedence follow those papers' descriptions; the code is ours):

=============================================  =================================================
form                                           TeX taken from
=============================================  =================================================
MathJax 2 ``<script type="math/tex">``         the script text (``; mode=display`` → display);
                                               rendered ``MathJax*`` siblings are removed
KaTeX ``<span class="katex">``                 ``<annotation encoding="application/x-tex">``
                                               (``katex-display`` ancestor → display)
MathML ``<math>``                              ``alttext``, else a TeX ``<annotation>``, else a
                                               conversion of simple presentation MathML
                                               (:func:`mathml_to_latex`); ``display="block"``
Wikipedia ``mwe-math-element``                 its MathML/``<img>`` alt, once (it carries both)
``<img>`` with TeX in ``alt``/``title``        Sphinx imgmath (``class="math"``), Wikipedia
                                               ``mwe-math-fallback-image-*``, ``latex``/``tex``
                                               classes, or an alt that is clearly TeX
``\\(…\\)`` / ``\\[…\\]`` in text                  converted to ``$…$`` / ``$$…$$`` (not inside
                                               ``code``/``pre``/``script``/``style``)
``$…$`` / ``$$…$$`` already in text            kept as is (nothing to do: extractors keep text)
=============================================  =================================================

Inline formulas become ``$…$`` text in place; display formulas become their own ``<p>$$…$$</p>``
block, since extractors keep paragraphs but drop bare ``<div>``\\ s of symbols. A page without
any math marker is not parsed at all (one regex search), so plain pages cost nothing extra.
"""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass

# one search over the raw HTML decides whether the DOM pass runs at all. It runs on the
# lower-cased page without re.IGNORECASE: the same matches (the markers are ASCII) for ~4× less
# CPU on 600 real pages (with the flag, re folds case at every position). On pages without
# math (nearly all) the case-folding search cost as much as resiliparse's whole extraction.
_MARKERS = re.compile(
    r"math/tex|<math[\s>]|katex|mwe-math|class=\"[^\"]*\b(?:math|tex|latex)\b|\\\(|\\\[|alt=\"[^\"]*\\[a-z]",
)
_TEX_ANNOTATIONS = ("application/x-tex", "tex", "latex", "text/x-tex", "application/x-latex")
_SKIP_TEXT = {"code", "pre", "script", "style", "textarea", "kbd", "samp", "tt", "var"}
_INLINE_DELIMS = re.compile(r"\\\((.+?)\\\)", re.S)
_DISPLAY_DELIMS = re.compile(r"\\\[(.+?)\\\]", re.S)
# an img alt/title is TeX when it is $-delimited or uses a TeX command / braces with ^ or _
_TEXISH = re.compile(r"^\s*\$.*\$\s*$|\\[A-Za-z]+|[\^_]\{", re.S)
_IMG_MATH_CLASS = re.compile(r"\b(?:math|tex|latex|mwe-math-fallback-image[\w-]*|equation|formula)\b", re.I)


@dataclass
class MathResult:
    html: str
    formulas: int  # formulas turned into LaTeX text (0: page untouched)
    tree: object | None = None  # the rewritten lxml tree (trafilatura takes it without re-parsing)


def has_math_markers(html: str) -> bool:
    if "\\(" in html or "\\[" in html:  # the TeX delimiters: no need to lower-case the page
        return True
    return _MARKERS.search(html.lower()) is not None


def _clean_tex(tex: str) -> str:
    tex = htmllib.unescape(tex).strip()
    # a TeX source that already carries its delimiters
    for a, b in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if len(tex) > len(a) + len(b) and tex.startswith(a) and tex.endswith(b):
            tex = tex[len(a): -len(b)].strip()
            break
    # Wikipedia wraps everything in {\displaystyle …}
    m = re.fullmatch(r"\{\\(?:display|text)style\s*(.*)\}", tex, re.S)
    if m:
        tex = m.group(1).strip()
    return " ".join(tex.split()) if "\n" not in tex else tex.strip()


def _delimited(tex: str, display: bool) -> str:
    return f"$${tex}$$" if display else f"${tex}$"


def _classes(el) -> str:
    return el.get("class") or ""


def _replace(el, text: str, display: bool) -> None:
    """Put ``text`` where ``el`` was (keeping its tail); display math as its own paragraph."""
    from lxml import etree

    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if display:
        new = etree.Element("p")
        new.text = text
        new.tail = tail
        parent.replace(el, new)
        return
    prev = el.getprevious()
    joined = text + (tail or "")
    if prev is not None:
        prev.tail = (prev.tail or "") + joined
    else:
        parent.text = (parent.text or "") + joined
    parent.remove(el)


def _tex_annotation(el) -> str | None:
    for ann in el.iter("annotation", "{*}annotation"):
        if (ann.get("encoding") or "").lower() in _TEX_ANNOTATIONS and (ann.text or "").strip():
            return ann.text
    return None


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def mathml_tex(el) -> str | None:
    """TeX of a ``<math>`` element: alttext, a TeX annotation, or a conversion."""
    alt = el.get("alttext")
    if alt and alt.strip():
        return alt
    ann = _tex_annotation(el)
    if ann:
        return ann
    tex = mathml_to_latex(el).strip()
    return tex or None


def _process_scripts(root) -> int:
    n = 0
    for el in list(root.iter("script")):
        typ = (el.get("type") or "").lower()
        if not typ.startswith("math/tex"):
            continue
        display = "mode=display" in typ
        tex = _clean_tex(el.text or "")
        # MathJax 2 renders next to the script: drop the preview/rendered copies (their text is
        # glyph soup that would duplicate the formula)
        prev = el.getprevious()
        while prev is not None and re.search(r"\bMathJax", _classes(prev)):
            gone, prev = prev, prev.getprevious()
            _drop_keep_tail(gone)
        if tex:
            _replace(el, _delimited(tex, display), display)
            n += 1
        else:
            _drop_keep_tail(el)
    return n


def _drop_keep_tail(el) -> None:
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail or ""
    prev = el.getprevious()
    if prev is not None:
        prev.tail = (prev.tail or "") + tail
    else:
        parent.text = (parent.text or "") + tail
    parent.remove(el)


def _ancestor_has_class(el, pattern: str) -> bool:
    p = el.getparent()
    while p is not None:
        if re.search(pattern, _classes(p)):
            return True
        p = p.getparent()
    return False


def _process_katex(root) -> int:
    n = 0
    for el in list(root.iter()):
        if el.getparent() is None or not re.search(r"(^|\s)katex(\s|$)", _classes(el)):
            continue
        tex = _tex_annotation(el)
        if tex is None:
            continue
        display = _ancestor_has_class(el, r"\bkatex-display\b")
        outer = el
        parent = el.getparent()
        if display and parent is not None and re.search(r"\bkatex-display\b", _classes(parent)):
            outer = parent
        _replace(outer, _delimited(_clean_tex(tex), display), display)
        n += 1
    return n


def _process_wikipedia(root) -> int:
    n = 0
    for el in list(root.iter()):
        if el.getparent() is None or "mwe-math-element" not in _classes(el):
            continue
        tex = None
        display = False
        for sub in el.iter():
            tag = _local(sub.tag)
            if tag == "math":
                tex = mathml_tex(sub)
                display = display or (sub.get("display") == "block")
            elif tag == "img" and not tex:
                tex = sub.get("alt")
            if "display" in _classes(sub) or "mwe-math-fallback-image-display" in _classes(sub):
                display = True
            if tex:
                break
        if tex:
            _replace(el, _delimited(_clean_tex(tex), display), display)
            n += 1
    return n


def _process_mathml(root) -> int:
    n = 0
    for el in list(root.iter("math", "{*}math")):
        if el.getparent() is None:
            continue
        tex = mathml_tex(el)
        if not tex:
            continue
        display = (el.get("display") or "").lower() == "block" or (el.get("mode") or "").lower() == "display"
        _replace(el, _delimited(_clean_tex(tex), display), display)
        n += 1
    return n


def _process_images(root) -> int:
    n = 0
    for el in list(root.iter("img")):
        if el.getparent() is None:
            continue
        alt = el.get("alt") or el.get("title") or ""
        if not alt.strip():
            continue
        cls = _classes(el)
        if not (_IMG_MATH_CLASS.search(cls) or _TEXISH.search(alt)):
            continue
        if not _TEXISH.search(alt) and not re.search(r"\b(?:math|tex|latex|mwe-math)", cls, re.I):
            continue
        display = bool(re.search(r"display|block", cls, re.I)) or _ancestor_has_class(el, r"(^|\s)math(\s|$)") \
            or alt.strip().startswith(("$$", "\\["))
        # Sphinx imgmath display: <div class="math"><p><img …></p></div>: replace the whole block
        outer = el
        if display:
            p = el.getparent()
            while p is not None and _local(p.tag) in ("p", "div", "span") and len(p) == 1 and not (p.text or "").strip():
                outer, p = p, p.getparent()
                if re.search(r"(^|\s)math(\s|$)", _classes(outer)):
                    break
        _replace(outer, _delimited(_clean_tex(alt), display), display)
        n += 1
    return n


def _in_skipped(el) -> bool:
    while el is not None:
        if _local(el.tag) in _SKIP_TEXT:
            return True
        el = el.getparent()
    return False


def _process_text_delims(root) -> int:
    """``\\(…\\)`` → ``$…$`` and ``\\[…\\]`` → ``$$…$$`` in text (Sphinx/MathJax source form); a
    block holding only one display formula becomes a ``<p>`` (extractors drop symbol divs)."""
    n = 0
    for el in list(root.iter()):
        if not isinstance(el.tag, str):
            continue
        for attr in ("text", "tail"):
            value = getattr(el, attr)
            if not value or "\\" not in value:
                continue
            if _in_skipped(el if attr == "text" else el.getparent()):
                continue
            new, k1 = _DISPLAY_DELIMS.subn(lambda m: "$$" + m.group(1).strip() + "$$", value)
            new, k2 = _INLINE_DELIMS.subn(lambda m: "$" + m.group(1).strip() + "$", new)
            if k1 or k2:
                setattr(el, attr, new)
                n += k1 + k2
                if attr == "text" and k1 and _local(el.tag) in ("div", "span") and len(el) == 0 \
                        and new.strip().startswith("$$") and new.strip().endswith("$$"):
                    el.tag = "p"
                    el.attrib.pop("class", None)
    return n


def preserve_math(html: str, parse=None) -> MathResult:
    """Rewrite ``html`` so that every formula is LaTeX text (see the module docstring).

    ``parse`` builds the lxml tree (default ``lxml.html.document_fromstring``; trafilatura's
    extractor passes its own ``load_html`` so the tree is what trafilatura would have built)."""
    if not has_math_markers(html):
        return MathResult(html, 0)
    import lxml.html

    try:
        root = parse(html) if parse is not None else lxml.html.document_fromstring(html)
    except Exception:  # unparseable here: let the extractor report it
        return MathResult(html, 0)
    if root is None:
        return MathResult(html, 0)
    n = _process_scripts(root)
    n += _process_katex(root)
    n += _process_wikipedia(root)
    n += _process_mathml(root)
    n += _process_images(root)
    n += _process_text_delims(root)
    if n == 0:
        return MathResult(html, 0)
    out = lxml.html.tostring(root, encoding="unicode")
    return MathResult(out, n, root)


# ----------------------------------------------------------------------- MathML → LaTeX

_SYMBOLS = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon", "ϵ": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ι": r"\iota", "κ": r"\kappa", "λ": r"\lambda", "μ": r"\mu",
    "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma", "τ": r"\tau", "υ": r"\upsilon",
    "φ": r"\phi", "ϕ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega", "Γ": r"\Gamma", "Δ": r"\Delta",
    "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi", "Π": r"\Pi", "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi",
    "Ω": r"\Omega", "∑": r"\sum", "∏": r"\prod", "∫": r"\int", "∮": r"\oint", "∞": r"\infty", "∂": r"\partial",
    "∇": r"\nabla", "±": r"\pm", "∓": r"\mp", "×": r"\times", "·": r"\cdot", "⋅": r"\cdot", "÷": r"\div",
    "≤": r"\leq", "≥": r"\geq", "≠": r"\neq", "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim", "∝": r"\propto",
    "→": r"\to", "←": r"\leftarrow", "⇒": r"\Rightarrow", "⇔": r"\Leftrightarrow", "↦": r"\mapsto",
    "∈": r"\in", "∉": r"\notin", "⊂": r"\subset", "⊆": r"\subseteq", "∪": r"\cup", "∩": r"\cap",
    "∅": r"\emptyset", "∀": r"\forall", "∃": r"\exists", "¬": r"\neg", "∧": r"\wedge", "∨": r"\vee",
    "…": r"\ldots", "⋯": r"\cdots", "′": "'", "−": "-", "\u2061": "", "\u2062": "", "\u2063": ",",
}
_FUNCS = {"sin", "cos", "tan", "log", "ln", "exp", "lim", "max", "min", "det", "sup", "inf", "arg"}


def _sym(text: str) -> str:
    text = " ".join((text or "").split())
    if text in _FUNCS:
        return "\\" + text
    out = "".join(_SYMBOLS.get(c, c) + (" " if c in _SYMBOLS and _SYMBOLS[c].startswith("\\") else "") for c in text)
    return out.strip()


def _group(s: str) -> str:
    return s if len(s) == 1 or re.fullmatch(r"\\[A-Za-z]+", s) else "{" + s + "}"


def mathml_to_latex(el) -> str:
    """LaTeX for simple presentation MathML (mi/mn/mo/mrow/msup/msub/mfrac/msqrt/…); the rare
    constructs it does not know contribute their children in order."""
    tag = _local(el.tag)
    kids = [k for k in el if isinstance(k.tag, str)]
    c = [mathml_to_latex(k) for k in kids]
    if tag in ("mi", "mn", "mo", "ms"):
        return _sym(el.text or "")
    if tag == "mtext":
        t = " ".join((el.text or "").split())
        return f"\\text{{{t}}}" if t else ""
    if tag == "mspace":
        return " "
    if tag == "semantics":
        return c[0] if c else ""
    if tag in ("annotation", "annotation-xml"):
        return ""
    if tag == "msup" and len(c) == 2:
        return f"{_group(c[0])}^{_group(c[1])}"
    if tag == "msub" and len(c) == 2:
        return f"{_group(c[0])}_{_group(c[1])}"
    if tag == "msubsup" and len(c) == 3:
        return f"{_group(c[0])}_{_group(c[1])}^{_group(c[2])}"
    if tag == "mfrac" and len(c) == 2:
        return f"\\frac{{{c[0]}}}{{{c[1]}}}"
    if tag == "msqrt":
        return f"\\sqrt{{{' '.join(c)}}}"
    if tag == "mroot" and len(c) == 2:
        return f"\\sqrt[{c[1]}]{{{c[0]}}}"
    if tag == "mover" and len(c) == 2:
        accents = {"^": "hat", "¯": "bar", "→": "vec", "~": "tilde", "˙": "dot", "‾": "overline"}
        acc = accents.get((kids[1].text or "").strip())
        return f"\\{acc}{{{c[0]}}}" if acc else f"\\overset{{{c[1]}}}{{{c[0]}}}"
    if tag == "munder" and len(c) == 2:
        return f"{_group(c[0])}_{_group(c[1])}"
    if tag == "munderover" and len(c) == 3:
        return f"{_group(c[0])}_{_group(c[1])}^{_group(c[2])}"
    if tag == "mfenced":
        return (el.get("open", "(") or "") + ",".join(c) + (el.get("close", ")") or "")
    if tag == "mtable":
        return "\\begin{matrix}" + " \\\\ ".join(c) + "\\end{matrix}"
    if tag == "mtr":
        return " & ".join(c)
    return " ".join(x for x in c if x).replace("  ", " ")
