-- nbaops_failover: the role failover-notify verifies a new primary with (failover.verify.user).
-- What it runs (functions/failover-notify/src/verify.rs), and all it is granted:
--   SELECT pg_is_in_recovery()                                   -- anyone may
--   SELECT application_name, state FROM pg_stat_replication      -- pg_read_all_stats: without
--       it a walsender's state is NULL to other roles and no replica would count as streaming
--   INSERT INTO public.<heartbeat> (source, beat_at, note) VALUES (...)
--       ON CONFLICT (source) DO UPDATE SET beat_at = EXCLUDED.beat_at, note = EXCLUDED.note
--       -- INSERT on the three columns, UPDATE on the two it sets, and SELECT on the three
--       -- (ON CONFLICT DO UPDATE reads the arbiter and the updated columns: refused without)
-- No DELETE, TRUNCATE, nor any right on another table. The heartbeat table is created here if
-- missing, owned by the master user: the function's own CREATE TABLE fallback is then never
-- needed (the role has no CREATE on any schema), and the role cannot drop or empty it.
-- Idempotent; runs as the RDS master user (rds_superuser, not a superuser; it needs CREATE on
-- schema public of that database, which the database owner has, and pg_read_all_stats WITH ADMIN
-- OPTION), in the database failover-notify connects to (failover.verify.database, default postgres):
--   psql -v ON_ERROR_STOP=1 [-v heartbeat_table=nbaops_heartbeat] -d postgres -f 03_failover_role.sql
-- then set its password from Secrets Manager: ALTER ROLE nbaops_failover PASSWORD '...';
\if :{?heartbeat_table}
\else
  \set heartbeat_table nbaops_heartbeat
\endif
SELECT set_config('nbaops.heartbeat_table', :'heartbeat_table', false);
DO $$
DECLARE
  tbl text := current_setting('nbaops.heartbeat_table');
  rel regclass;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_failover') THEN
    CREATE ROLE nbaops_failover LOGIN;
  END IF;
  -- SUPERUSER, REPLICATION and BYPASSRLS can be set or cleared by a superuser only (even
  -- NOSUPERUSER is refused to the master user): checked, never altered.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_failover'
             AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'nbaops_failover is SUPERUSER, REPLICATION or BYPASSRLS: remove that first';
  END IF;
  -- The same definition as failover-notify's fallback.
  EXECUTE format('CREATE TABLE IF NOT EXISTS public.%I (source text PRIMARY KEY, '
                 'beat_at timestamptz NOT NULL, note text)', tbl);
  rel := format('public.%I', tbl)::regclass;
  -- A table the function created itself (an earlier setup let it) is its own: it could drop it,
  -- and the grants below would mean nothing. Someone else's table would ignore our GRANTs.
  IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel
                 AND pg_has_role(c.relowner, 'USAGE')
                 AND c.relowner <> 'nbaops_failover'::regrole) THEN
    RAISE EXCEPTION '% is owned by %, not by the master user: ALTER TABLE % OWNER TO %, then run this again',
      rel, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = rel), rel, current_user;
  END IF;
  EXECUTE format('REVOKE ALL ON TABLE %s FROM nbaops_failover', rel);
  EXECUTE format('GRANT SELECT (source, beat_at, note), INSERT (source, beat_at, note), '
                 'UPDATE (beat_at, note) ON TABLE %s TO nbaops_failover', rel);
END
$$;
-- failover-notify runs one verification at a time (reserved concurrency 1), one session per
-- attempt, attempts one after another: 1, plus 1 for the previous attempt's session still
-- closing when the next one connects.
ALTER ROLE nbaops_failover LOGIN INHERIT NOCREATEDB NOCREATEROLE CONNECTION LIMIT 2;
GRANT pg_read_all_stats TO nbaops_failover;
ALTER ROLE nbaops_failover SET statement_timeout = '10s';
ALTER ROLE nbaops_failover SET lock_timeout = '1s';
ALTER ROLE nbaops_failover SET idle_in_transaction_session_timeout = '30s';
ALTER ROLE nbaops_failover SET application_name = 'nbaops-failover';
-- Its statements name the heartbeat table schema-qualified, but pg_is_in_recovery(), now() and
-- pg_stat_replication unqualified: with the default search_path ("$user", public, pg_temp first
-- when not named) an object someone created there could shadow them and run with this role's
-- rights. Pinned: pg_catalog first, pg_temp last.
ALTER ROLE nbaops_failover SET search_path = pg_catalog, public, pg_temp;
