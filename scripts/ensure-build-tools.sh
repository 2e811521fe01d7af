#!/usr/bin/env bash
# Installs Debian's build-essential when the C compiler or make is missing: linking needs `cc`,
# and the gateway's allocator (jemalloc) and TLS library (aws-lc) compile C code.
set -euo pipefail

if command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; then
  exit 0
fi
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
echo "build-tools: installing build-essential (cc and make)" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >&2
