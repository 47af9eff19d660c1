-- nbaops_monitor: the read-only role pg-health connects as (pg.monitor_user), and backup-guard's
-- WAL-archiving check too: it opens its session with the same pg.monitor_user and secret
-- (shared/src/config/pg.rs, functions/backup-guard/src/handler.rs). Its connection limit below is
-- therefore sized for both functions.
-- Idempotent; runs as the RDS master user (rds_superuser: CREATEROLE, never a superuser), which
-- must be able to grant pg_monitor (ADMIN OPTION on it, as rds_superuser has). Any database:
--   psql -v ON_ERROR_STOP=1 -f 01_monitor_role.sql ; then set its password from Secrets Manager:
--   ALTER ROLE nbaops_monitor PASSWORD '...';
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_monitor') THEN
    CREATE ROLE nbaops_monitor LOGIN;
  END IF;
  -- SUPERUSER, REPLICATION and BYPASSRLS can be set or cleared by a superuser only (even
  -- NOSUPERUSER is refused to the master user), so they are checked, never altered: a role that
  -- has one was changed by hand and must be fixed by hand.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_monitor'
             AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'nbaops_monitor is SUPERUSER, REPLICATION or BYPASSRLS: remove that first';
  END IF;
END
$$;
-- A monitor must never be the one that exhausts max_connections. A role's limit counts its
-- sessions in every database of the instance. pg-health's sweep is fanned out on SQS (issue #20):
-- one session per instance of the function, at most the work queue's MaximumConcurrency
-- (template parameter PgHealthMaxConcurrency, 4) when the databases scanned at once share this
-- instance; backup-guard's WAL check holds one (300 s timeout, every 5 minutes) and may overlap
-- once with a retried or late run of itself: 4 + 2. Raise it with PgHealthMaxConcurrency.
ALTER ROLE nbaops_monitor LOGIN INHERIT NOCREATEDB NOCREATEROLE CONNECTION LIMIT 6;
-- pg_monitor: pg_stat_* of every session (query text included), pg_stat_replication,
-- pg_stat_statements of every user, pg_ls_waldir, pgstattuple's functions. No table privilege.
GRANT pg_monitor TO nbaops_monitor;
-- Guard rails on every session of the role, whatever the client does.
ALTER ROLE nbaops_monitor SET statement_timeout = '10s';
ALTER ROLE nbaops_monitor SET lock_timeout = '1s';
ALTER ROLE nbaops_monitor SET idle_in_transaction_session_timeout = '30s';
ALTER ROLE nbaops_monitor SET default_transaction_read_only = on;
ALTER ROLE nbaops_monitor SET application_name = 'nbaops-monitor';
-- The functions name catalog objects unqualified (pg_stat_activity, count(), now()). With the
-- default search_path ("$user", public, and pg_temp searched first when not named) anyone who may
-- create in a schema on the path, or a temporary object, could shadow one of them with their own
-- function, which would then run with this role's rights. Pinned: pg_catalog first, pg_temp
-- last; public stays for pg_stat_statements, which lives there.
ALTER ROLE nbaops_monitor SET search_path = pg_catalog, public, pg_temp;
