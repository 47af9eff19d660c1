-- nbaops_drill: the role backup-guard's restore drill logs in with on the temporary instance it
-- restores from a snapshot (backup.drill.url_template). The role, its password and its grants
-- come back with the snapshot, so they are made here, on the source instance, before the
-- snapshots the drill restores; a table added to the drill later needs this run again.
-- What the drill runs (functions/backup-guard/src/drill.rs, shared/src/sql/backup.rs), read-only:
--   SELECT count(*) FROM <each backup.drill.key_tables table>
--   SELECT count(*), md5(string_agg(t::text, ...)) FROM <backup.drill.checksum_table> t
-- so it gets SELECT on exactly those tables (and USAGE on their schemas), and nothing else: grants
-- on tables no longer listed are revoked.
-- pg_read_all_data was weighed and refused: no list to keep, but it reads every table of every
-- database, present and future, and on the production instance too (the role exists there with
-- the same password): a leaked drill password would expose all the data, where the drill only
-- ever counts and checksums the tables it is configured with.
-- Idempotent; runs as the RDS master user (rds_superuser, not a superuser; a member of the
-- tables' owner), in the database the tables live in (the one backup.drill.url_template names).
-- drill_tables: backup.drill.key_tables and backup.drill.checksum_table, written as in the config
-- (comma list of [schema.]table, schema public when left out, names as stored):
--   psql -v ON_ERROR_STOP=1 -v drill_tables=players,stats.games -d app -f 04_drill_role.sql
-- then set its password from Secrets Manager: ALTER ROLE nbaops_drill PASSWORD '...';
\if :{?drill_tables}
\else
  \set drill_tables ''
\endif
SELECT set_config('nbaops.drill_tables', :'drill_tables', false);
DO $$
DECLARE
  item text;
  schema_name text;
  table_name text;
  rel regclass;
  granted regclass[] := '{}';
BEGIN
  IF btrim(current_setting('nbaops.drill_tables')) = '' THEN
    RAISE EXCEPTION 'no tables: pass -v drill_tables=<backup.drill.key_tables and checksum_table, comma list of [schema.]table>';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_drill') THEN
    CREATE ROLE nbaops_drill LOGIN;
  END IF;
  -- SUPERUSER, REPLICATION and BYPASSRLS can be set or cleared by a superuser only (even
  -- NOSUPERUSER is refused to the master user): checked, never altered.
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_drill'
             AND (rolsuper OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'nbaops_drill is SUPERUSER, REPLICATION or BYPASSRLS: remove that first';
  END IF;
  -- Every table privilege it holds in this database goes; the listed ones are granted again
  -- below, in the same transaction.
  FOR rel IN SELECT DISTINCT c.oid::regclass FROM pg_class c, aclexplode(c.relacl) a
             WHERE a.grantee = 'nbaops_drill'::regrole LOOP
    EXECUTE format('REVOKE ALL ON TABLE %s FROM nbaops_drill', rel);
  END LOOP;
  -- Split as the config does (TableName::parse): at the first dot, trimmed, names verbatim.
  FOREACH item IN ARRAY string_to_array(current_setting('nbaops.drill_tables'), ',') LOOP
    item := btrim(item);
    CONTINUE WHEN item = '';
    IF position('.' IN item) > 0 THEN
      schema_name := btrim(split_part(item, '.', 1));
      table_name := btrim(substr(item, position('.' IN item) + 1));
    ELSE
      schema_name := 'public';
      table_name := item;
    END IF;
    rel := format('%I.%I', schema_name, table_name)::regclass;
    IF NOT has_schema_privilege('nbaops_drill', schema_name, 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA %I TO nbaops_drill', schema_name);
    END IF;
    EXECUTE format('GRANT SELECT ON TABLE %s TO nbaops_drill', rel);
    granted := granted || rel;
  END LOOP;
  -- A GRANT by someone without the grant option only WARNs: prove each one took.
  FOREACH rel IN ARRAY granted LOOP
    IF NOT has_table_privilege('nbaops_drill', rel, 'SELECT')
       OR NOT has_schema_privilege('nbaops_drill',
              (SELECT relnamespace FROM pg_class WHERE oid = rel), 'USAGE') THEN
      RAISE EXCEPTION 'nbaops_drill still cannot read %: run this as a member of its owner', rel;
    END IF;
  END LOOP;
END
$$;
-- One validation session per drill, drills one after another in a backup-guard run (300 s
-- timeout, every 5 minutes), plus one for a run overlapping a late one.
ALTER ROLE nbaops_drill LOGIN INHERIT NOCREATEDB NOCREATEROLE CONNECTION LIMIT 2;
-- Read-only whatever the client does (the drill also sets it per session).
ALTER ROLE nbaops_drill SET default_transaction_read_only = on;
ALTER ROLE nbaops_drill SET idle_in_transaction_session_timeout = '60s';
ALTER ROLE nbaops_drill SET lock_timeout = '5s';
ALTER ROLE nbaops_drill SET application_name = 'nbaops-drill';
-- count(), md5(), string_agg() are named unqualified: with the default search_path ("$user",
-- public, pg_temp first when not named) an object someone created there could shadow them and run
-- with this role's rights. Pinned: pg_catalog first, pg_temp last.
ALTER ROLE nbaops_drill SET search_path = pg_catalog, public, pg_temp;
