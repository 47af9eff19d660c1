-- nbaops_maintenance: the role vacuum-trigger connects as (pg.maintenance_user). It VACUUMs,
-- ANALYZEs and REINDEXes the application's tables, ends runaway transactions (pg_signal_backend;
-- never a superuser's) and reads every session and pgstatindex (pg_monitor). With the rights it
-- logs in with it can neither DROP nor TRUNCATE the application's tables nor read their rows.
--
-- PostgreSQL 17+: pg_maintain, the MAINTAIN privilege on every table (VACUUM, ANALYZE, REINDEX,
--   CLUSTER, REFRESH MATERIALIZED VIEW, LOCK TABLE), and no membership of the owner at all:
--   vacuum-trigger never switches role there. A membership left by an earlier run on 16 or below
--   (a server upgraded since) is revoked. MAINTAIN does not cover DROP INDEX: the invalid leftover
--   of a failed REINDEX CONCURRENTLY must be dropped by its owner (vacuum-trigger's attempt fails
--   and is alerted).
-- Below 17 only a table's owner may REINDEX it (its owner or the database owner VACUUM and
--   ANALYZE it), so nbaops_maintenance can become the owner with SET ROLE, but holds none of the
--   owner's rights until it does. It reaches the owner through nbaops_maintenance_via, a NOLOGIN
--   NOINHERIT member of the owner: a NOINHERIT role passes on none of the rights of the roles it
--   belongs to, while SET ROLE follows every membership. vacuum-trigger runs
--   SET ROLE <owner> just before the one statement that needs it (VACUUM, ANALYZE, REINDEX,
--   VACUUM FULL of a table it does not own) and RESET ROLE right after, failed or not.
--   Why not NOINHERIT on nbaops_maintenance itself: that also stops it inheriting pg_monitor and
--   pg_signal_backend (on 15 it then sees no other session's transaction or query and may
--   terminate none). GRANT ... WITH INHERIT FALSE (16+) would do on 16 what the intermediate role
--   does; one mechanism for every version below 17 is the one tested (PostgreSQL 15).
--
-- Idempotent; runs as the RDS master user (rds_superuser, not a superuser), which must hold the
-- owner role WITH ADMIN OPTION, and pg_monitor, pg_signal_backend (and on 17+ pg_maintain) with
-- ADMIN OPTION as rds_superuser does. Any database. Takes the owner of the application's tables:
--   psql -v ON_ERROR_STOP=1 -v app_owner=nbaops_app -f 02_maintenance_role.sql
-- then set its password from Secrets Manager: ALTER ROLE nbaops_maintenance PASSWORD '...';
-- Tests only: -v assume_server_version_num=170000 takes the 17+ branch on an older server.
\if :{?app_owner}
\else
  \set app_owner nbaops_app
\endif
SELECT set_config('nbaops.app_owner', :'app_owner', false);
\if :{?assume_server_version_num}
  SELECT (:'assume_server_version_num')::int >= 170000 AS nbaops_pg17 \gset
\else
  SELECT current_setting('server_version_num')::int >= 170000 AS nbaops_pg17 \gset
\endif
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_setting('nbaops.app_owner')) THEN
    RAISE EXCEPTION 'owner role % does not exist: pass -v app_owner=<owner of the application tables>',
      current_setting('nbaops.app_owner');
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance') THEN
    CREATE ROLE nbaops_maintenance LOGIN;
  END IF;
  -- SUPERUSER, REPLICATION and BYPASSRLS can be set or cleared by a superuser only (even
  -- NOSUPERUSER is refused to the master user): checked, never altered.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance'
             AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'nbaops_maintenance is SUPERUSER, REPLICATION or BYPASSRLS: remove that first';
  END IF;
END
$$;
-- INHERIT: pg_monitor and pg_signal_backend must work without SET ROLE. One session at a time
-- (vacuum-trigger works its databases one after another, 900 s timeout, Tue/Thu evenings) plus
-- one for a retried or hand-started run overlapping it.
ALTER ROLE nbaops_maintenance LOGIN INHERIT NOCREATEDB NOCREATEROLE CONNECTION LIMIT 2;
GRANT pg_monitor TO nbaops_maintenance;
GRANT pg_signal_backend TO nbaops_maintenance;
\if :nbaops_pg17
DO $$
DECLARE
  owner text := current_setting('nbaops.app_owner');
BEGIN
  EXECUTE 'GRANT pg_maintain TO nbaops_maintenance';
  IF EXISTS (SELECT 1 FROM pg_auth_members m
             JOIN pg_roles r ON r.oid = m.roleid
             WHERE m.member = 'nbaops_maintenance'::regrole AND r.rolname = owner) THEN
    EXECUTE format('REVOKE %I FROM nbaops_maintenance', owner);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance_via') THEN
    DROP ROLE nbaops_maintenance_via;
  END IF;
END
$$;
\else
DO $$
DECLARE
  owner text := current_setting('nbaops.app_owner');
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance_via') THEN
    CREATE ROLE nbaops_maintenance_via NOLOGIN NOINHERIT;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance_via'
             AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'nbaops_maintenance_via is SUPERUSER, REPLICATION or BYPASSRLS: remove that first';
  END IF;
  ALTER ROLE nbaops_maintenance_via NOLOGIN NOINHERIT NOCREATEDB NOCREATEROLE;
  EXECUTE format('GRANT %I TO nbaops_maintenance_via', owner);
  GRANT nbaops_maintenance_via TO nbaops_maintenance;
  -- Earlier versions of this script made nbaops_maintenance an inheriting member of the owner:
  -- that membership goes (the one through nbaops_maintenance_via replaces it).
  IF EXISTS (SELECT 1 FROM pg_auth_members m
             JOIN pg_roles r ON r.oid = m.roleid
             WHERE m.member = 'nbaops_maintenance'::regrole AND r.rolname = owner) THEN
    EXECUTE format('REVOKE %I FROM nbaops_maintenance', owner);
  END IF;
END
$$;
\endif
-- VACUUM takes no statement_timeout kindly: vacuum-trigger sets its own per statement.
ALTER ROLE nbaops_maintenance SET lock_timeout = '5s';
ALTER ROLE nbaops_maintenance SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE nbaops_maintenance SET application_name = 'nbaops-maintenance';
-- Unqualified names in vacuum-trigger's queries must resolve to the catalog, never to an object
-- someone created in a schema on the default path ("$user", public) or a temporary one (pg_temp
-- is searched first unless named): that object would run with this role's rights, pg_signal_backend
-- included. Pinned: pg_catalog first, pg_temp last, public for pg_stat_statements and pgstattuple.
ALTER ROLE nbaops_maintenance SET search_path = pg_catalog, public, pg_temp;
