#!/usr/bin/env bash
# Installs the SDK's dev dependencies (npm ci), builds it, checks that src/generated/openapi.ts
# matches the server's /v1/openapi.json, and runs its tests (node --test) against a real
# `baton` server: $BATON_BIN, else the workspace's target/debug/baton (built with
# `cargo build -p baton-cli` if missing). Arguments are passed to node --test.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
if [[ -z "${BATON_BIN:-}" ]]; then
    export BATON_BIN="$workspace/target/debug/baton"
    if [[ ! -x "$BATON_BIN" ]]; then
        (cd "$workspace" && cargo build -p baton-cli)
    fi
fi

cd "$here"
npm ci --silent --no-audit --no-fund
npm run --silent build
npm run --silent check-openapi
node --test --test-timeout=60000 "$@" test/*.test.mjs
