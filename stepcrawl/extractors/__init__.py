"""HTML main-content extractors (one module per library) and the math-preserving pre-pass.

``stepcrawl.extract.extract_html`` picks one by ``ExtractConfig.extractor``:

- ``trafilatura`` (default): :func:`stepcrawl.extractors.html.trafilatura_text`;
- ``resiliparse``: :func:`stepcrawl.extractors.html.resiliparse_text` (DCLM's extractor, ~10-20×
  faster; agreement with trafilatura measured in docs/BENCHMARKS.md);

both after :func:`stepcrawl.extractors.math.preserve_math` when ``ExtractConfig.math`` is on.
"""

EXTRACTORS = ("trafilatura", "resiliparse")
