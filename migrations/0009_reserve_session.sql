-- A new session's quota check and reservation in one call. The tenant row is locked so that
-- creates of one tenant are checked one at a time; taken by a single statement outside an
-- explicit transaction, the lock is held for the server-side work and the commit only, not
-- across client round trips (under load, creates of a busy tenant queued on it). `no key
-- update`, not `update`: rows that reference the tenant (events, sessions, resources) take a
-- key-share lock on it for their foreign key and must not queue behind a quota check.
--
-- The rule (a free concurrent slot, and budget left when there is one) is the one
-- `domain::quota::check_new_session` states; the service asks that function to name a refusal.

-- What a tenant uses now: sessions holding a slot, and seconds charged for closed sessions plus
-- seconds elapsed in open ones (counted only when asked: the ledger sum grows with the tenant).
create function tenant_quota_usage(p_tenant uuid, p_count_seconds boolean,
                                   out active_sessions bigint, out seconds_used bigint)
    language sql stable as $$
    select
        (select count(*) from sessions
          where tenant_id = p_tenant and state in ('creating', 'open', 'closing')),
        case when p_count_seconds then
            (select coalesce(sum(seconds), 0)::bigint from usage_ledger where tenant_id = p_tenant)
            + (select coalesce(sum(ceil(extract(epoch from now() - coalesce(opened_at, created_at)))), 0)::bigint
                 from sessions where tenant_id = p_tenant and state in ('open', 'closing'))
        else 0 end
$$;

-- Locks the tenant, reads its use (each statement of a plpgsql function takes a new snapshot,
-- so it sees every reservation committed while this one waited for the lock) and, when one
-- more session fits, writes it as 'creating'. `tenant_found` is false for an unknown tenant.
create function reserve_session(p_session uuid, p_tenant uuid, p_source jsonb,
                                out tenant_found boolean, out reserved boolean,
                                out max_concurrent_sessions integer,
                                out session_seconds_budget bigint,
                                out active_sessions bigint, out seconds_used bigint)
    language plpgsql as $$
begin
    reserved := false;
    select t.max_concurrent_sessions, t.session_seconds_budget
      into max_concurrent_sessions, session_seconds_budget
      from tenants t where t.tenant_id = p_tenant
      for no key update;
    tenant_found := found;
    if not tenant_found then
        return;
    end if;
    select u.active_sessions, u.seconds_used
      into active_sessions, seconds_used
      from tenant_quota_usage(p_tenant, session_seconds_budget is not null) u;
    if active_sessions < max_concurrent_sessions
       and (session_seconds_budget is null or seconds_used < session_seconds_budget) then
        insert into sessions (session_id, tenant_id, state, source_image)
        values (p_session, p_tenant, 'creating', p_source);
        reserved := true;
    end if;
end $$;
