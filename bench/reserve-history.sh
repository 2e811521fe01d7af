#!/usr/bin/env bash
# The quota check against a tenant with a long history: bench/reserve-history.sh [BIN_DIR ...]
#
# For each directory holding a `faceswap-gateway` binary (default: target/release), applies its
# migrations to a scratch database, gives one budgeted tenant 200,000 closed and charged
# sessions, then runs the reservation (`reserve_session`, what every create does first) with
# pgbench for 10 s at 1 and at 8 clients. Prints reservations/s and the ratio to the first
# directory, so two builds are compared in one run. Needs Postgres (started if needed) and
# pgbench (postgresql-client). Takes 2 to 4 minutes per directory, most of it the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/dev-services.sh)"
[ $# -gt 0 ] || set -- target/release
server="${DATABASE_URL%/*}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat >"$work/setup.sql" <<'SQL'
insert into tenants (tenant_id, name, max_concurrent_sessions, session_seconds_budget)
values ('00000000-0000-0000-0000-000000000001', 'history', 1000000, 1000000000);
insert into sessions (session_id, tenant_id, state, source_image, created_at, opened_at,
                      closed_at, close_reason)
select gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'closed', '[]',
       now() - interval '1 day', now() - interval '1 day', now() - interval '23 hours', 'client'
from generate_series(1, 200000);
insert into usage_ledger (tenant_id, session_id, seconds)
select tenant_id, session_id, 3600 from sessions;
vacuum analyze;
SQL
echo "select reserved from reserve_session(gen_random_uuid(), \
'00000000-0000-0000-0000-000000000001', '[]');" >"$work/reserve.sql"

declare -A first=()
for dir in "$@"; do
  db="faceswap_reserve_history"
  psql "$server/postgres" -qc "drop database if exists $db" -c "create database $db" 2>/dev/null
  DATABASE_URL="$server/$db" "$dir/faceswap-gateway" migrate >/dev/null
  psql "$server/$db" -q -f "$work/setup.sql"
  for clients in 1 8; do
    tps=$(pgbench "$server/$db" -n -c "$clients" -j "$((clients < 2 ? 1 : 2))" -T 10 \
      -f "$work/reserve.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    base="${first[$clients]:-$tps}"
    first[$clients]="$base"
    printf '%-40s %d client(s): %8.1f reservations/s (%.2fx the first)\n' \
      "$dir" "$clients" "$tps" "$(awk -v a="$tps" -v b="$base" 'BEGIN { print a / b }')"
  done
  psql "$server/postgres" -qc "drop database $db"
done
