-- Replicas keep the open sessions their tenants call in memory, so the hottest call (`info`)
-- reads nothing here. Every change to an open session that a replica must not serve stale is
-- announced on `faceswap_session_changed` (payload: the session id), at commit. Recording
-- activity alone is not announced: replicas write it themselves, at a coarse resolution.
-- The column list is the one `SessionRow` reads; a column added to it belongs here too.
create function notify_session_changed() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('faceswap_session_changed', old.session_id::text);
    return null;
end $$;

create trigger sessions_changed after update on sessions
    for each row
    when (old.state = 'open' and
          (old.tenant_id, old.upstream_id, old.state, old.faceswap_status, old.channel_id,
           old.front_user_id, old.front_rtc_token, old.algorithm_user_id, old.app_id,
           old.source_image, old.created_at, old.opened_at, old.closed_at, old.close_reason,
           old.close_attempts)
          is distinct from
          (new.tenant_id, new.upstream_id, new.state, new.faceswap_status, new.channel_id,
           new.front_user_id, new.front_rtc_token, new.algorithm_user_id, new.app_id,
           new.source_image, new.created_at, new.opened_at, new.closed_at, new.close_reason,
           new.close_attempts))
    execute function notify_session_changed();

create trigger sessions_deleted after delete on sessions
    for each row
    when (old.state = 'open')
    execute function notify_session_changed();
