-- Per-tenant request rates (enforced through Redis, see the gateway's rate module) and the
-- idempotency keys of non-idempotent tenant calls.

alter table tenants
    add column requests_per_second integer not null default 100
        constraint tenants_rps_positive check (requests_per_second > 0),
    add column burst integer not null default 200
        constraint tenants_burst_positive check (burst > 0);

-- One row per (tenant, key): claimed while the first request runs, then holding its answer so
-- a retry gets the same one. Rows past `expires_at` are as good as absent and are purged.
create table idempotency_keys (
    tenant_id uuid not null references tenants (tenant_id) on delete cascade,
    idempotency_key text not null,
    -- SHA-256 of method, path and body: the same key with another request is refused.
    request_hash bytea not null,
    state text not null default 'running'
        constraint idempotency_keys_state_known check (state in ('running', 'done')),
    -- A running claim older than this belongs to a request that died; another may take it over.
    locked_until timestamptz not null,
    response_status smallint,
    response_body bytea,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    primary key (tenant_id, idempotency_key)
);
create index idempotency_keys_expiry on idempotency_keys (expires_at);
