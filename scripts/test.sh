#!/usr/bin/env bash
# The whole test suite: formatting, lints, host and SDK tests (unit, doc, integration against
# the real binary and real components), and the example jobs' own native unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
target="${CARGO_TARGET_DIR:-$PWD/target}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
(cd guest-examples && cargo fmt --all -- --check)
(cd tests/guests && cargo fmt --all -- --check)

if command -v node >/dev/null 2>&1; then
    echo "== web UI: node --check"
    node --check web-ui/app.js
    node --check tests/ui/browser.mjs
fi

echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
for guests in guest-examples tests/guests; do
    cargo clippy --release --target wasm32-wasip2 --manifest-path "$guests/Cargo.toml" \
        --target-dir "$target/wasm" -- -D warnings
done

echo "== host and SDK tests"
cargo test --release --workspace

echo "== example jobs' unit tests (native, through the SDK's test harness)"
cargo test --release --manifest-path guest-examples/Cargo.toml --target-dir "$target/guest-native"
