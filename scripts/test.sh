#!/usr/bin/env bash
# Runs every test of the workspace against real services: starts PostgreSQL and Redis when they
# are not running (scripts/dev-services.sh), then the test suites.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p faceswap-sim`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test: cargo is not installed; install the Rust toolchain with rustup first" >&2
  exit 1
fi

scripts/ensure-build-tools.sh
eval "$(scripts/dev-services.sh)"
export DATABASE_URL REDIS_URL
scripts/ensure-chromium.sh # headless browser for the Swagger UI test
eval "$(scripts/s3-server.sh)" # S3-compatible server for the archive tests; exports AWS_*

if [ "$#" -eq 0 ]; then
  set -- --workspace
fi
# cargo prints one "test result" line per test binary; the sum, on one last line, says what ran.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo test --locked "$@" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
