//! Throwaway PostgreSQL clusters (and streaming replicas) on free loopback ports.
//! Blocking: call from a plain `#[test]` or `spawn_blocking`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::{io_err, log_tail, unique_temp_dir, HarnessError};

/// The host name on the test clusters' certificate (reached through `hostaddr=127.0.0.1`).
pub const TLS_HOST: &str = "db.nbaops.test";

/// The test clusters' password of every nbaops role ([`Postgres::as_rds`]); in the functions it
/// comes from the SSM SecureStrings [`crate::demo::Stack::put_pg_passwords`] writes.
pub const ROLE_PASSWORD: &str = "nbaops-test-role-pw-5d1c";

/// The roles nbaops's functions log in as (infra/sql): TLS + SCRAM only on the test clusters.
pub const NBAOPS_ROLES: &str = "nbaops_monitor,nbaops_maintenance,nbaops_failover,nbaops_drill";

/// tests/support/tls: the test CA (`ca.pem`), the server certificate and key, another CA.
pub fn tls_dir() -> PathBuf {
    crate::workspace_root().join("tests/support/tls")
}

pub struct Postgres {
    pub port: u16,
    pub data_dir: PathBuf,
    /// Temp dir holding `data/`, the server log and the Unix socket; removed on drop.
    pub dir: PathBuf,
    bin_dir: PathBuf,
    /// Root may not run the server, so initdb/pg_ctl then run as the `postgres` user.
    as_postgres_user: bool,
}

impl Postgres {
    /// initdb + start a new cluster served as RDS serves one: TLS on with a certificate for
    /// [`TLS_HOST`] (tests/support/tls), SCRAM passwords, the nbaops roles admitted only over TLS
    /// with a password. The `postgres` superuser (trust, loopback) is for the cluster setup only.
    /// Replication enabled, durability off (it is a test database).
    pub fn start() -> Result<Postgres, HarnessError> {
        Postgres::start_with(true)
    }

    /// A cluster that offers no TLS at all (to prove nbaops refuses it).
    pub fn start_without_tls() -> Result<Postgres, HarnessError> {
        Postgres::start_with(false)
    }

    fn start_with(tls: bool) -> Result<Postgres, HarnessError> {
        let mut pg = Postgres::empty(find_bin_dir()?, "pg")?;
        pg.own_dir()?;
        pg.init_data_dir()?;
        pg.append(
            "postgresql.conf",
            &format!(
                "listen_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{}'\n\
                 shared_preload_libraries = 'pg_stat_statements'\n\
                 wal_level = replica\n\
                 max_wal_senders = 5\n\
                 fsync = off\n\
                 synchronous_commit = off\n\
                 full_page_writes = off\n\
                 track_io_timing = on\n\
                 password_encryption = 'scram-sha-256'\n\
                 log_connections = on\n\
                 ssl = {}\n",
                pg.dir.display(),
                if tls { "on" } else { "off" }
            ),
        )?;
        if tls {
            for f in ["server.crt", "server.key"] {
                let to = pg.data_dir.join(f);
                std::fs::copy(tls_dir().join(f), &to)
                    .map_err(io_err(format!("copy {f} to {}", to.display())))?;
            }
            run(Command::new("chmod")
                .args(["600", &pg.data_dir.join("server.key").to_string_lossy()]))?;
            pg.own_dir()?;
        }
        // First match wins: the nbaops roles only over TLS with a SCRAM password, as on RDS. The
        // cluster without TLS stands for a server (or a man in the middle) that would gladly take
        // a plaintext login: a client that downgrades gets in, so a test can see it did not.
        let plain = if tls { "reject" } else { "scram-sha-256" };
        pg.prepend(
            "pg_hba.conf",
            &format!(
                "hostssl all {NBAOPS_ROLES} 127.0.0.1/32 scram-sha-256\n\
                 host all {NBAOPS_ROLES} 127.0.0.1/32 {plain}\n\
                 local all {NBAOPS_ROLES} reject\n"
            ),
        )?;
        pg.append("pg_hba.conf", "host replication all 127.0.0.1/32 trust\n")?;
        pg.start_server()?;
        Ok(pg)
    }

    /// A hot standby streaming from this cluster; returns once the primary sees it streaming.
    pub fn start_replica(&self) -> Result<Postgres, HarnessError> {
        let mut replica = Postgres::empty(self.bin_dir.clone(), "pg-replica")?;
        replica.own_dir()?;
        let primary_port = self.port.to_string();
        replica.pg_tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                "data",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        )?;
        // The copied config still names the primary's socket dir; later lines win.
        // cluster_name becomes the walreceiver's application_name, to find it below.
        let name = replica.cluster_name();
        replica.append(
            "postgresql.conf",
            &format!(
                "unix_socket_directories = '{}'\ncluster_name = '{name}'\n",
                replica.dir.display()
            ),
        )?;
        replica.start_server()?;
        let sql = format!(
            "select count(*) from pg_stat_replication where application_name = '{name}' and state = 'streaming'"
        );
        let started = Instant::now();
        while self.psql("postgres", &sql)? != "1" {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(HarnessError::Timeout {
                    what: format!("replica {name} streaming; its log:\n{}", replica.log_tail()),
                    after: Duration::from_secs(30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(replica)
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), HarnessError> {
        self.pg_tool("pg_ctl", &["-D", "data", "-w", "-t", "30", "promote"])
            .map(drop)
    }

    /// A clean restart on the same port (`pg_ctl restart -m fast`): sessions are cut and
    /// `pg_postmaster_start_time()` moves.
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.pg_tool(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "postgres.log",
                "-w",
                "-t",
                "30",
                "-m",
                "fast",
                "restart",
            ],
        )
        .map(drop)
    }

    /// Stops the server (fast shutdown); [`Postgres::start_again`] brings it back on the same port.
    pub fn stop(&self) -> Result<(), HarnessError> {
        self.pg_tool(
            "pg_ctl",
            &["-D", "data", "-w", "-t", "30", "-m", "fast", "stop"],
        )
        .map(drop)
    }

    pub fn start_again(&self) -> Result<(), HarnessError> {
        self.pg_tool(
            "pg_ctl",
            &[
                "-D",
                "data",
                "-l",
                "postgres.log",
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .map(drop)
    }

    /// `postgres://postgres@db.nbaops.test:PORT/<db>?hostaddr=127.0.0.1`: TLS to the host name on
    /// the certificate, as the functions reach RDS (superuser: for tests that are not yet run as
    /// a production role).
    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", db)
    }

    /// The URL of `db` as `user`, over TLS to [`TLS_HOST`] (no password: it comes from SSM).
    pub fn url_as(&self, user: &str, db: &str) -> String {
        url_at(self.port, user, db)
    }

    /// Runs `sql` with psql; returns unaligned, tuples-only output without the final newline.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let port = self.port.to_string();
        let out = run(Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &port, "-U", "postgres", "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10"))?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Runs an SQL file with psql variables (`-v name=value`), as `user`.
    pub fn psql_file(
        &self,
        user: &str,
        db: &str,
        file: &Path,
        vars: &[(&str, &str)],
    ) -> Result<String, HarnessError> {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &port, "-U", user, "-d", db]);
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        cmd.arg("-f").arg(file).env("PGCONNECT_TIMEOUT", "10");
        Ok(run(&mut cmd)?.trim_end_matches('\n').to_string())
    }

    /// Like [`Postgres::psql`], connected as another role.
    pub fn psql_as(&self, user: &str, db: &str, sql: &str) -> Result<String, HarnessError> {
        let port = self.port.to_string();
        let out = run(Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &port, "-U", user, "-d", db, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10"))?;
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// The database `db` as RDS gives it and infra/sql makes it, prepared by the cluster's
    /// superuser and then done by a master user that is not one: `rds_master` (CREATEROLE,
    /// CREATEDB, pg_monitor / pg_signal_backend / pg_read_all_stats and the application owner
    /// WITH ADMIN OPTION, owner of `postgres`, as RDS's master user), `db` owned by the application
    /// role `nbaops_app` (its tables are what vacuum-trigger maintains: create them with
    /// [`Postgres::psql_app`]), pg_stat_statements and pgstattuple created in it (rds_superuser
    /// may), then infra/sql 01–03 applied by `rds_master` and each nbaops role's password set to
    /// [`ROLE_PASSWORD`]. Idempotent per cluster for the roles; `db` must not exist yet.
    pub fn as_rds(&self, db: &str) -> Result<(), HarnessError> {
        let exists = self.psql(
            "postgres",
            "select count(*) from pg_roles where rolname = 'rds_master'",
        )?;
        if exists == "0" {
            for s in [
                "CREATE ROLE rds_master LOGIN CREATEROLE CREATEDB",
                "GRANT pg_monitor, pg_signal_backend, pg_read_all_stats TO rds_master WITH ADMIN OPTION",
                "CREATE ROLE nbaops_app LOGIN",
                "GRANT nbaops_app TO rds_master WITH ADMIN OPTION",
                "ALTER DATABASE postgres OWNER TO rds_master",
            ] {
                self.psql("postgres", s)?;
            }
        }
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {db} OWNER nbaops_app"),
        )?;
        self.psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS pgstattuple")?;
        let sql = crate::workspace_root().join("infra/sql");
        self.psql_file("rds_master", db, &sql.join("01_monitor_role.sql"), &[])?;
        self.psql_file(
            "rds_master",
            db,
            &sql.join("02_maintenance_role.sql"),
            &[("app_owner", "nbaops_app")],
        )?;
        self.psql_file(
            "rds_master",
            "postgres",
            &sql.join("03_failover_role.sql"),
            &[],
        )?;
        for role in ["nbaops_monitor", "nbaops_maintenance", "nbaops_failover"] {
            self.psql_as(
                "rds_master",
                "postgres",
                &format!("ALTER ROLE {role} PASSWORD '{ROLE_PASSWORD}'"),
            )?;
        }
        Ok(())
    }

    /// psql as the application's owner role (`nbaops_app`, see [`Postgres::as_rds`]).
    pub fn psql_app(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        self.psql_as("nbaops_app", db, sql)
    }

    /// The whole server log (e.g. its `connection authorized: ... SSL enabled` lines).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The server log's last lines, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.join("postgres.log"), 30)
    }

    fn empty(bin_dir: PathBuf, prefix: &str) -> Result<Postgres, HarnessError> {
        let dir = unique_temp_dir(prefix)?;
        Ok(Postgres {
            port: 0,
            data_dir: dir.join("data"),
            dir,
            bin_dir,
            as_postgres_user: running_as_root(),
        })
    }

    /// `data/` as initdb makes it: a copy of one initdb's output per machine, PostgreSQL bin
    /// dir and user ([`template_data_dir`]). initdb took 2.5-6 s a cluster on the CI's 2 cores
    /// (most of it syncing), a copy 0.1-0.4 s, and the suite starts a few hundred clusters.
    fn init_data_dir(&self) -> Result<(), HarnessError> {
        let template = template_data_dir(&self.bin_dir, self.as_postgres_user)?;
        run(Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&self.data_dir))
        .map(drop)
    }

    fn cluster_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn own_dir(&self) -> Result<(), HarnessError> {
        if self.as_postgres_user {
            let dir = self.dir.to_string_lossy();
            run(Command::new("chown").args(["-R", "postgres:postgres", &dir]))?;
        }
        Ok(())
    }

    /// Runs a server tool from the bin dir inside `self.dir`, as `postgres` when we are root.
    fn pg_tool(&self, tool: &str, args: &[&str]) -> Result<String, HarnessError> {
        let exe = self.bin_dir.join(tool);
        let mut cmd = if self.as_postgres_user {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(exe);
            cmd
        } else {
            Command::new(exe)
        };
        // cwd inside our dir: postgres may not be allowed into the caller's cwd.
        run(cmd.args(args).current_dir(&self.dir))
    }

    fn prepend(&self, file: &str, text: &str) -> Result<(), HarnessError> {
        let path = self.data_dir.join(file);
        let old =
            std::fs::read_to_string(&path).map_err(io_err(format!("read {}", path.display())))?;
        std::fs::write(&path, format!("{text}{old}"))
            .map_err(io_err(format!("write {}", path.display())))
    }

    fn append(&self, file: &str, text: &str) -> Result<(), HarnessError> {
        let path = self.data_dir.join(file);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io_err(format!("append to {}", path.display())))
    }

    fn start_server(&mut self) -> Result<(), HarnessError> {
        // The port may be taken between free_port() and the server's bind: retry.
        for attempt in 1..=3 {
            self.port = free_port().map_err(io_err("pick a free port"))?;
            self.append("postgresql.conf", &format!("port = {}\n", self.port))?;
            let started = self.pg_tool(
                "pg_ctl",
                &[
                    "-D",
                    "data",
                    "-l",
                    "postgres.log",
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            );
            match started {
                Ok(_) => return Ok(()),
                Err(_) if attempt < 3 && self.log_tail().contains("Address already in use") => {}
                Err(e) => {
                    return Err(HarnessError::Setup(format!(
                        "{e}\nserver log ({}):\n{}",
                        self.dir.join("postgres.log").display(),
                        self.log_tail()
                    )))
                }
            }
        }
        Err(HarnessError::Setup("PostgreSQL did not start".into()))
    }
}

/// [`Postgres::url_as`] for a cluster on `port` that another process started (`make up`).
pub fn url_at(port: u16, user: &str, db: &str) -> String {
    format!("postgres://{user}@{TLS_HOST}:{port}/{db}?hostaddr=127.0.0.1")
}

/// The postmaster's pid, from the first line of `data/postmaster.pid` (`None` when stopped).
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let _ = self.pg_tool("pg_ctl", &["-D", "data", "-m", "immediate", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The arguments every cluster's initdb had; part of the template's name, so a change makes a
/// new template.
const INITDB_ARGS: [&str; 7] = [
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--no-locale",
    // The copies are what the tests use; the template itself is never written again.
    "--no-sync",
];

/// The shared initdb output for `bin_dir`, made once: `<tmp>/nbaops-pg-template-<key>/data`,
/// where the key names the bin dir, the initdb arguments and who owns the files. Made in a
/// private dir and renamed into place, so concurrent test processes never see half of one
/// (the loser of a race removes its own and uses the winner's).
fn template_data_dir(bin_dir: &Path, as_postgres_user: bool) -> Result<PathBuf, HarnessError> {
    let key: String = format!(
        "{}-{}-{}",
        bin_dir.display(),
        INITDB_ARGS.join(" "),
        if as_postgres_user { "postgres" } else { "self" }
    )
    .chars()
    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
    .collect();
    let home = std::env::temp_dir().join(format!("nbaops-pg-template-{key}"));
    let data = home.join("data");
    if data.join("PG_VERSION").is_file() {
        return Ok(data);
    }
    let fresh = Postgres::empty(bin_dir.to_path_buf(), "pg-template")?;
    fresh.own_dir()?;
    let mut args = vec!["-D", "data"];
    args.extend(INITDB_ARGS);
    fresh.pg_tool("initdb", &args)?;
    match std::fs::rename(&fresh.dir, &home) {
        Ok(()) => Ok(data),
        Err(_) if data.join("PG_VERSION").is_file() => {
            let _ = std::fs::remove_dir_all(&fresh.dir);
            Ok(data)
        }
        Err(e) => Err(io_err(format!(
            "move {} to {}",
            fresh.dir.display(),
            home.display()
        ))(e)),
    }
}

/// PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else `pg_config --bindir`.
fn find_bin_dir() -> Result<PathBuf, HarnessError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(HarnessError::Setup(format!(
                "PG_BIN={} has no initdb/pg_ctl",
                dir.display()
            )))
        };
    }
    let mut installed: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let version = name
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    installed.sort();
    if let Some((_, bin)) = installed.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    match from_pg_config {
        Some(dir) if has_server(&dir) => Ok(dir),
        _ => Err(HarnessError::Setup(
            "PostgreSQL server binaries not found: apt-get install -y postgresql".into(),
        )),
    }
}

fn running_as_root() -> bool {
    // Effective uid is the third field of the Uid: line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
fn run(cmd: &mut Command) -> Result<String, HarnessError> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("run {command}")))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
