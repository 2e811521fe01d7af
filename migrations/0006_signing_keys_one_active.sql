-- Signing key rotation: exactly one key signs at a time. Rotation retires the active key and
-- inserts its successor in one transaction; this index makes two concurrent rotations (or a
-- rotation racing a first start-up) fail instead of leaving two signing keys.
-- Keys created before the index by hand are settled first: the newest active one keeps signing.
update signing_keys set retired_at = now()
where retired_at is null
  and kid <> (select kid from signing_keys where retired_at is null
              order by created_at desc, kid limit 1);

create unique index signing_keys_one_active on signing_keys ((true)) where retired_at is null;
