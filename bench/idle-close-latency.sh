#!/usr/bin/env bash
# Measures, with the gateway's default worker settings (GATEWAY_WORKER_TICK_MS=1000):
# - the time from a session's idle deadline to its close upstream (min/avg/max over N sessions);
# - the create path's crash window: from the upstream create's answer to the commit that records
#   its id (p50/p99/max), the only time a crash would leave an upstream session unknown to us.
#   bench/idle-close-latency.sh [N]        (CARGO_PROFILE=dev for a debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
eval "$(scripts/dev-services.sh)"
profile=${CARGO_PROFILE:-release}
cargo build --locked --profile "$profile" -q -p faceswap-gateway -p faceswap-sim
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")
log=$(mktemp)
db=faceswap_bench_idle
psql "$DATABASE_URL" -qc "drop database if exists $db" && psql "$DATABASE_URL" -qc "create database $db"
export DATABASE_URL="${DATABASE_URL%/*}/$db"
export GATEWAY_BIND=127.0.0.1:18080 GATEWAY_REDIS_PREFIX="bench:$$:"
export UPSTREAM_BASE_URL=http://127.0.0.1:19090 UPSTREAM_CLIENT_ID=sim-client UPSTREAM_CLIENT_SECRET=sim-secret
export RUST_LOG=warn
"$bin/faceswap-sim" --bind 127.0.0.1:19090 --max-open-sessions 1000 >/dev/null 2>&1 &
sim=$!
"$bin/faceswap-gateway" migrate >/dev/null
tenant=$("$bin/faceswap-gateway" tenant create --name bench --max-concurrent-sessions "$n" --idle-timeout-seconds 2)
RUST_LOG=warn,faceswap_gateway::service::live=debug GATEWAY_LOG_FORMAT=json \
  "$bin/faceswap-gateway" serve >/dev/null 2>"$log" &
gw=$!
trap 'kill $gw $sim 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do curl -fs "http://$GATEWAY_BIND/readyz" >/dev/null && break; sleep 0.1; done
id=$(sed -n 's/.*"client_id": "\(.*\)".*/\1/p' <<<"$tenant")
secret=$(sed -n 's/.*"client_secret": "\(.*\)".*/\1/p' <<<"$tenant")
token=$(curl -s -XPOST "http://$GATEWAY_BIND/api/open/v3/getToken" -H 'content-type: application/json' \
  -d "{\"clientId\":\"$id\",\"clientSecret\":\"$secret\"}" | sed 's/.*"token":"\([^"]*\)".*/\1/')
for _ in $(seq 1 "$n"); do
  curl -s -XPOST "http://$GATEWAY_BIND/api/open/v3/faceswap/live/create" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d '{"sourceImage":[{"path":"https://images.example/a.jpg","opts":"1,2:3,4:5,6:7,8"}]}' >/dev/null
  sleep 0.$((RANDOM % 5))
done
for _ in $(seq 1 100); do
  open=$(psql "$DATABASE_URL" -qtAc "select count(*) from sessions where state <> 'closed'")
  [ "$open" = 0 ] && break
  sleep 0.2
done
psql "$DATABASE_URL" -qtAc "
  select format('%s sessions closed as idle; deadline -> closed upstream: min %s ms, avg %s ms, max %s ms',
    count(*),
    round(min(ms)), round(avg(ms)), round(max(ms)))
  from (select extract(epoch from closed_at - (last_activity_at + interval '2 seconds')) * 1000 as ms
        from sessions where close_reason = 'idle') d"
curl -s http://127.0.0.1:19090/sim/stats |
  python3 -c 'import json,sys; print("upstream sessions still open:", len(json.load(sys.stdin)["open_sessions"]))'
python3 - "$log" <<'PY'
import json, sys
w = sorted(json.loads(l)["window_us"] for l in open(sys.argv[1]) if '"window_us"' in l)
if w:
    q = lambda p: w[min(len(w) - 1, int(p * len(w)))]
    print(f"crash window over {len(w)} creates: p50 {q(0.5)/1000:.2f} ms, p99 {q(0.99)/1000:.2f} ms, max {w[-1]/1000:.2f} ms")
PY
