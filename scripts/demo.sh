#!/usr/bin/env bash
# Sets everything up, then starts a weir session cluster on embedded defaults (local
# directories under ./weir-data, no external services) with two demo jobs — word count over
# weir's own docs (bounded) and a keyed count over a rate-limited generator (runs until you
# stop it, checkpointing every 5 s) — and prints where to look. Ctrl-C stops the cluster
# (running jobs stop with a savepoint).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p weir-server
guests="$(scripts/build-guests.sh | tail -n 1)"
weir="${CARGO_TARGET_DIR:-$PWD/target}/release/weir"

demo="$PWD/weir-data/demo"
rm -rf "$demo"
mkdir -p "$demo/input"
# Input: weir's own documentation and SDK sources.
cp README.md host/docs/design/*.md sdk/src/*.rs "$demo/input/"

export WEIR_URL="${WEIR_URL:-http://127.0.0.1:8081}"
export WEIR_TOKEN="${WEIR_TOKEN:-weir_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export WEIR_DATA_DIR="$PWD/weir-data/cluster"
export WEIR_REST_ADDRESS="${WEIR_URL#http://}"

log="$PWD/weir-data/serve.log"
echo
echo "== weir serve (data under $WEIR_DATA_DIR, log in $log)"
"$weir" serve > "$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
    curl -sf -o /dev/null "$WEIR_URL/v1/openapi.json" && break
    sleep 0.1
done
head -n 4 "$log"

echo
echo "== weir submit word_count.wasm --parallelism 2 (bounded: finishes in a moment)"
"$weir" submit "$guests/word_count.wasm" --parallelism 2 \
    --arg "input=$demo/input" --arg "output=$demo/word-count"
echo
echo "== weir submit benchmarks.wasm (keyed count, 2,000 records/s, checkpoints every 5 s)"
"$weir" submit "$guests/benchmarks.wasm" --parallelism 2 --checkpoint-interval 5s \
    --arg pipeline=hot-count --arg count=1000000000000 --arg keys=1000 --arg hot=1000 --arg rate=1000
sleep 3
echo
echo "== weir list"
"$weir" list
echo
echo "== the 10 most frequent words in weir's docs (the last update per word is its total)"
cat "$demo"/word-count/part-*.jsonl \
    | sed -E 's/^\{"word":"(.*)","count":([0-9]+)\}$/\2 \1/' \
    | sort -k2,2 -k1,1nr | awk '!seen[$2]++' | sort -k1,1nr | head -n 10 || true

cat <<MSG

Where to look (the cluster runs until Ctrl-C):
  web UI:    $WEIR_URL/#token=$WEIR_TOKEN
  CLI:       export WEIR_URL=$WEIR_URL WEIR_TOKEN=$WEIR_TOKEN
             $weir list | status JOB | savepoint JOB | stop JOB --savepoint | cancel JOB
  REST:      curl -H "Authorization: Bearer \$WEIR_TOKEN" $WEIR_URL/v1/jobs
  OpenAPI:   $WEIR_URL/v1/openapi.json      metrics: $WEIR_URL/metrics (with the token)
  output:    $demo/word-count/part-*.jsonl
  log:       $log
MSG
wait $server
