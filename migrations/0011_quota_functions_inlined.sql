-- The quota's SQL functions, made cheap to call. PostgreSQL runs a SQL function it cannot inline
-- by parsing and planning its body on every call:
-- - `tenant_quota_usage` returned one record of OUT parameters, which is never inlined: each
--   create paid about 0.2 ms for it, inside the tenant's lock. Returning a table (still exactly
--   one row, the body aggregates) lets the planner inline it into the query that calls it.
-- - the usage triggers' WHEN clauses are evaluated unplanned, so `session_holds_slot` ran that
--   way up to three times per state change (about 0.2 ms per update). They spell the states out.
drop function tenant_quota_usage(uuid);
create function tenant_quota_usage(p_tenant uuid)
    returns table (active_sessions bigint, seconds_used bigint)
    language sql stable as $$
    select coalesce(max(u.active_sessions), 0),
           coalesce(max(u.seconds_charged
                        + greatest(0, ceil((u.active_sessions * epoch_ms(now())
                                            - u.active_since_ms) / 1000.0))::bigint), 0)
      from tenant_usage u where u.tenant_id = p_tenant
$$;

-- The states in which a session holds a slot, as in `session_holds_slot`.
drop trigger sessions_usage_insert on sessions;
create constraint trigger sessions_usage_insert after insert on sessions
    deferrable initially deferred for each row
    when (new.state in ('creating', 'open', 'closing'))
    execute function tenant_usage_track_session();

drop trigger sessions_usage_update on sessions;
create constraint trigger sessions_usage_update
    after update of state, tenant_id, created_at on sessions
    deferrable initially deferred for each row
    when ((old.state in ('creating', 'open', 'closing')) <> (new.state in ('creating', 'open', 'closing'))
          or ((old.tenant_id, old.created_at) is distinct from (new.tenant_id, new.created_at)
              and new.state in ('creating', 'open', 'closing')))
    execute function tenant_usage_track_session();

drop trigger sessions_usage_delete on sessions;
create constraint trigger sessions_usage_delete after delete on sessions
    deferrable initially deferred for each row
    when (old.state in ('creating', 'open', 'closing'))
    execute function tenant_usage_track_session();
