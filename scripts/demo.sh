#!/usr/bin/env bash
# The end-to-end demo on the embedded sample, offline: serve the bundled site on 127.0.0.1,
# crawl it, curate, ingest code/commits/PRs/traces, tokenize, plan and build the tiny
# curriculum's mixes, and train the tiny model for a few steps.
# Everything goes to $DEMO_DIR (default data/demo), which is rebuilt from scratch each run.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DEMO_DIR:-data/demo}
STEPS=${DEMO_STEPS:-}  # empty: the whole tiny curriculum
rm -rf "$D"
mkdir -p "$D"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# Exit 1 = done, but some input was malformed and dropped (listed as FILE:LINE); 2 = refused.
# The GitHub sample holds one truncated record on purpose, so its ingest steps exit 1.
dropped_ok() { "$@" || [ $? -eq 1 ]; }

step "1/8 serve the bundled sample site on 127.0.0.1"
stepcrawl serve-sample --host 127.0.0.1 --port 0 --url-file "$D/site-url" --access-log "$D/access.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$D/site-url" ] && break; sleep 0.1; done
URL=$(cat "$D/site-url")
echo "serving at $URL"

step "2/8 crawl it (robots.txt, politeness, priority frontier, WARC)"
stepcrawl crawl --seed "$URL/" --out "$D/crawl" --allow-private --per-host-delay 0 \
  --max-pages 1000 --no-progress
kill $SERVER 2>/dev/null || true
ls -l "$D"/crawl/warc/

step "3/8 curate: extract → language ID → quality tiers → dedup → decontam"
stepcrawl train-quality --positive samples/quality/positive.jsonl \
  --negative samples/quality/negative.jsonl --bucket 50000 --out "$D/models/quality.bin"
# the math and books sources: a fastText math classifier (~5 s) and an extra input with four
# real SciPy math pages and a real PDF manual → $D/corpus/math/ and $D/corpus/books/
stepcrawl train-math --math samples/math/math.jsonl --other samples/math/other.jsonl --out "$D/models/math.bin" > /dev/null
stepcrawl curate "$D/crawl" samples/math/demo.warc.gz --out "$D/corpus" --quality-model "$D/models/quality.bin" \
  --math-model "$D/models/math.bin" --cluster --cluster-k 16 --no-progress
stepcrawl stats "$D/corpus" --plot "$D/funnel.png"

step "4/8 mid-training sources: this repository's code and history, sample PRs and traces"
stepcrawl ingest code . --repo stepcrawl/stepcrawl --out "$D/corpus/code"
if [ -e .git ]; then
  stepcrawl ingest git . --repo stepcrawl/stepcrawl --out "$D/corpus/commits"
else
  echo "(no .git here: skipping the commit history)"
fi
dropped_ok stepcrawl ingest issues samples/github/threads.jsonl --swebench samples/swebench_tasks.jsonl --out "$D/corpus/issues"
dropped_ok stepcrawl ingest pr-dialogue samples/github/threads.jsonl --swebench samples/swebench_tasks.jsonl --policy mid --out "$D/corpus/pr_dialogue"
dropped_ok stepcrawl ingest tool-use samples/traces/tool_use.jsonl samples/traces/formats --out "$D/corpus/tool_use"  # formats/: ShareGPT, Hermes, Anthropic, SWE-agent, OpenHands, ...
dropped_ok stepcrawl ingest reasoning samples/traces/reasoning.jsonl samples/traces/reasoning_formats.jsonl --out "$D/corpus/reasoning"

step "5/8 tokenizer: train sentencepiece BPE, encode every source into Megatron shards"
stepcrawl train-tokenizer "$D/corpus" --vocab-size 4096 --out "$D/tokenizer"
stepcrawl tokenize "$D/corpus" --tokenizer "$D/tokenizer" --out "$D/tokens"

step "6/8 plan the tiny curriculum against the token supply"
stepcrawl plan --curriculum curricula/tiny.yaml --tokens "$D/tokens"
# the full curriculum against the same supply: math and books have real (tiny) supply rows;
# 17.6T tokens of course fall short of a demo corpus, so plan says so and exits 2 (build-mix
# would refuse it) — expected here; any other status is a failure. Shown: the plan-wide table.
plan_rc=0
stepcrawl plan --curriculum curricula/full.yaml --tokens "$D/tokens" > "$D/plan-full.txt" 2> "$D/plan-full.err" || plan_rc=$?
[ "$plan_rc" -eq 2 ] || { cat "$D/plan-full.err" >&2; echo "plan full.yaml: exit $plan_rc, expected 2 (shortfall)" >&2; exit 1; }
sed -n '/whole run, per source/,$p' "$D/plan-full.txt"
echo "(exit 2 as expected: $(grep -c '^error:' "$D/plan-full.txt") shortfalls)"

step "7/8 build the mixes (packed sequences, lineage, contamination report)"
stepcrawl build-mix --curriculum curricula/tiny.yaml --stage pretrain --tokens "$D/tokens" --out "$D/mix/pretrain"
stepcrawl build-mix --curriculum curricula/tiny.yaml --stage mid --tokens "$D/tokens" --out "$D/mix/mid"
stepcrawl lineage --mix "$D/mix/mid" --sequence 0

step "8/8 train the tiny model on the mix"
train --curriculum curricula/tiny.yaml --mix "$D/mix" --model tiny --out "$D/run" ${STEPS:+--max-steps "$STEPS"}
# the trained weights in the released Step 3.5 Flash layout (what transformers / vLLM read), checked back
python -m model.hf export "$D/run" --out "$D/hf" --overwrite --no-progress
python -m model.hf inspect "$D/hf"

printf '\n\033[1mdone.\033[0m WARC: %s/crawl/warc  corpus: %s/corpus  tokens: %s/tokens  mix: %s/mix  run: %s/run  HF export: %s/hf\n' "$D" "$D" "$D" "$D" "$D" "$D"
