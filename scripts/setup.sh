#!/usr/bin/env bash
# Installs what weir needs to build and test on a fresh Debian 12 machine with Rust stable:
# the wasm32-wasip2 target (guests are components built by cargo), a C toolchain, RocksDB
# (Debian's librocksdb-dev, linked by the rocksdb crate; libclang for its bindings) and,
# for the checkpoint tests on S3, moto's S3-compatible server from PyPI in a virtualenv
# under ${WEIR_TOOLS:-~/.cache/weir-tools}; for the web UI's browser test, Debian's Chromium
# and Node.js, and playwright-core from npm (it drives the installed Chromium: it downloads
# no browser) under the same directory.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ -e /usr/include/rocksdb/c.h ] || need_apt+=(librocksdb-dev)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The web UI's browser test (tests/cluster.rs) runs Debian's Chromium headless.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
    rustup component add clippy rustfmt
fi

tools="${WEIR_TOOLS:-$HOME/.cache/weir-tools}"
if [ ! -x "$tools/moto/bin/moto_server" ]; then
    echo "setup: installing moto (S3-compatible test server) into $tools/moto"
    rm -rf "$tools/moto"
    python3 -m venv "$tools/moto"
    "$tools/moto/bin/pip" install -q "moto[server]==5.1.*"
fi
# playwright-core only: never the `playwright` package nor `playwright install`, which would
# download a browser of their own; tests/ui/browser.mjs launches /usr/bin/chromium.
if [ ! -f "$tools/playwright/node_modules/playwright-core/package.json" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: no npm, so no playwright-core: the web UI's browser test will fail" >&2
  else
    # Debian 12's own Node.js is 18; playwright-core 1.62 and later need 20.
    spec="playwright-core@1"
    [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || spec="playwright-core@~1.61"
    echo "setup: installing $spec (drives Chromium in the web UI's test) into $tools/playwright"
    mkdir -p "$tools/playwright"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$tools/playwright" --no-audit --no-fund \
        --loglevel=error "$spec"
  fi
fi
