#!/bin/bash
# faceswap-healthcheck [PATH] [PORT]
#
# A container health check that needs no curl: one HTTP/1.0 GET over bash's /dev/tcp to
# 127.0.0.1, healthy only on status 200. PATH defaults to /readyz (the gateway's readiness);
# PORT defaults to the port of $GATEWAY_BIND, else 8080. The simulator uses
# `faceswap-healthcheck /sim/health 9090`.
set -euo pipefail

path=${1:-/readyz}
bind=${GATEWAY_BIND:-0.0.0.0:8080}
port=${2:-${bind##*:}}

if ! { exec 3<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null; then
  echo "unhealthy: nothing answers on 127.0.0.1:${port}" >&2
  exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status=
IFS= read -r -t 5 status <&3 || true
exec 3<&-
case $status in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "unhealthy: GET 127.0.0.1:${port}${path} -> ${status:-no answer}" >&2; exit 1 ;;
esac
