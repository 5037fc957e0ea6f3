#!/usr/bin/env bash
# Installs what the tests need (idempotently), then checks formatting, lints and runs every
# test against real PostgreSQL 15, 17 and 18, SeaweedFS, sshd, moto and loopback HTTP servers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check" >&2
cargo fmt --check
echo "== cargo clippy" >&2
cargo clippy --all-targets --locked -- -D warnings
echo "== module layers: no import cycle (tests/architecture.rs)" >&2
cargo test --locked --test architecture
echo "== cargo test" >&2
cargo test --locked "$@"
