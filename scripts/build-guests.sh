#!/usr/bin/env bash
# Builds every guest component (the examples and the test guests) for wasm32-wasip2 into
# ${CARGO_TARGET_DIR:-target}/wasm/wasm32-wasip2/release/. The integration tests do the same.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/wasm"
for manifest in guest-examples/Cargo.toml tests/guests/Cargo.toml; do
    cargo build --release --target wasm32-wasip2 --manifest-path "$manifest" --target-dir "$target"
done
echo "$target/wasm32-wasip2/release"
