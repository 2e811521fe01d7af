-- Events are read in commit order without a lock held through commit. Each row records the
-- transaction that wrote it; readers only take rows of transactions older than every one still
-- running (`pg_snapshot_xmin`) and order them by (tx, event_id), so a row that commits late
-- still sorts after every row a reader has passed.
alter table session_events add column tx xid8 not null default pg_current_xact_id();
drop index session_events_tenant;
drop index session_events_session;
create index session_events_tenant on session_events (tenant_id, tx, event_id);
create index session_events_session on session_events (session_id, tx, event_id);
