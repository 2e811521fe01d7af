#!/usr/bin/env bash
# Makes PostgreSQL and Redis available on 127.0.0.1 and prints the URLs to use, as shell
# assignments:  eval "$(scripts/dev-services.sh)"
#
# Services that already answer are used as they are. Otherwise the Debian packages are installed
# when missing and the services started. Set DATABASE_URL / REDIS_URL beforehand to use others.
# Progress goes to stderr; only the assignments go to stdout.
set -euo pipefail

PG_PORT=5432
REDIS_PORT=6379
DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:${PG_PORT}/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}

log() { echo "dev-services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  log "$name did not open port $port"
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_postgres() {
  if port_open "$PG_PORT"; then
    log "PostgreSQL answers on 127.0.0.1:$PG_PORT"
    return
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
  fi
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    local ver
    ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating cluster $ver/main"
    as_root pg_createcluster "$ver" main >&2
  fi
  local ver
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
  wait_port "$PG_PORT" PostgreSQL
  # A fresh Debian cluster asks for a password over TCP; give the postgres role the one that
  # DATABASE_URL carries. Where the cluster trusts local connections this changes nothing.
  as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >&2 || true
}

ensure_redis() {
  if port_open "$REDIS_PORT"; then
    log "Redis answers on 127.0.0.1:$REDIS_PORT"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /tmp/faceswap-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/faceswap-redis --logfile /tmp/faceswap-redis/redis.log >&2
  wait_port "$REDIS_PORT" Redis
}

case "$DATABASE_URL" in *@127.0.0.1:${PG_PORT}/*|*@localhost:${PG_PORT}/*) ensure_postgres ;; esac
case "$REDIS_URL" in redis://127.0.0.1:${REDIS_PORT}*|redis://localhost:${REDIS_PORT}*) ensure_redis ;; esac

echo "export DATABASE_URL=${DATABASE_URL}"
echo "export REDIS_URL=${REDIS_URL}"
