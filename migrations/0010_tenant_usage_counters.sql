-- A tenant's quota use as running totals, kept by triggers in the transaction that changes a
-- session or charges one, so the quota check reads one row instead of counting.
--
-- Counting was the cost of every create, and it grew: the sessions that hold a slot were
-- counted through a partial index that keeps an entry for every row version until vacuum
-- (each state change writes one), so a tenant creating and closing sessions quickly made each
-- check walk thousands of dead entries under the tenant's lock; and with a budget the check
-- summed every ledger row the tenant ever had.
--
-- The triggers run at commit (deferred), so a transaction takes the totals row's lock only for
-- its commit, not across the round trips before it: creates of a tenant queue on that lock, and
-- a close holding it from its first statement would make them wait for the whole close.
--
-- Seconds in sessions that still hold a slot count from their reservation (`created_at`), so
-- that only entering or leaving a slot touches the totals: an upstream create that returns
-- moves a session from `creating` to `open` without taking this row's lock. The charge at close
-- still counts from `opened_at`.
create table tenant_usage (
    tenant_id uuid primary key references tenants (tenant_id) on delete cascade,
    -- Sessions in 'creating', 'open' or 'closing'.
    active_sessions bigint not null default 0
        constraint tenant_usage_active_non_negative check (active_sessions >= 0),
    -- Sum over those sessions of created_at as Unix milliseconds (exact, unlike a float sum
    -- that adds and subtracts for years); elapsed = active_sessions * now - this.
    active_since_ms bigint not null default 0,
    -- Sum of the tenant's usage_ledger seconds.
    seconds_charged bigint not null default 0
);

create function session_holds_slot(state text) returns boolean
    language sql immutable as $$ select state in ('creating', 'open', 'closing') $$;

-- Immutable although built on `extract`: the epoch of an instant does not depend on the time zone.
create function epoch_ms(t timestamptz) returns bigint
    language sql immutable as $$ select floor(extract(epoch from t) * 1000)::bigint $$;

-- Recomputes every tenant's totals from the rows (used once below; also the check that the
-- triggers kept them right).
create function tenant_usage_recount() returns table (tenant_id uuid, active_sessions bigint,
                                                     active_since_ms bigint, seconds_charged bigint)
    language sql stable as $$
    select t.tenant_id,
           coalesce(s.active, 0), coalesce(s.since, 0), coalesce(l.seconds, 0)
      from tenants t
      left join (select s.tenant_id, count(*) as active, sum(epoch_ms(s.created_at))::bigint as since
                   from sessions s where session_holds_slot(s.state) group by s.tenant_id) s
        on s.tenant_id = t.tenant_id
      left join (select l.tenant_id, sum(l.seconds)::bigint as seconds
                   from usage_ledger l group by l.tenant_id) l
        on l.tenant_id = t.tenant_id
$$;

insert into tenant_usage (tenant_id, active_sessions, active_since_ms, seconds_charged)
select * from tenant_usage_recount();

create function tenant_usage_for_new_tenant() returns trigger
    language plpgsql as $$
begin
    insert into tenant_usage (tenant_id) values (new.tenant_id) on conflict do nothing;
    return null;
end $$;

create trigger tenants_usage_row after insert on tenants
    for each row execute function tenant_usage_for_new_tenant();

-- A session entering or leaving a slot (insert, delete, or a state change across the line).
create function tenant_usage_track_session() returns trigger
    language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') and session_holds_slot(old.state) then
        update tenant_usage
           set active_sessions = active_sessions - 1,
               active_since_ms = active_since_ms - epoch_ms(old.created_at)
         where tenant_id = old.tenant_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') and session_holds_slot(new.state) then
        update tenant_usage
           set active_sessions = active_sessions + 1,
               active_since_ms = active_since_ms + epoch_ms(new.created_at)
         where tenant_id = new.tenant_id;
    end if;
    return null;
end $$;

create constraint trigger sessions_usage_insert after insert on sessions
    deferrable initially deferred for each row when (session_holds_slot(new.state))
    execute function tenant_usage_track_session();

create constraint trigger sessions_usage_update
    after update of state, tenant_id, created_at on sessions
    deferrable initially deferred for each row
    when (session_holds_slot(old.state) <> session_holds_slot(new.state)
          or ((old.tenant_id, old.created_at) is distinct from (new.tenant_id, new.created_at)
              and session_holds_slot(new.state)))
    execute function tenant_usage_track_session();

create constraint trigger sessions_usage_delete after delete on sessions
    deferrable initially deferred for each row when (session_holds_slot(old.state))
    execute function tenant_usage_track_session();

create function tenant_usage_track_charge() returns trigger
    language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        update tenant_usage set seconds_charged = seconds_charged - old.seconds
         where tenant_id = old.tenant_id;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        update tenant_usage set seconds_charged = seconds_charged + new.seconds
         where tenant_id = new.tenant_id;
    end if;
    return null;
end $$;

create constraint trigger usage_ledger_usage
    after insert or delete or update of seconds, tenant_id on usage_ledger
    deferrable initially deferred for each row execute function tenant_usage_track_charge();

-- A tenant's use, from its totals: sessions holding a slot, and seconds charged plus those
-- running in sessions that hold a slot (rounded up once). The seconds no longer cost a sum over
-- the ledger, so the flag that skipped them for tenants without a budget is gone.
drop function tenant_quota_usage(uuid, boolean);
create function tenant_quota_usage(p_tenant uuid,
                                   out active_sessions bigint, out seconds_used bigint)
    language sql stable as $$
    select coalesce(max(u.active_sessions), 0),
           coalesce(max(u.seconds_charged
                        + greatest(0, ceil((u.active_sessions * epoch_ms(now())
                                            - u.active_since_ms) / 1000.0))::bigint), 0)
      from tenant_usage u where u.tenant_id = p_tenant
$$;

-- The check and reservation, serialised per tenant on its totals row (not the tenant row, which
-- admin changes and foreign-key checks lock too). The insert's trigger updates the locked row
-- at commit.
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
    perform 1 from tenant_usage u where u.tenant_id = p_tenant for update;
    if not found then
        raise exception 'tenant % has no tenant_usage row', p_tenant;
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
