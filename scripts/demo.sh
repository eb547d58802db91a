#!/usr/bin/env bash
# Sets everything up, then runs weir's main example job (word count, parallelism 2) on
# local files: input and output under ./weir-data/demo. No external services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p weir-server
guests="$(scripts/build-guests.sh | tail -n 1)"
weir="${CARGO_TARGET_DIR:-$PWD/target}/release/weir"

demo=weir-data/demo
rm -rf "$demo"
mkdir -p "$demo/input"
# Input: weir's own documentation and SDK sources.
cp README.md host/docs/design/*.md sdk/src/*.rs "$demo/input/"

echo
echo "== weir run word_count.wasm --parallelism 2"
"$weir" run "$guests/word_count.wasm" --parallelism 2 \
    --arg "input=$demo/input" --arg "output=$demo/word-count"

echo
echo "== the 10 most frequent words (the last update per word is its total)"
cat "$demo"/word-count/part-*.jsonl \
    | sed -E 's/^\{"word":"(.*)","count":([0-9]+)\}$/\2 \1/' \
    | sort -k2,2 -k1,1nr | awk '!seen[$2]++' | sort -k1,1nr | head -n 10
echo
echo "Output: $demo/word-count/part-*.jsonl  (one JSON update per line)"
echo "Plan:   $weir plan $guests/word_count.wasm --arg input=x --arg output=y"
echo "Other examples: $guests/windowed_sum.wasm, $guests/fraud_detection.wasm (see README.md)"
