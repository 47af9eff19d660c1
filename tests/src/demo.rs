//! `make demo`: the platform in the emulator, the fixtures played through the real function
//! binaries over the Lambda Runtime API, and a report a person can read.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::faultproxy::FaultProxy;
use crate::function::FunctionUnderTest;
use crate::moto::Moto;
use crate::platform::{self, Clients, Platform};
use crate::postgres::Postgres;
use crate::{function_binary, workspace_root, HarnessError};

pub use crate::scenes::{scenes, Before, Scene};

/// The demo's backup bucket (the name e2e_backup_s3 uses), holding the logical, WAL and physical
/// backups `backup-s3-check` judges.
pub const BACKUP_BUCKET: &str = "nbaops-dev-backups-123456789012-us-east-1";

pub struct Stack {
    pub moto: Moto,
    /// In front of moto when the stack was started with [`Stack::start_behind_proxy`]: the
    /// functions then reach AWS through it, while the harness's own clients talk to moto.
    pub proxy: Option<FaultProxy>,
    pub postgres: Option<Postgres>,
    pub clients: Clients,
    pub platform: Platform,
}

impl Stack {
    pub async fn start(with_postgres: bool) -> Result<Stack, HarnessError> {
        Self::start_with(with_postgres, false).await
    }

    /// Like [`Stack::start`], with a fault-injecting proxy between the functions and moto.
    pub async fn start_behind_proxy(with_postgres: bool) -> Result<Stack, HarnessError> {
        Self::start_with(with_postgres, true).await
    }

    async fn start_with(with_postgres: bool, proxy: bool) -> Result<Stack, HarnessError> {
        let root = workspace_root();
        let moto = Moto::start(&root.join(".venv")).await?;
        let clients = Clients::new(&moto.endpoint, &moto.cloudwatch.endpoint).await;
        let platform = platform::create(&clients).await?;
        platform::put_params(&clients, &platform::scale_params()).await?;
        let postgres = if with_postgres {
            // As on RDS: the application's database `app`, infra/sql's roles, passwords in SSM.
            let pg = Postgres::start()?;
            pg.as_rds("app")?;
            Some(pg)
        } else {
            None
        };
        let proxy = if proxy {
            Some(FaultProxy::start(&moto.endpoint).await?)
        } else {
            None
        };
        let stack = Stack {
            moto,
            proxy,
            postgres,
            clients,
            platform,
        };
        if let Some(pg) = &stack.postgres {
            stack.put_pg_passwords(pg, "demo", "app").await?;
            stack
                .put_secret(
                    &format!(
                        "/nbaops/{}/secrets/failover/{}",
                        platform::ENV,
                        platform::DB
                    ),
                    crate::postgres::ROLE_PASSWORD,
                )
                .await?;
        }
        Ok(stack)
    }

    /// An SSM SecureString, as a deployment stores a secret.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<(), HarnessError> {
        self.clients
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map(drop)
            .map_err(|e| HarnessError::Setup(format!("put_parameter {name}: {e:?}")))
    }

    /// The SecureStrings holding the database `name`'s monitor and maintenance passwords, as a
    /// deployment stores them (`/nbaops/dev/secrets/pg/<name>/<role>`), and the environment that
    /// points pg-health and vacuum-trigger at it as their own roles over TLS.
    pub async fn put_pg_passwords(
        &self,
        pg: &Postgres,
        name: &str,
        db: &str,
    ) -> Result<Vec<(String, String)>, HarnessError> {
        for role in ["monitor", "maintenance"] {
            self.put_secret(
                &format!("/nbaops/{}/secrets/pg/{name}/{role}", platform::ENV),
                crate::postgres::ROLE_PASSWORD,
            )
            .await?;
        }
        Ok(vec![
            (
                "NBAOPS_PG__DATABASES".into(),
                format!("{name}={}", pg.url_as("nbaops_monitor", db)),
            ),
            ("NBAOPS_PG__MONITOR_USER".into(), "nbaops_monitor".into()),
            (
                "NBAOPS_PG__MAINTENANCE_USER".into(),
                "nbaops_maintenance".into(),
            ),
        ])
    }

    /// The AWS environment the functions get: the emulator, or the fault proxy in front of it.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        let mut aws = self.moto.aws_env();
        if let Some(proxy) = &self.proxy {
            for (k, v) in aws.iter_mut() {
                if k == "AWS_ENDPOINT_URL" {
                    v.clone_from(&proxy.endpoint);
                }
            }
        }
        aws
    }

    pub fn function_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        platform::function_env(&self.aws_env(), &self.platform, extra)
    }

    pub async fn start_function(
        &self,
        name: &str,
        instances: usize,
    ) -> Result<FunctionUnderTest, HarnessError> {
        FunctionUnderTest::start(
            &function_binary(name)?,
            name,
            &self.env_for(name, &[]),
            instances,
        )
        .await
    }

    /// Changes the world as a scene asks before its fixture is played.
    pub async fn prepare(&self, before: &Before) -> Result<(), HarnessError> {
        match *before {
            Before::Nothing => {}
            Before::Param(k, v) => platform::put_params(&self.clients, &[(k, v)]).await?,
            Before::DeleteParam(k) => platform::delete_param(&self.clients, k).await?,
            Before::TagGroup(g, k, v) => platform::tag_group(&self.clients, g, k, v).await?,
            Before::Sql(db, sql) => {
                if let Some(pg) = &self.postgres {
                    // The application changes its own tables.
                    pg.psql_app(db, sql)?;
                }
            }
            Before::Cpu(percent) => {
                for g in [platform::WEB, platform::WORKER] {
                    platform::put_cpu(&self.clients, g, percent, 20).await?;
                }
            }
            Before::BackupObjects(objects) => self.put_backup_objects(objects).await?,
            Before::UntagGroup(g, k) => {
                platform::untag_group(&self.clients, g, k).await?;
                platform::delete_param(&self.clients, "guard/kill_switch").await?;
                platform::delete_param(&self.clients, "guard/dry_run").await?;
            }
        }
        Ok(())
    }

    /// Creates the demo backup bucket (once) and puts `objects` (key, storage class) in it;
    /// `{date}` and `{month}` in a key are the day and month on the demo clock.
    async fn put_backup_objects(&self, objects: &[(&str, &str)]) -> Result<(), HarnessError> {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.clients.conf)
                .force_path_style(true)
                .build(),
        );
        let exists = s3.head_bucket().bucket(BACKUP_BUCKET).send().await.is_ok();
        if !exists {
            s3.create_bucket()
                .bucket(BACKUP_BUCKET)
                .send()
                .await
                .map_err(|e| {
                    HarnessError::Setup(format!("create_bucket {BACKUP_BUCKET}: {e:?}"))
                })?;
        }
        let now = crate::clock::now();
        for (key, class) in objects {
            let key = key
                .replace("{date}", &now.format("%Y-%m-%d").to_string())
                .replace("{month}", &now.format("%Y-%m").to_string());
            s3.put_object()
                .bucket(BACKUP_BUCKET)
                .key(&key)
                .storage_class(aws_sdk_s3::types::StorageClass::from(*class))
                .body(aws_sdk_s3::primitives::ByteStream::from_static(
                    b"demo backup",
                ))
                .send()
                .await
                .map_err(|e| HarnessError::Setup(format!("put_object {key}: {e:?}")))?;
        }
        Ok(())
    }

    /// The environment a function gets on the local stack: the emulator, the platform, and the
    /// demo PostgreSQL wherever the function reads a database.
    pub fn env_for(&self, name: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        local_env_for(
            &self.aws_env(),
            &self.platform,
            self.postgres.as_ref().map(|pg| pg.port),
            name,
            extra,
        )
    }
}

/// [`Stack::env_for`] from its parts, so a function started against a stack another process holds
/// (`make up`, [`crate::local_stack`]) gets exactly the environment it would get in the demo.
pub fn local_env_for(
    aws: &[(String, String)],
    platform: &Platform,
    pg_port: Option<u16>,
    name: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(port) = pg_port {
        // pg-health / vacuum-trigger watch the demo PostgreSQL (a known key, harmless to others).
        // Each as its own role (infra/sql), over TLS, its password from SSM.
        pairs.push((
            "NBAOPS_PG__DATABASES".into(),
            format!(
                "demo={}",
                crate::postgres::url_at(port, "nbaops_monitor", "app")
            ),
        ));
        pairs.push(("NBAOPS_PG__MONITOR_USER".into(), "nbaops_monitor".into()));
        pairs.push((
            "NBAOPS_PG__MAINTENANCE_USER".into(),
            "nbaops_maintenance".into(),
        ));
        // failover-notify verifies nbaops-dev-db on the demo PostgreSQL (moto's endpoint is no server).
        if name == "failover-notify" {
            let urls = serde_json::json!({
                platform::DB: crate::postgres::url_at(port, "nbaops_failover", "postgres")
            })
            .to_string();
            pairs.push(("NBAOPS_FAILOVER__VERIFY__URLS".into(), urls));
        }
    }
    if name == "backup-guard" {
        // backup-s3-check reads the demo backup bucket (a scene seeds it); the lifecycle grace is
        // 0 h so an object uploaded a moment ago is judged on its storage class at once (moto
        // cannot backdate LastModified; deployed, the 72 h default stands).
        pairs.push(("NBAOPS_BACKUP__S3__BUCKET".into(), BACKUP_BUCKET.into()));
        pairs.push((
            "NBAOPS_BACKUP__S3__LIFECYCLE_GRACE_HOURS".into(),
            "0".into(),
        ));
    }
    let mut refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    refs.extend_from_slice(extra);
    platform::function_env(aws, platform, &refs)
}

async fn world(c: &Clients) -> String {
    let web = platform::group_view(c, platform::WEB)
        .await
        .map(|g| g.desired)
        .unwrap_or(-1);
    let worker = platform::group_view(c, platform::WORKER)
        .await
        .map(|g| g.desired)
        .unwrap_or(-1);
    let (class, pending) = platform::db_class(c, platform::DB)
        .await
        .unwrap_or_default();
    let nodes = platform::cache_nodes(c, platform::CACHE)
        .await
        .unwrap_or(-1);
    format!(
        "web desired={web}  worker desired={worker}  db class={class}{}  cache nodes={nodes}",
        pending
            .map(|p| format!(" (pending {p})"))
            .unwrap_or_default()
    )
}

fn describe_response(v: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for rec in v["records"].as_array().cloned().unwrap_or_default() {
        if let Some(r) = rec["not_for_me"].as_str() {
            lines.push(format!("decision : not for me — {r}"));
            continue;
        }
        lines.push(format!(
            "decision : {}",
            rec["summary"].as_str().unwrap_or("")
        ));
        for a in rec["actions"].as_array().cloned().unwrap_or_default() {
            let outcome = a["outcome"].as_str().unwrap_or("?");
            let by = a["stopped_by"]
                .as_str()
                .map(|s| format!(" by guard '{s}'"))
                .unwrap_or_default();
            let step_note = a["steps"]
                .as_array()
                .and_then(|steps| steps.iter().find(|s| s["passed"] == false))
                .and_then(|s| s["note"].as_str())
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let dry = if a["dry_run"] == true {
                " [dry-run]"
            } else {
                ""
            };
            lines.push(format!(
                "action   : {} {} -> {}{}{}{}",
                a["action"].as_str().unwrap_or(""),
                a["resource"].as_str().unwrap_or(""),
                outcome,
                by,
                step_note,
                dry
            ));
            if let Some(e) = a["error"].as_str() {
                lines.push(format!("error    : {e}"));
            }
            if let Some(s) = a["sentence"].as_str() {
                lines.push(format!("why      : {s}"));
            }
        }
        for n in rec["notes"].as_array().cloned().unwrap_or_default() {
            lines.push(format!("note     : {}", n.as_str().unwrap_or("")));
        }
        for al in rec["alerts"].as_array().cloned().unwrap_or_default() {
            lines.push(format!(
                "alert    : {} {}",
                al["severity"].as_str().unwrap_or(""),
                al["summary"].as_str().unwrap_or("")
            ));
        }
    }
    lines
}

pub async fn run_demo() -> Result<(), HarnessError> {
    let root = workspace_root();
    println!("nbaops demo — the local stack (moto + a throwaway PostgreSQL) and the real function binaries\n");
    let stack = Stack::start(true).await?;
    println!("emulator   : {}", stack.moto.endpoint);
    if let Some(pg) = &stack.postgres {
        println!("postgresql : 127.0.0.1:{}", pg.port);
    }
    println!("platform   : {}\n", world(&stack.clients).await);
    let mut functions: std::collections::BTreeMap<&str, FunctionUnderTest> = Default::default();
    for (i, scene) in scenes().into_iter().enumerate() {
        stack.prepare(&scene.before).await?;
        if !functions.contains_key(scene.function) {
            functions.insert(
                scene.function,
                stack.start_function(scene.function, 1).await?,
            );
        }
        let f = &functions[scene.function];
        let payload: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(scene.fixture))?)?;
        println!("── {}. {}", i + 1, scene.title);
        println!("event    : {}", scene.fixture);
        println!("function : {}", scene.function);
        let inv = f.invoke(payload, Duration::from_secs(30)).await?;
        match &inv.outcome {
            crate::runtime_api::Outcome::Response(v) => {
                describe_response(v).iter().for_each(|l| println!("{l}"))
            }
            crate::runtime_api::Outcome::Error {
                error_type,
                message,
            } => println!("error    : {error_type}: {message}"),
        }
        println!(
            "after    : {}  ({} ms)\n",
            world(&stack.clients).await,
            inv.elapsed.as_millis()
        );
    }
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue).await?;
    let actions = platform::drain(&stack.clients, &stack.platform.actions_queue).await?;
    let counts = platform::ledger_counts(&stack.clients).await?;
    println!(
        "── published: {} alert(s) on nbaops-dev-alerts, {} audit event(s) on nbaops-dev-actions",
        alerts.len(),
        actions.len()
    );
    println!("── ledger   : {counts:?}");
    for a in &alerts {
        println!(
            "   {} {}",
            a["severity"].as_str().unwrap_or("?"),
            a["summary"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `make invoke`: through the stack `make up` holds when it is up and answering (only the
/// function binary starts), else on a stack of its own as before.
pub async fn run_invoke(function: &str, event: &Path) -> Result<i32, HarnessError> {
    let payload: Value = serde_json::from_str(&std::fs::read_to_string(event)?)?;
    if let Some(state) = crate::local_stack::live(&crate::local_stack::state_dir()).await? {
        return crate::local_stack::invoke(&state, function, payload).await;
    }
    let stack = Stack::start(true).await?;
    let f = stack.start_function(function, 1).await?;
    print_invocation(function, &f, payload).await
}

/// Invokes `f` once and prints its response (exit code 0) or its error and log (1).
pub async fn print_invocation(
    function: &str,
    f: &FunctionUnderTest,
    payload: Value,
) -> Result<i32, HarnessError> {
    let inv = f.invoke(payload, Duration::from_secs(30)).await?;
    match inv.outcome {
        crate::runtime_api::Outcome::Response(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
        crate::runtime_api::Outcome::Error {
            error_type,
            message,
        } => {
            eprintln!(
                "{function} failed: {error_type}: {message}\n--- function log ---\n{}",
                f.logs()
            );
            Ok(1)
        }
    }
}
