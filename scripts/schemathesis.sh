#!/usr/bin/env bash
# Runs schemathesis (from PyPI, installed once into target/tools/) against a live gateway: its
# own fresh database, the simulator as upstream, a tenant token for the tenant routes and an
# admin token for /admin. Checks: no 5xx, and every answer matches its schema in
# openapi/openapi.json. Exits non-zero on any failure. Reports land in target/schemathesis/.
# Bounded: ST_MAX_EXAMPLES (default 20) cases per operation, ST_MAX_TIME (default 60) seconds
# per pass; ST_SEED (default 1) picks the generated data.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=target/tools/schemathesis-venv
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi

eval "$(scripts/dev-services.sh)"
cargo build --locked -q -p faceswap-gateway -p faceswap-sim
bin=target/debug
out=target/schemathesis
rm -rf "$out" && mkdir -p "$out"

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url name
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "schemathesis: $2 did not come up ($1)" >&2
  return 1
}

db="faceswap_st_$$"
# The run's own database is dropped from the server's default one (not from itself).
server_url="$DATABASE_URL"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$server_url" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
psql "$server_url" -qc "create database $db" >/dev/null
export DATABASE_URL="${DATABASE_URL%/*}/$db" REDIS_URL
export GATEWAY_REDIS_PREFIX="st$$:"

sim_port=$(free_port)
"$bin/faceswap-sim" --bind "127.0.0.1:$sim_port" --client-id sim-client --client-secret sim-secret \
  >"$out/sim.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$sim_port/sim/stats" simulator

admin_token="st-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
gw_port=$(free_port)
gw="http://127.0.0.1:$gw_port"
GATEWAY_BIND="127.0.0.1:$gw_port" UPSTREAM_BASE_URL="http://127.0.0.1:$sim_port" \
  UPSTREAM_CLIENT_ID=sim-client UPSTREAM_CLIENT_SECRET=sim-secret \
  UPSTREAM_TIMEOUT_MS=5000 GATEWAY_ADMIN_TOKENS="schemathesis:$admin_token" \
  OBJECT_STORE_URL="file://$PWD/$out/archive" RUST_LOG=warn \
  "$bin/faceswap-gateway" serve >"$out/gateway.log" 2>&1 &
pids+=($!)
wait_http "$gw/readyz" gateway

tenant=$(curl -fsS -X POST "$gw/admin/tenants" -H "authorization: Bearer $admin_token" \
  -H 'content-type: application/json' -d '{"name": "schemathesis", "max_concurrent_sessions": 50}')
json() { "$venv/bin/python" -c "import json,sys; print(json.load(sys.stdin)$1)"; }
client_id=$(json "['data']['client_id']" <<<"$tenant")
client_secret=$(json "['data']['client_secret']" <<<"$tenant")
token=$(curl -fsS -X POST "$gw/api/open/v3/getToken" -H 'content-type: application/json' \
  -d "{\"clientId\":\"$client_id\",\"clientSecret\":\"$client_secret\"}" | json "['token']")

st() { # pass-name, then extra st arguments
  local name=$1
  shift
  echo "schemathesis: pass $name" >&2
  # From target/tools, so that its crash cache (for `st replay`) stays out of the tree.
  (cd target/tools && "$root/$venv/bin/st" run "$root/openapi/openapi.json" --url "$gw" \
    --checks not_a_server_error,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${ST_MAX_EXAMPLES:-20}" --max-time "${ST_MAX_TIME:-60}" \
    --generation-database "$root/target/tools/schemathesis-examples" \
    --request-timeout 10 --workers 2 --seed "${ST_SEED:-1}" --suppress-health-check all \
    --report junit --report-junit-path "$root/$out/$name.xml" "$@")
}
status=0
# The event stream never ends by design; it has its own tests.
st tenant -H "Authorization: Bearer $token" --exclude-path-regex '^/admin/' \
  --exclude-path /v1/events || status=1
st admin -H "Authorization: Bearer $admin_token" --include-path-regex '^/admin/' || status=1
exit $status
