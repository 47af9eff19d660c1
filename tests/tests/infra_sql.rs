//! infra/sql applied as on RDS: by a master user who is not a superuser (`rds_master`, holding
//! only what rds_superuser gives the scripts), twice. Then each role, logged in as itself, can
//! do its job and nothing more, and its connection limit is the one its script states.
//!
//! Every check runs and the failures are listed together at the end.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nbaops_shared::sql::{self, roles, IndexWork, Maintenance, PgVersion};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::postgres::Postgres;
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

/// Every role's password on the test cluster (SCRAM over TLS for the nbaops roles).
const PASSWORD: &str = "infra-sql-test-only";
const ROLES: [&str; 4] = [
    "nbaops_monitor",
    "nbaops_maintenance",
    "nbaops_failover",
    "nbaops_drill",
];
/// failover-notify's heartbeat upsert (functions/failover-notify/src/verify.rs), as it sends it.
const HEARTBEAT: &str = "INSERT INTO public.\"nbaops_heartbeat\" (source, beat_at, note) \
    VALUES ('failover-notify', now(), 'infra-sql test') \
    ON CONFLICT (source) DO UPDATE SET beat_at = EXCLUDED.beat_at, note = EXCLUDED.note";
const PROBE: &str = "nbaops-probe-activity";

/// Collects failures instead of stopping at the first.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, got: &dyn Debug) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(format!("{what}: got {got:?}"));
        }
    }

    fn equal(&mut self, what: &str, got: Result<String, String>, want: &str) {
        let ok = got.as_deref() == Ok(want);
        self.check(&format!("{what} (want {want:?})"), ok, &got);
    }

    /// The statement failed, and the server's message says why.
    fn refused(&mut self, what: &str, got: Result<String, String>, words: &str) {
        let ok = matches!(&got, Err(e) if e.contains(words));
        self.check(&format!("{what} (refused: {words:?})"), ok, &got);
    }

    fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} of {} checks failed:\n- {}",
            self.failed.len(),
            self.failed.len() + self.passed,
            self.failed.join("\n- ")
        );
    }
}

/// psql with a password (the nbaops roles log in with SCRAM over TLS, as on RDS), each statement
/// its own `-c` (VACUUM and REINDEX CONCURRENTLY may not share a string), stderr kept: VACUUM
/// that may not process a table only WARNs.
struct Psql<'a> {
    pg: &'a Postgres,
    bin: PathBuf,
}

struct Out {
    stdout: String,
    stderr: String,
}

impl<'a> Psql<'a> {
    fn new(pg: &'a Postgres) -> Psql<'a> {
        Psql {
            pg,
            bin: psql_bin(),
        }
    }

    fn command(&self, user: &str, db: &str) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.pg.port.to_string(), "-U", user, "-d", db])
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, mut cmd: Command) -> Result<Out, String> {
        let out = cmd.output().map_err(|e| format!("psql: {e}"))?;
        let o = Out {
            stdout: String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.status.success() {
            Ok(o)
        } else {
            Err(format!("{}{}", o.stderr, o.stdout))
        }
    }

    fn full(&self, user: &str, db: &str, statements: &[&str]) -> Result<Out, String> {
        let mut cmd = self.command(user, db);
        for s in statements {
            cmd.arg("-c").arg(s);
        }
        self.run(cmd)
    }

    /// stdout of the statements, run one after another in one session.
    fn sql(&self, user: &str, db: &str, statements: &[&str]) -> Result<String, String> {
        self.full(user, db, statements).map(|o| o.stdout)
    }

    fn one(&self, user: &str, db: &str, statement: &str) -> Result<String, String> {
        self.sql(user, db, &[statement])
    }

    fn file(
        &self,
        user: &str,
        db: &str,
        file: &str,
        vars: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut cmd = self.command(user, db);
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        cmd.arg("-f").arg(sql_dir().join(file));
        self.run(cmd).map(|o| o.stdout)
    }

    /// A session held open (pg_sleep) in the background; ended by `end_sessions`.
    fn hold(&self, user: &str, db: &str, statement: &str) -> Child {
        let mut cmd = self.command(user, db);
        // The roles' own statement_timeout would end the hold early.
        cmd.args(["-c", "SET statement_timeout = 0", "-c", statement])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match cmd.spawn() {
            Ok(child) => child,
            Err(e) => panic!("psql: {e}"),
        }
    }

    /// Waits until `user` has `n` sessions doing `like`, as the cluster's superuser sees them.
    fn wait_sessions(&self, user: &str, like: &str, n: usize) -> bool {
        let q = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}' AND query LIKE '%{like}%' AND pid <> pg_backend_pid()"
        );
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if self.pg.psql("postgres", &q).ok() == Some(n.to_string()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Ends the held sessions of `user` (superuser) and reaps their psql processes.
    fn end_sessions(&self, user: &str, children: Vec<Child>) {
        let _ = self.pg.psql(
            "postgres",
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}' AND pid <> pg_backend_pid()"),
        );
        for mut c in children {
            let _ = c.wait();
        }
    }
}

fn sql_dir() -> PathBuf {
    workspace_root().join("infra/sql")
}

/// The psql next to the server binaries the harness runs (PG_BIN, else the newest installed).
fn psql_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Path::new(&dir).join("psql");
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let psql = e.path().join("bin/psql");
            psql.is_file().then_some((version, psql))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// `CONNECTION LIMIT n` of `ALTER ROLE <role> ...` in the scripts.
fn stated_limit(role: &str) -> Option<i64> {
    let needle = format!("ALTER ROLE {role} ");
    std::fs::read_dir(sql_dir())
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with(&needle))
        .find_map(|l| {
            let (_, rest) = l.split_once("CONNECTION LIMIT ")?;
            rest.trim_end_matches(';').trim().parse().ok()
        })
}

/// The cluster's superuser prepares what RDS gives: a master user with CREATEROLE and CREATEDB,
/// no superuser, holding pg_monitor, pg_signal_backend and pg_read_all_stats WITH ADMIN OPTION
/// and the application owner's role WITH ADMIN OPTION, owning the `postgres` database (as the
/// RDS master user does); pg_stat_statements created (rds_superuser may); the application's
/// tables owned by `nbaops_app`.
fn rds_like_cluster(pg: &Postgres) {
    for s in [
        format!("CREATE ROLE rds_master LOGIN CREATEROLE CREATEDB PASSWORD '{PASSWORD}'"),
        "GRANT pg_monitor, pg_signal_backend, pg_read_all_stats TO rds_master WITH ADMIN OPTION"
            .into(),
        "CREATE ROLE nbaops_app LOGIN".into(),
        "GRANT nbaops_app TO rds_master WITH ADMIN OPTION".into(),
        "CREATE DATABASE app OWNER nbaops_app".into(),
        "ALTER DATABASE postgres OWNER TO rds_master".into(),
    ] {
        pg.psql("postgres", &s).unwrap();
    }
    pg.psql("app", "CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let psql = Psql::new(pg);
    psql.sql(
        "nbaops_app",
        "app",
        &[
            "CREATE TABLE games (id int PRIMARY KEY, score int)",
            "INSERT INTO games SELECT g, g FROM generate_series(1, 1000) g",
            "CREATE TABLE secrets (v text)",
            "INSERT INTO secrets VALUES ('not for nbaops')",
            "SELECT count(*) FROM games WHERE score > 10",
            // What a failed REINDEX CONCURRENTLY leaves: an invalid index named *_ccnew.
            "CREATE TABLE dup (k int)",
            "INSERT INTO dup VALUES (1), (1)",
        ],
    )
    .unwrap();
    let _ = psql.one(
        "nbaops_app",
        "app",
        "CREATE UNIQUE INDEX CONCURRENTLY dup_k_ccnew ON dup (k)",
    );
}

/// Both runs of every script, as the master user; their errors, if any.
fn apply_all(psql: &Psql, c: &mut Checks) {
    for run in 1..=2 {
        for (file, db, vars) in [
            ("01_monitor_role.sql", "app", vec![]),
            (
                "02_maintenance_role.sql",
                "app",
                vec![("app_owner", "nbaops_app")],
            ),
            ("03_failover_role.sql", "postgres", vec![]),
            (
                "04_drill_role.sql",
                "app",
                vec![("drill_tables", "public.games")],
            ),
        ] {
            let r = psql.file("rds_master", db, file, &vars);
            c.check(
                &format!("{file} applied by rds_master (run {run})"),
                r.is_ok(),
                &r,
            );
        }
    }
    for role in ROLES {
        let _ = psql.one(
            "rds_master",
            "postgres",
            &format!("ALTER ROLE {role} PASSWORD '{PASSWORD}'"),
        );
    }
}

#[test]
fn roles_applied_by_the_master_user_are_least_privilege() {
    let pg = Postgres::start().unwrap();
    rds_like_cluster(&pg);
    let _replica = pg.start_replica().unwrap();
    let psql = Psql::new(&pg);
    let v = PgVersion(
        pg.psql("postgres", "SHOW server_version_num")
            .unwrap()
            .parse()
            .unwrap(),
    );
    // A deployment of the earlier 02 script: an inheriting member of the owner.
    pg.psql(
        "postgres",
        "CREATE ROLE nbaops_maintenance LOGIN; GRANT nbaops_app TO nbaops_maintenance",
    )
    .unwrap();
    let mut c = Checks::default();
    apply_all(&psql, &mut c);

    for role in ROLES {
        c.equal(
            &format!("{role}: no superuser, createrole, createdb, replication, bypassrls"),
            pg.psql(
                "postgres",
                &format!("SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls FROM pg_roles WHERE rolname = '{role}'"),
            )
            .map_err(|e| e.to_string()),
            "f",
        );
        c.equal(
            &format!("{role}: search_path pinned at login"),
            psql.one(role, "app", "SHOW search_path"),
            "pg_catalog, public, pg_temp",
        );
    }

    // ---- nbaops_monitor: reads every session, replication, statements, archiver; writes nothing.
    let probe = psql.hold(
        "nbaops_app",
        "app",
        &format!("SELECT '{PROBE}', pg_sleep(120)"),
    );
    c.check(
        "the application's probe session is running",
        psql.wait_sessions("nbaops_app", PROBE, 1),
        &"",
    );
    let m = "nbaops_monitor";
    c.equal(
        "monitor sees another role's session with its query text",
        psql.one(m, "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = 'nbaops_app' AND query LIKE '%{PROBE}%'")),
        "1",
    );
    c.equal(
        "monitor sees the standby's progress in pg_stat_replication",
        psql.one(m, "app", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND replay_lsn IS NOT NULL"),
        "1",
    );
    c.equal(
        "monitor reads another role's statements in pg_stat_statements",
        psql.one(m, "app", "SELECT count(*) > 0 FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'nbaops_app' AND s.query LIKE '%FROM games%'"),
        "t",
    );
    for (what, q) in [
        ("pg_stat_archiver", sql::ARCHIVER.to_string()),
        ("replication", sql::REPLICATION_PRIMARY.to_string()),
        ("connections", sql::CONNECTIONS.to_string()),
        ("transactions", sql::transactions(v)),
        ("pg_ls_waldir", "SELECT count(*) FROM pg_ls_waldir()".into()),
    ] {
        let r = psql.one(m, "app", &q);
        c.check(
            &format!("monitor runs pg-health's {what} query"),
            r.is_ok(),
            &r,
        );
    }
    c.equal(
        "monitor sessions are read-only by default",
        psql.one(m, "app", "SHOW default_transaction_read_only"),
        "on",
    );
    c.refused(
        "monitor inserts into an application table in a read-write transaction",
        psql.sql(
            m,
            "app",
            &["BEGIN READ WRITE", "INSERT INTO games VALUES (5000, 1)"],
        ),
        "permission denied",
    );
    c.refused(
        "monitor creates a table",
        psql.sql(
            m,
            "app",
            &[
                "BEGIN READ WRITE",
                "CREATE TABLE public.monitor_was_here (i int)",
            ],
        ),
        "permission denied",
    );
    c.refused(
        "monitor terminates another role's session",
        psql.one(m, "app", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'nbaops_app' AND query LIKE '%{PROBE}%'")),
        "terminate",
    );

    // ---- nbaops_maintenance: nothing of the owner's as itself; VACUUM/ANALYZE/REINDEX by SET ROLE.
    let mt = "nbaops_maintenance";
    c.equal(
        "maintenance holds none of the owner's rights as itself (the earlier direct membership is gone)",
        psql.one(mt, "app", "SELECT pg_has_role('nbaops_app', 'USAGE')"),
        "f",
    );
    c.refused(
        "maintenance reads the owner's rows",
        psql.one(mt, "app", "SELECT count(*) FROM games"),
        "permission denied",
    );
    c.refused(
        "maintenance drops the owner's table",
        psql.one(mt, "app", "DROP TABLE games"),
        "must be owner",
    );
    c.refused(
        "maintenance truncates the owner's table",
        psql.one(mt, "app", "TRUNCATE games"),
        "permission denied",
    );
    let vacuum_as_itself = psql.full(mt, "app", &["VACUUM games"]);
    c.check(
        "maintenance's VACUUM without SET ROLE is skipped with a WARNING",
        matches!(&vacuum_as_itself, Ok(o) if o.stderr.contains("WARNING")),
        &vacuum_as_itself.as_ref().map(|o| &o.stderr),
    );
    // pg_monitor and pg_signal_backend still work without SET ROLE (runaway transactions).
    c.equal(
        "maintenance sees another role's transaction and query",
        psql.one(mt, "app", &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = 'nbaops_app' AND query LIKE '%{PROBE}%' AND xact_start IS NOT NULL")),
        "1",
    );
    c.equal(
        "maintenance terminates a runaway session of another role",
        psql.one(mt, "app", &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'nbaops_app' AND query LIKE '%{PROBE}%'")),
        "t",
    );
    // Ended: REINDEX CONCURRENTLY below waits for every older transaction.
    psql.end_sessions("nbaops_app", vec![probe]);
    // vacuum-trigger's own queries name the owner to switch to.
    c.equal(
        "vacuum-trigger's table query: set_role is the owner",
        psql.one(
            mt,
            "app",
            &format!(
                "SELECT set_role FROM ({}) q WHERE table_name = 'games'",
                sql::tables::tables_for_maintenance(v, 0)
            ),
        ),
        "nbaops_app",
    );
    c.equal(
        "vacuum-trigger's index query: set_role is the owner",
        psql.one(mt, "app", &format!("SELECT string_agg(index_name || '=' || coalesce(set_role, '-'), ',' ORDER BY index_name) FROM ({}) q WHERE table_name IN ('games', 'dup')", sql::indexes::indexes(v))),
        "dup_k_ccnew=nbaops_app,games_pkey=nbaops_app",
    );
    // vacuum-trigger's statements, switched as it switches them.
    let mut statements: Vec<String> = [
        Maintenance::VacuumAnalyze,
        Maintenance::Freeze,
        Maintenance::Analyze,
        Maintenance::VacuumFull,
    ]
    .iter()
    .map(|k| k.statement("public", "games"))
    .collect();
    statements.push(IndexWork::Reindex.statement("public", "games_pkey"));
    statements.push(IndexWork::DropLeftover.statement("public", "dup_k_ccnew"));
    for statement in statements {
        let s = roles::as_owner(v, Some("nbaops_app"), statement.clone());
        let mut all = s.statements();
        all.push("SELECT current_user");
        let r = psql.full(mt, "app", &all);
        c.check(
            &format!("maintenance runs `{statement}` through SET ROLE, without a WARNING, and is itself again after"),
            matches!(&r, Ok(o) if !o.stderr.contains("WARNING") && o.stdout.ends_with("nbaops_maintenance")),
            &r.as_ref().map(|o| (&o.stdout, &o.stderr)),
        );
    }
    c.equal(
        "the owner's table was vacuumed and analyzed by maintenance",
        pg.psql("app", "SELECT vacuum_count >= 2 AND analyze_count >= 2 FROM pg_stat_user_tables WHERE relname = 'games'")
            .map_err(|e| e.to_string()),
        "t",
    );
    c.equal(
        "the leftover index was dropped",
        pg.psql(
            "app",
            "SELECT count(*) FROM pg_class WHERE relname = 'dup_k_ccnew'",
        )
        .map_err(|e| e.to_string()),
        "0",
    );

    // ---- nbaops_failover: its heartbeat, nothing else.
    let f = "nbaops_failover";
    let beat = psql.sql(f, "postgres", &[HEARTBEAT, HEARTBEAT]);
    c.check(
        "failover upserts its heartbeat (twice)",
        beat.is_ok(),
        &beat,
    );
    c.equal(
        "one heartbeat row",
        pg.psql(
            "postgres",
            "SELECT count(*) FROM public.nbaops_heartbeat WHERE source = 'failover-notify'",
        )
        .map_err(|e| e.to_string()),
        "1",
    );
    c.equal(
        "the heartbeat table belongs to the master user",
        pg.psql(
            "postgres",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'nbaops_heartbeat'",
        )
        .map_err(|e| e.to_string()),
        "rds_master",
    );
    c.equal(
        "failover sees the primary",
        psql.one(f, "postgres", "SELECT pg_is_in_recovery()"),
        "f",
    );
    c.equal(
        "failover sees the standby streaming",
        psql.one(
            f,
            "postgres",
            "SELECT string_agg(state, ',') FROM pg_stat_replication",
        ),
        "streaming",
    );
    for (what, db, q, words) in [
        (
            "deletes heartbeats",
            "postgres",
            "DELETE FROM public.nbaops_heartbeat",
            "permission denied",
        ),
        (
            "truncates the heartbeat table",
            "postgres",
            "TRUNCATE public.nbaops_heartbeat",
            "permission denied",
        ),
        (
            "drops the heartbeat table",
            "postgres",
            "DROP TABLE public.nbaops_heartbeat",
            "must be owner",
        ),
        (
            "creates a table",
            "postgres",
            "CREATE TABLE public.failover_was_here (i int)",
            "permission denied",
        ),
        (
            "reads an application table",
            "app",
            "SELECT count(*) FROM games",
            "permission denied",
        ),
        (
            "writes an application table",
            "app",
            "INSERT INTO games VALUES (6000, 1)",
            "permission denied",
        ),
    ] {
        c.refused(&format!("failover {what}"), psql.one(f, db, q), words);
    }

    // ---- nbaops_drill: counts and checksums its tables, reads nothing else, writes nothing.
    let d = "nbaops_drill";
    c.equal(
        "drill counts a key table",
        psql.one(d, "app", &sql::backup::row_count("public", "games")),
        "1000",
    );
    let sum = psql.one(d, "app", &sql::backup::table_checksum("public", "games"));
    c.check("drill checksums its table", sum.is_ok(), &sum);
    c.refused(
        "drill reads a table it was not given",
        psql.one(d, "app", "SELECT count(*) FROM secrets"),
        "permission denied",
    );
    c.refused(
        "drill writes in a read-write transaction",
        psql.sql(
            d,
            "app",
            &["BEGIN READ WRITE", "INSERT INTO games VALUES (7000, 1)"],
        ),
        "permission denied",
    );
    c.equal(
        "drill sessions are read-only by default",
        psql.one(d, "app", "SHOW default_transaction_read_only"),
        "on",
    );
    // Another list: the grant on the table no longer listed goes.
    let r = psql.file(
        "rds_master",
        "app",
        "04_drill_role.sql",
        &[("drill_tables", "secrets")],
    );
    c.check("04 applied with another table list", r.is_ok(), &r);
    c.refused(
        "drill reads a table no longer listed",
        psql.one(d, "app", "SELECT count(*) FROM games"),
        "permission denied",
    );
    c.equal(
        "drill reads the newly listed table",
        psql.one(d, "app", "SELECT count(*) FROM secrets"),
        "1",
    );

    // ---- what the scripts refuse.
    c.refused(
        "02 with an owner that does not exist",
        psql.file(
            "rds_master",
            "app",
            "02_maintenance_role.sql",
            &[("app_owner", "nobody_here")],
        ),
        "app_owner",
    );
    c.refused(
        "04 without tables",
        psql.file("rds_master", "app", "04_drill_role.sql", &[]),
        "drill_tables",
    );

    // ---- connection limits: what the SQL says, and enforced.
    for role in ROLES {
        let stated = stated_limit(role);
        c.check(
            &format!("{role}: the SQL states a CONNECTION LIMIT"),
            stated.is_some(),
            &stated,
        );
        let Some(limit) = stated else { continue };
        c.equal(
            &format!("{role}: rolconnlimit"),
            pg.psql(
                "postgres",
                &format!("SELECT rolconnlimit FROM pg_roles WHERE rolname = '{role}'"),
            )
            .map_err(|e| e.to_string()),
            &limit.to_string(),
        );
        let tag = format!("nbaops-limit-{role}");
        let held: Vec<Child> = (0..limit)
            .map(|_| psql.hold(role, "app", &format!("SELECT '{tag}', pg_sleep(120)")))
            .collect();
        let all_in = psql.wait_sessions(role, &tag, limit as usize);
        c.check(&format!("{role}: {limit} sessions open"), all_in, &"");
        c.refused(
            &format!("{role}: session {} of {limit}", limit + 1),
            psql.one(role, "app", "SELECT 1"),
            "too many connections for role",
        );
        psql.end_sessions(role, held);
    }
    c.finish();
}

/// PostgreSQL 17's branch on this machine's 15: a stand-in `pg_maintain` (renamed into place by
/// the superuser: `pg_` names are reserved) and the script told the version. A server set up by
/// the 15/16 branch, then upgraded: the owner's membership and the intermediate role go.
#[test]
fn pg17_branch_grants_pg_maintain_instead_of_the_owner() {
    let pg = Postgres::start().unwrap();
    rds_like_cluster(&pg);
    pg.psql(
        "postgres",
        "CREATE ROLE nbaops_stand_in; UPDATE pg_authid SET rolname = 'pg_maintain' WHERE rolname = 'nbaops_stand_in'",
    )
    .unwrap();
    pg.psql(
        "postgres",
        "GRANT pg_maintain TO rds_master WITH ADMIN OPTION",
    )
    .unwrap();
    let psql = Psql::new(&pg);
    let owner = [("app_owner", "nbaops_app")];
    let pg17 = [
        ("app_owner", "nbaops_app"),
        ("assume_server_version_num", "170000"),
    ];
    let mut c = Checks::default();
    let r = psql.file("rds_master", "app", "02_maintenance_role.sql", &owner);
    c.check("02 applied (below 17)", r.is_ok(), &r);
    c.equal(
        "below 17: a member of the owner through nbaops_maintenance_via",
        pg.psql("postgres", "SELECT pg_has_role('nbaops_maintenance', 'nbaops_app', 'MEMBER') AND NOT pg_has_role('nbaops_maintenance', 'nbaops_app', 'USAGE')")
            .map_err(|e| e.to_string()),
        "t",
    );
    for run in 1..=2 {
        let r = psql.file("rds_master", "app", "02_maintenance_role.sql", &pg17);
        c.check(&format!("02 applied as on 17 (run {run})"), r.is_ok(), &r);
    }
    let _ = psql.one(
        "rds_master",
        "postgres",
        &format!("ALTER ROLE nbaops_maintenance PASSWORD '{PASSWORD}'"),
    );
    c.equal(
        "17: pg_maintain granted",
        pg.psql(
            "postgres",
            "SELECT pg_has_role('nbaops_maintenance', 'pg_maintain', 'USAGE')",
        )
        .map_err(|e| e.to_string()),
        "t",
    );
    c.equal(
        "17: no membership of the owner, no intermediate role",
        pg.psql("postgres", "SELECT pg_has_role('nbaops_maintenance', 'nbaops_app', 'MEMBER') OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nbaops_maintenance_via')")
            .map_err(|e| e.to_string()),
        "f",
    );
    c.refused(
        "17: maintenance cannot SET ROLE to the owner",
        psql.one("nbaops_maintenance", "app", "SET ROLE nbaops_app"),
        "permission denied",
    );
    c.equal(
        "17: pg_monitor and pg_signal_backend kept, search_path pinned",
        psql.one("nbaops_maintenance", "app", "SELECT pg_has_role('pg_monitor', 'USAGE') AND pg_has_role('pg_signal_backend', 'USAGE') AND current_setting('search_path') = 'pg_catalog, public, pg_temp'"),
        "t",
    );
    c.equal(
        "17: connection limit",
        pg.psql(
            "postgres",
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'nbaops_maintenance'",
        )
        .map_err(|e| e.to_string()),
        &stated_limit("nbaops_maintenance").unwrap_or(-2).to_string(),
    );
    c.finish();
}

/// The real vacuum-trigger binary, logged in as nbaops_maintenance set up by infra/sql (password
/// from SSM, TLS), vacuums a table of the application's owner: as the owner for that statement
/// only, and the audit shows the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_trigger_as_nbaops_maintenance_vacuums_the_owners_table() {
    let stack = Stack::start(false).await.unwrap();
    let pg = Postgres::start().unwrap();
    rds_like_cluster(&pg);
    let psql = Psql::new(&pg);
    psql.sql(
        "nbaops_app",
        "app",
        &[
            "CREATE TABLE bloated (id int, payload text) WITH (autovacuum_enabled = false)",
            "INSERT INTO bloated SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g",
            "DELETE FROM bloated WHERE id % 5 <> 0",
            "ANALYZE bloated",
        ],
    )
    .unwrap();
    psql.file(
        "rds_master",
        "app",
        "02_maintenance_role.sql",
        &[("app_owner", "nbaops_app")],
    )
    .unwrap();
    psql.one(
        "rds_master",
        "app",
        &format!("ALTER ROLE nbaops_maintenance PASSWORD '{PASSWORD}'"),
    )
    .unwrap();
    stack
        .clients
        .ssm
        .put_parameter()
        .name("/nbaops/dev/secrets/pg/app/maintenance")
        .value(PASSWORD)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let dead = || {
        pg.psql(
            "app",
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'bloated'",
        )
        .unwrap()
        .parse::<i64>()
        .unwrap()
    };
    assert!(dead() >= 39_000);
    let dbs = format!("app={}", pg.url_as("nbaops_maintenance", "app"));
    let f = FunctionUnderTest::start(
        &function_binary("vacuum-trigger").unwrap(),
        "vacuum-trigger",
        &stack.function_env(&[("NBAOPS_PG__DATABASES", dbs.as_str())]),
        1,
    )
    .await
    .unwrap();
    let payload = json!({"nbaops": {"task": f.name(), "id": "infra-sql-vacuum"}});
    let v = match f
        .invoke(payload, Duration::from_secs(60))
        .await
        .unwrap()
        .outcome
    {
        Outcome::Response(v) => v,
        other => panic!("vacuum-trigger failed: {other:?}\n{}", f.logs()),
    };
    let rec = &v["records"][0];
    let actions = rec["actions"].as_array().cloned().unwrap_or_default();
    let vacuum: Vec<&Value> = actions
        .iter()
        .filter(|a| a["resource"] == "pg:app/public.bloated")
        .collect();
    assert_eq!(vacuum.len(), 1, "{rec}\n{}", f.logs());
    assert_eq!(vacuum[0]["outcome"], "acted", "{rec}\n{}", f.logs());
    assert_eq!(
        vacuum[0]["before"]["statement"],
        "SET ROLE \"nbaops_app\"; VACUUM (ANALYZE, SKIP_LOCKED, TRUNCATE false) \"public\".\"bloated\"; RESET ROLE",
        "{rec}"
    );
    assert!(dead() < 1_000, "dead tuples still {}", dead());
    // Its session never held the owner's rights as itself.
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT pg_has_role('nbaops_maintenance', 'nbaops_app', 'USAGE')"
        )
        .unwrap(),
        "f"
    );
}
