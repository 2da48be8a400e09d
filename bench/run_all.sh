#!/usr/bin/env bash
# Run every benchmark once (each prints its own side-by-side table with ratios).
# Numbers are noisy on shared machines: compare the ratios within one run, not seconds across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for b in crawl curate warc_read minhash tokenize_throughput mix loader model parallel beam books; do
  if [ -f "bench/$b.py" ]; then
    echo "=== bench/$b.py"
    "$PY" "bench/$b.py"
  fi
done
