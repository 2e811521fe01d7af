-- Tenants, their credentials, live sessions, the usage ledger and the gateway's signing keys.
-- Constraint names are matched in code (store::is_constraint), so keep them stable.

create or replace function set_updated_at() returns trigger as $$
begin
    new.updated_at = now();
    return new;
end;
$$ language plpgsql;

create table tenants (
    tenant_id uuid primary key,
    name text not null constraint tenants_name_not_blank check (length(trim(name)) > 0),
    status text not null default 'active'
        constraint tenants_status_known check (status in ('active', 'suspended')),
    max_concurrent_sessions integer not null
        constraint tenants_max_concurrent_positive check (max_concurrent_sessions > 0),
    -- Total session-seconds the tenant may consume; null means no budget.
    session_seconds_budget bigint
        constraint tenants_budget_non_negative check (session_seconds_budget >= 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create trigger tenants_updated_at before update on tenants
    for each row execute function set_updated_at();

-- Client credentials (client_id + secret) and API keys. Secrets are argon2 PHC strings only.
create table credentials (
    credential_id uuid primary key,
    tenant_id uuid not null references tenants (tenant_id) on delete cascade,
    kind text not null constraint credentials_kind_known check (kind in ('client', 'api_key')),
    -- The public half: the client_id, or an API key's id (the part before the secret).
    public_id text not null constraint credentials_public_id_unique unique,
    secret_hash text not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);
create index credentials_tenant on credentials (tenant_id);

-- One row per live session. The row is written (state 'creating', holding the tenant's quota
-- slot) before the upstream create is sent, and the upstream id is stored the moment it arrives.
create table sessions (
    session_id uuid primary key,
    tenant_id uuid not null references tenants (tenant_id),
    upstream_id text constraint sessions_upstream_id_unique unique,
    state text not null
        constraint sessions_state_known
        check (state in ('creating', 'open', 'closing', 'closed', 'lost')),
    faceswap_status smallint
        constraint sessions_faceswap_status_known check (faceswap_status between 1 and 4),
    channel_id text,
    front_user_id text,
    front_rtc_token text,
    algorithm_user_id text,
    app_id text,
    source_image jsonb not null,
    created_at timestamptz not null default now(),
    opened_at timestamptz,
    last_activity_at timestamptz not null default now(),
    closed_at timestamptz,
    close_reason text
        constraint sessions_close_reason_known
        check (close_reason in ('client', 'idle', 'max_duration', 'failed', 'budget', 'reconciled', 'lost')),
    updated_at timestamptz not null default now(),
    constraint sessions_closed_has_reason
        check ((state in ('closed', 'lost')) = (closed_at is not null and close_reason is not null))
);
create trigger sessions_updated_at before update on sessions
    for each row execute function set_updated_at();
-- Paging a tenant's sessions newest first.
create index sessions_tenant_recent on sessions (tenant_id, created_at desc, session_id desc);
-- Quota checks count only the sessions that hold a slot.
create index sessions_tenant_active on sessions (tenant_id)
    where state in ('creating', 'open', 'closing');

-- Session-seconds charged per closed session; the unique key makes every charge happen once.
create table usage_ledger (
    entry_id bigint generated always as identity primary key,
    tenant_id uuid not null references tenants (tenant_id),
    session_id uuid not null references sessions (session_id)
        constraint usage_ledger_one_charge_per_session unique,
    seconds bigint not null constraint usage_ledger_seconds_non_negative check (seconds >= 0),
    recorded_at timestamptz not null default now()
);
create index usage_ledger_tenant on usage_ledger (tenant_id, recorded_at);

-- Keys that sign the gateway's JWTs, shared by every replica. Retired keys still verify until
-- the tokens they signed have expired.
create table signing_keys (
    kid text primary key,
    algorithm text not null,
    private_key bytea not null,
    public_jwk jsonb not null,
    created_at timestamptz not null default now(),
    retired_at timestamptz
);
