-- A tenant's totals split over 16 rows, so that the closes of one tenant's sessions do not
-- queue on one row, nor behind its creates.
--
-- With one totals row per tenant, every transaction that moved a session in or out of a slot
-- (a reservation, a close, a charge) updated that row at commit and held its lock through the
-- commit's WAL flush: a busy tenant's creates and closes ran one at a time across every
-- replica, and under load its requests spent most of their time waiting for that lock, not
-- working (8 clients cycling create → close: a close took 16 ms, of which 2 upstream).
--
-- Now a session's counts go to the shard its id picks (`usage_shard`, 1 to 16), and its charge
-- to the same one. Shard 0 holds no counts: it is the gate that reservations of the tenant
-- lock, so that quota checks still run one at a time while closes never touch it. A tenant's
-- use is the sum of its rows.
create function usage_shard(session_id uuid) returns smallint
    language sql immutable parallel safe as $$
    select (1 + get_byte(uuid_send(session_id), 15) % 16)::smallint
$$;

alter table tenant_usage drop constraint tenant_usage_pkey;
alter table tenant_usage add column shard smallint not null default 0
    constraint tenant_usage_shard_range check (shard between 0 and 16);
alter table tenant_usage alter column shard drop default;
alter table tenant_usage add primary key (tenant_id, shard);

-- Every tenant's totals per shard, from the rows (used once below; also the check that the
-- triggers kept them right). Every shard of every tenant has a row, the gate's always zero.
drop function tenant_usage_recount();
create function tenant_usage_recount() returns table (tenant_id uuid, shard smallint,
                                                     active_sessions bigint,
                                                     active_since_ms bigint,
                                                     seconds_charged bigint)
    language sql stable as $$
    select t.tenant_id, n.shard::smallint,
           coalesce(s.active, 0), coalesce(s.since, 0), coalesce(l.seconds, 0)
      from tenants t
      cross join generate_series(0, 16) as n(shard)
      left join (select s.tenant_id, usage_shard(s.session_id) as shard, count(*) as active,
                        sum(epoch_ms(s.created_at))::bigint as since
                   from sessions s where session_holds_slot(s.state)
                  group by 1, 2) s
        on s.tenant_id = t.tenant_id and s.shard = n.shard
      left join (select l.tenant_id, usage_shard(l.session_id) as shard,
                        sum(l.seconds)::bigint as seconds
                   from usage_ledger l group by 1, 2) l
        on l.tenant_id = t.tenant_id and l.shard = n.shard
$$;

delete from tenant_usage;
insert into tenant_usage (tenant_id, shard, active_sessions, active_since_ms, seconds_charged)
select * from tenant_usage_recount();

create or replace function tenant_usage_for_new_tenant() returns trigger
    language plpgsql as $$
begin
    insert into tenant_usage (tenant_id, shard)
    select new.tenant_id, n from generate_series(0, 16) n
    on conflict do nothing;
    return null;
end $$;

create or replace function tenant_usage_track_session() returns trigger
    language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') and session_holds_slot(old.state) then
        update tenant_usage
           set active_sessions = active_sessions - 1,
               active_since_ms = active_since_ms - epoch_ms(old.created_at)
         where tenant_id = old.tenant_id and shard = usage_shard(old.session_id);
    end if;
    if tg_op in ('INSERT', 'UPDATE') and session_holds_slot(new.state) then
        update tenant_usage
           set active_sessions = active_sessions + 1,
               active_since_ms = active_since_ms + epoch_ms(new.created_at)
         where tenant_id = new.tenant_id and shard = usage_shard(new.session_id);
    end if;
    return null;
end $$;

create or replace function tenant_usage_track_charge() returns trigger
    language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update tenant_usage set seconds_charged = seconds_charged - old.seconds
         where tenant_id = old.tenant_id and shard = usage_shard(old.session_id);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        update tenant_usage set seconds_charged = seconds_charged + new.seconds
         where tenant_id = new.tenant_id and shard = usage_shard(new.session_id);
    end if;
    return null;
end $$;

-- A session id is never changed, but a ledger row's could be: its charge then moves shards.
drop trigger usage_ledger_usage on usage_ledger;
create constraint trigger usage_ledger_usage
    after insert or delete or update of seconds, tenant_id, session_id on usage_ledger
    deferrable initially deferred for each row execute function tenant_usage_track_charge();

-- Seconds in sessions holding a slot are summed over the shards before rounding up, as the
-- single row did.
create or replace function tenant_quota_usage(p_tenant uuid)
    returns table (active_sessions bigint, seconds_used bigint)
    language sql stable as $$
    select coalesce(sum(u.active_sessions), 0)::bigint,
           (coalesce(sum(u.seconds_charged), 0)
            + greatest(0, ceil((coalesce(sum(u.active_sessions), 0) * epoch_ms(now())
                                - coalesce(sum(u.active_since_ms), 0)) / 1000.0)))::bigint
      from tenant_usage u where u.tenant_id = p_tenant
$$;

-- The check and reservation, serialised per tenant on its gate row.
create or replace function reserve_session(p_session uuid, p_tenant uuid, p_source jsonb,
                                           out tenant_found boolean, out reserved boolean,
                                           out max_concurrent_sessions integer,
                                           out session_seconds_budget bigint,
                                           out active_sessions bigint, out seconds_used bigint)
    language plpgsql as $$
begin
    reserved := false;
    select t.max_concurrent_sessions, t.session_seconds_budget
      into max_concurrent_sessions, session_seconds_budget
      from tenants t where t.tenant_id = p_tenant;
    tenant_found := found;
    if not tenant_found then
        return;
    end if;
    perform 1 from tenant_usage u where u.tenant_id = p_tenant and u.shard = 0 for update;
    if not found then
        raise exception 'tenant % has no tenant_usage gate row', p_tenant;
    end if;
    select u.active_sessions, u.seconds_used
      into active_sessions, seconds_used
      from tenant_quota_usage(p_tenant) u;
    if active_sessions < max_concurrent_sessions
       and (session_seconds_budget is null or seconds_used < session_seconds_budget) then
        insert into sessions (session_id, tenant_id, state, source_image)
        values (p_session, p_tenant, 'creating', p_source);
        reserved := true;
    end if;
end $$;
