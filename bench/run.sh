#!/usr/bin/env bash
# The benchmark suite, one command: bench/run.sh [faceswap-bench options, e.g. --only 1,3]
# Installs what it needs once (oha from crates.io, nginx and pgbench from Debian, matplotlib
# from PyPI into target/tools/), builds in release mode, starts Postgres/Redis if needed, then
# runs the seven scenarios against the simulator directly, nginx and the gateway, and writes
# docs/benchmarks.md and docs/benchmarks.png. Takes about 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-build-tools.sh

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v pgbench >/dev/null || need_apt+=(postgresql-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bench: installing ${need_apt[*]} from Debian" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q "${need_apt[@]}" >/dev/null
  # The package starts a system nginx on port 80; the bench runs its own.
  $sudo service nginx stop >/dev/null 2>&1 || true
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  echo "bench: installing oha (cargo install, a few minutes once)" >&2
  cargo install --locked -q oha
fi
venv=target/tools/chart-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "matplotlib==3.10.*"
fi

eval "$(scripts/dev-services.sh)"
export DATABASE_URL REDIS_URL
cargo build --locked --release -q -p faceswap-gateway -p faceswap-sim -p faceswap-bench
# 1,000 connections on each side of the footprint and storm scenarios.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

status=0
target/release/faceswap-bench "$@" || status=$?
if [ -f target/bench/results.json ]; then
  "$venv/bin/python" bench/chart.py target/bench/results.json docs/benchmarks.png
fi
exit $status
