-- nbaops_maintenance: the role vacuum-trigger connects as. It may VACUUM, ANALYZE and REINDEX the
-- application's tables (through membership in their owner role: ownership checks follow
-- membership) and terminate runaway sessions (pg_signal_backend; never a superuser's).
-- Idempotent; runs as the RDS master user. Takes the owner of the application's tables:
--   psql -v ON_ERROR_STOP=1 -v app_owner=nbaops_app -f 02_maintenance_role.sql
\if :{?app_owner}
\else
  \set app_owner nbaops_app
\endif
SELECT set_config('nbaops.app_owner', :'app_owner', false);
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance') THEN
    CREATE ROLE nbaops_maintenance LOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_setting('nbaops.app_owner')) THEN
    RAISE EXCEPTION 'owner role % does not exist: pass -v app_owner=<owner of the application tables>',
      current_setting('nbaops.app_owner');
  END IF;
  EXECUTE format('GRANT %I TO nbaops_maintenance', current_setting('nbaops.app_owner'));
END
$$;
ALTER ROLE nbaops_maintenance NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT 2;
GRANT pg_monitor TO nbaops_maintenance;
GRANT pg_signal_backend TO nbaops_maintenance;
-- VACUUM takes no statement_timeout kindly: vacuum-trigger sets its own per statement.
ALTER ROLE nbaops_maintenance SET lock_timeout = '5s';
ALTER ROLE nbaops_maintenance SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE nbaops_maintenance SET application_name = 'nbaops-maintenance';
