#!/usr/bin/env bash
# Quick start: PostgreSQL and Redis (started or installed if needed), the upstream simulator on
# 127.0.0.1:9090, and the gateway on 127.0.0.1:8080 with a demo tenant. Ctrl-C stops both.
# Set CARGO_PROFILE=release for an optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-build-tools.sh
eval "$(scripts/dev-services.sh)"
profile=${CARGO_PROFILE:-dev}
cargo build --locked --profile "$profile" -p faceswap-gateway -p faceswap-sim
bin=target/$([ "$profile" = dev ] && echo debug || echo "$profile")

# A database of its own, so the quick start never mixes with anything else on the server.
if command -v psql >/dev/null 2>&1; then
  psql "$DATABASE_URL" -qtc "select 1 from pg_database where datname = 'faceswap'" | grep -q 1 \
    || psql "$DATABASE_URL" -qc "create database faceswap"
  DATABASE_URL="${DATABASE_URL%/*}/faceswap"
fi

export DATABASE_URL REDIS_URL
export SIM_BIND=${SIM_BIND:-127.0.0.1:9090}
export GATEWAY_BIND=${GATEWAY_BIND:-127.0.0.1:8080}
export UPSTREAM_BASE_URL="http://${SIM_BIND}"
export UPSTREAM_CLIENT_ID=sim-client UPSTREAM_CLIENT_SECRET=sim-secret
# The simulator serves its generated resources on loopback: let the archiver fetch them.
export GATEWAY_SSRF_ALLOW=${GATEWAY_SSRF_ALLOW:-127.0.0.1/32}

"$bin/faceswap-sim" --bind "$SIM_BIND" --client-id "$UPSTREAM_CLIENT_ID" \
  --client-secret "$UPSTREAM_CLIENT_SECRET" &
sim_pid=$!
trap 'kill "$sim_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/${SIM_BIND%:*}/${SIM_BIND##*:}") 2>/dev/null && break
  sleep 0.1
done

"$bin/faceswap-gateway" migrate >/dev/null
tenant=$("$bin/faceswap-gateway" tenant create --name demo --max-concurrent-sessions 5)
client_id=$(sed -n 's/.*"client_id": "\(.*\)".*/\1/p' <<<"$tenant")
client_secret=$(sed -n 's/.*"client_secret": "\(.*\)".*/\1/p' <<<"$tenant")
gw="http://${GATEWAY_BIND}"
cat <<EOT

Demo tenant: $tenant

Get a token:
  TOKEN=\$(curl -s -XPOST $gw/api/open/v3/getToken -H 'content-type: application/json' \\
    -d '{"clientId":"$client_id","clientSecret":"$client_secret"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
Detect a face:
  curl -s -XPOST $gw/detect -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d "{\"img\":\"\$(base64 -w0 testdata/face.jpg)\"}"
Create a session:
  curl -s -XPOST $gw/api/open/v3/faceswap/live/create -H "authorization: Bearer \$TOKEN" \\
    -H 'content-type: application/json' \\
    -d '{"sourceImage":[{"path":"https://images.example/face.jpg","opts":"150,170:230,170:190,215:190,255"}]}'

Or open the demo console at $gw/demo with the client id and secret above.
The Rust client's examples: FACESWAP_GATEWAY_URL=$gw FACESWAP_CLIENT_ID=$client_id \
  FACESWAP_CLIENT_SECRET=$client_secret cargo run -p faceswap-client --example seed_flow

EOT
"$bin/faceswap-gateway" serve
