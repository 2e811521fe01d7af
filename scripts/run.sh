#!/usr/bin/env bash
# Quick start: builds and runs the upstream simulator on 127.0.0.1:9090 (account
# sim-client / sim-secret). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release -p faceswap-sim
echo "simulator: http://127.0.0.1:9090  (clientId sim-client, clientSecret sim-secret)"
echo "try:  curl -s -XPOST 127.0.0.1:9090/api/open/v3/getToken -H 'content-type: application/json' -d '{\"clientId\":\"sim-client\",\"clientSecret\":\"sim-secret\"}'"
exec target/release/faceswap-sim --bind "${SIM_BIND:-127.0.0.1:9090}" "$@"
