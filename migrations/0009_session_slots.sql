-- Concurrent creates of one tenant no longer queue on the tenant's row: each session holding
-- quota takes a numbered slot below the tenant's limit, and the unique index lets no two take
-- the same one, so the limit holds while creates run side by side. A session leaves the index,
-- freeing its slot, when it stops holding quota. Sessions holding quota without a slot below the
-- current limit (the limit was lowered, or an older replica wrote them) make creates of their
-- tenant take the tenant's row exclusively again until they end.
alter table sessions add column slot integer
    constraint sessions_slot_not_negative check (slot >= 0);

create unique index sessions_tenant_slot on sessions (tenant_id, slot)
    where state in ('creating', 'open', 'closing');

update sessions s set slot = n.slot
from (select session_id,
             (row_number() over (partition by tenant_id order by created_at, session_id) - 1)::int
               as slot
        from sessions
       where state in ('creating', 'open', 'closing')) n
where s.session_id = n.session_id;
