-- Generated resources (images, videos) the upstream hands out for a tenant's work, and their
-- copies in object storage. The upstream deletes its copy at `upstream_expires_at`; the
-- archiver must have copied it by then.

alter table tenants
    -- Days an archived object is kept before the archiver deletes it.
    add column archive_retention_days integer not null default 30
        constraint tenants_archive_retention_positive check (archive_retention_days > 0);

alter table sessions
    -- When the session's resources were last looked up upstream (`info` after the close); null
    -- for a closed session means the lookup is still to do.
    add column resources_checked_at timestamptz;
-- Sessions closed before this migration: the archiver looks up those whose resources may still
-- be downloadable (closed within the upstream's 7 days); older ones are past saving.
update sessions set resources_checked_at = now()
    where state = 'lost' or (state = 'closed' and closed_at < now() - interval '7 days');

create table resources (
    resource_id uuid primary key,
    tenant_id uuid not null references tenants (tenant_id),
    -- The session that produced it; null for detection's face crops.
    session_id uuid references sessions (session_id),
    -- `snapshot`, `recording`, `face`, or what the upstream calls it.
    kind text not null constraint resources_kind_not_blank check (length(trim(kind)) > 0),
    source_url text not null,
    -- As announced upstream, then as downloaded.
    content_type text,
    size_bytes bigint constraint resources_size_non_negative check (size_bytes >= 0),
    upstream_expires_at timestamptz not null,
    state text not null default 'pending'
        constraint resources_state_known
        check (state in ('pending', 'archived', 'expired', 'failed', 'deleted')),
    object_key text,
    sha256 text,
    archived_at timestamptz,
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    -- A worker owns the row until this time; renewed while a long download runs.
    claimed_until timestamptz,
    last_error text,
    -- When the `resource.archive_at_risk` alarm was raised (once).
    alarmed_at timestamptz,
    expired_at timestamptz,
    deleted_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint resources_archived_has_checksum
        check (state not in ('archived', 'deleted') or (sha256 is not null and archived_at is not null))
);
-- Discovery can see one URL more than once (close, monitor, tenant info): one row. Hashed, as
-- signed URLs can outgrow a btree entry.
create unique index resources_source_once on resources (tenant_id, md5(source_url));
create trigger resources_updated_at before update on resources
    for each row execute function set_updated_at();
create index resources_session on resources (session_id, created_at);
create index resources_tenant on resources (tenant_id, resource_id);
-- The archiver's queue, cheap however many archived rows accumulate.
create index resources_pending on resources (upstream_expires_at) where state = 'pending';
create index resources_archived on resources (archived_at) where state = 'archived';
-- Closed sessions whose resources are still to look up.
create index sessions_resources_unchecked on sessions (closed_at)
    where state = 'closed' and resources_checked_at is null;
