-- Session life cycle: per-tenant timeouts, worker claims and close retries, the event outbox,
-- and webhook endpoints with their deliveries.

alter table tenants
    add column idle_timeout_seconds integer not null default 300
        constraint tenants_idle_timeout_positive check (idle_timeout_seconds > 0),
    add column max_session_seconds integer not null default 14400
        constraint tenants_max_session_positive check (max_session_seconds > 0);

alter table sessions
    -- A worker owns the row until this time; others skip it. Never held across a commit.
    add column claimed_until timestamptz,
    -- When the status monitor last asked the upstream.
    add column polled_at timestamptz,
    -- Why the session is being closed, kept while the upstream close is retried.
    add column pending_close_reason text
        constraint sessions_pending_close_reason_known
        check (pending_close_reason in ('client', 'idle', 'max_duration', 'failed', 'budget', 'reconciled')),
    add column close_attempts integer not null default 0,
    add column next_close_at timestamptz,
    add column last_close_error text;

-- Work the workers look for, cheap to find however many closed sessions accumulate.
create index sessions_unsettled on sessions (created_at)
    where state in ('creating', 'open', 'closing');

-- The outbox of everything that happens to a tenant's sessions. Ids are assigned under a
-- per-tenant lock held to commit (store::events::insert), so a tenant's events become visible
-- in id order and `Last-Event-ID` resumption never skips one.
create table session_events (
    event_id bigint generated always as identity primary key,
    tenant_id uuid not null references tenants (tenant_id),
    session_id uuid references sessions (session_id),
    event_type text not null,
    payload jsonb not null,
    created_at timestamptz not null default now()
);
create index session_events_tenant on session_events (tenant_id, event_id);
create index session_events_session on session_events (session_id, event_id);

create table webhook_endpoints (
    endpoint_id uuid primary key,
    tenant_id uuid not null references tenants (tenant_id) on delete cascade,
    url text not null,
    -- Standard Webhooks signing secret (`whsec_…`); it must be readable to sign.
    secret text not null,
    enabled boolean not null default true,
    disabled_reason text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger webhook_endpoints_updated_at before update on webhook_endpoints
    for each row execute function set_updated_at();
create index webhook_endpoints_tenant on webhook_endpoints (tenant_id);

-- One row per (endpoint, event): written with the event, retried until delivered or given up.
create table webhook_deliveries (
    endpoint_id uuid not null references webhook_endpoints (endpoint_id) on delete cascade,
    event_id bigint not null references session_events (event_id),
    state text not null default 'pending'
        constraint webhook_deliveries_state_known check (state in ('pending', 'delivered', 'failed')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    claimed_until timestamptz,
    last_error text,
    delivered_at timestamptz,
    created_at timestamptz not null default now(),
    primary key (endpoint_id, event_id)
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where state = 'pending';
