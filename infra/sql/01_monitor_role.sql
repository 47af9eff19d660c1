-- nbaops_monitor: the read-only role pg-health (and the backup/failover checks) connect as.
-- Idempotent; runs as the RDS master user (rds_superuser), no superuser needed.
-- psql -v ON_ERROR_STOP=1 -f 01_monitor_role.sql ; then set its password from Secrets Manager:
--   ALTER ROLE nbaops_monitor PASSWORD '...';
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_monitor') THEN
    CREATE ROLE nbaops_monitor LOGIN;
  END IF;
END
$$;
-- A monitor must never be the one that exhausts max_connections.
ALTER ROLE nbaops_monitor NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 3;
-- pg_monitor: pg_stat_* of every session, pg_stat_replication, pg_ls_waldir, pg_stat_statements.
GRANT pg_monitor TO nbaops_monitor;
-- Guard rails on every session of the role, whatever the client does.
ALTER ROLE nbaops_monitor SET statement_timeout = '10s';
ALTER ROLE nbaops_monitor SET lock_timeout = '1s';
ALTER ROLE nbaops_monitor SET idle_in_transaction_session_timeout = '30s';
ALTER ROLE nbaops_monitor SET default_transaction_read_only = on;
ALTER ROLE nbaops_monitor SET application_name = 'nbaops-monitor';
