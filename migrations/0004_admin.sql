-- The admin API: an audit log of every admin action, and `admin` as a close reason (forced
-- closes and closes of a suspended tenant's sessions).

create table admin_audit (
    audit_id bigint generated always as identity primary key,
    actor text not null,
    action text not null,
    target text,
    details jsonb not null default '{}',
    created_at timestamptz not null default now()
);
create index admin_audit_recent on admin_audit (created_at desc);

alter table sessions drop constraint sessions_close_reason_known;
alter table sessions add constraint sessions_close_reason_known
    check (close_reason in ('client', 'idle', 'max_duration', 'failed', 'budget', 'reconciled', 'lost', 'admin'));
alter table sessions drop constraint sessions_pending_close_reason_known;
alter table sessions add constraint sessions_pending_close_reason_known
    check (pending_close_reason in ('client', 'idle', 'max_duration', 'failed', 'budget', 'reconciled', 'admin'));
