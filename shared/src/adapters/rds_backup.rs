//! [`RdsBackups`] on the RDS SDK: one client for the instance's region and one for the DR
//! region, built from the same SDK config (credentials, endpoint, retries) with another region.

use async_trait::async_trait;
use aws_sdk_rds::operation::delete_db_instance::DeleteDBInstanceError;
use aws_sdk_rds::operation::delete_db_snapshot::DeleteDBSnapshotError;
use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;
use aws_sdk_rds::types::Tag;
use chrono::{DateTime, Utc};

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{
    DbSnapshot, InstanceBackup, RdsBackups, ReplicatedBackup, RestoreRequest, Site, SnapshotKind,
    Tags,
};

pub struct SdkRdsBackups {
    primary: aws_sdk_rds::Client,
    dr: Option<aws_sdk_rds::Client>,
    dr_region: String,
}

impl SdkRdsBackups {
    /// `dr_region` empty: no DR client; copies and DR listings fail with a config error.
    pub fn new(primary: aws_sdk_rds::Client, dr_region: &str) -> SdkRdsBackups {
        let dr = (!dr_region.is_empty()).then(|| {
            let conf = primary
                .config()
                .to_builder()
                .region(aws_sdk_rds::config::Region::new(dr_region.to_string()))
                .build();
            aws_sdk_rds::Client::from_conf(conf)
        });
        SdkRdsBackups {
            primary,
            dr,
            dr_region: dr_region.to_string(),
        }
    }

    fn client(&self, site: Site) -> Result<&aws_sdk_rds::Client> {
        match site {
            Site::Primary => Ok(&self.primary),
            Site::Dr => self
                .dr
                .as_ref()
                .ok_or_else(|| NbaopsError::config("backup.dr_region is empty: no DR region")),
        }
    }
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn tags_of(list: &[Tag]) -> Tags {
    list.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn snapshot_of(s: &aws_sdk_rds::types::DbSnapshot) -> DbSnapshot {
    DbSnapshot {
        id: s.db_snapshot_identifier().unwrap_or("").to_string(),
        arn: s.db_snapshot_arn().map(String::from),
        instance_id: s.db_instance_identifier().unwrap_or("").to_string(),
        kind: if s.snapshot_type() == Some("automated") {
            SnapshotKind::Automated
        } else {
            SnapshotKind::Manual
        },
        status: s.status().unwrap_or("").to_string(),
        created: time(s.original_snapshot_create_time()).or(time(s.snapshot_create_time())),
        encrypted: s.encrypted().unwrap_or(false),
        tags: tags_of(s.tag_list()),
    }
}

/// One `DBInstanceAutomatedBackup` of a `DescribeDBInstanceAutomatedBackups` answer: the one
/// reading of it, shared by backup-guard ([`SdkRdsBackups::replicated_backups`]) and
/// posture-check (`SdkPosture::replicated_backups`), so both mean the same by "replicated".
pub(crate) fn replicated_backup_of(
    b: &aws_sdk_rds::types::DbInstanceAutomatedBackup,
) -> ReplicatedBackup {
    ReplicatedBackup {
        source_arn: b.db_instance_arn().unwrap_or("").to_string(),
        instance_id: b.db_instance_identifier().unwrap_or("").to_string(),
        status: b.status().unwrap_or("").to_string(),
        latest_restorable_time: time(b.restore_window().and_then(|w| w.latest_time())),
        arn: b.db_instance_automated_backups_arn().map(String::from),
    }
}

#[async_trait]
impl RdsBackups for SdkRdsBackups {
    fn dr_region(&self) -> &str {
        &self.dr_region
    }

    async fn describe_instance(&self, id: &str) -> Result<Option<InstanceBackup>> {
        let out = match self
            .primary
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if matches!(
                    e.as_service_error(),
                    Some(DescribeDBInstancesError::DbInstanceNotFoundFault(_))
                ) {
                    return Ok(None);
                }
                return Err(dependency("rds", e));
            }
        };
        Ok(out.db_instances().first().map(|i| InstanceBackup {
            id: i.db_instance_identifier().unwrap_or(id).to_string(),
            arn: i.db_instance_arn().map(String::from),
            status: i.db_instance_status().unwrap_or("").to_string(),
            engine: i.engine().unwrap_or("").to_string(),
            backup_retention_days: i.backup_retention_period().unwrap_or(0),
            latest_restorable_time: time(i.latest_restorable_time()),
            endpoint: i
                .endpoint()
                .and_then(|e| Some((e.address()?.to_string(), e.port().unwrap_or(5432) as u16))),
            tags: tags_of(i.tag_list()),
        }))
    }

    async fn list_snapshots(
        &self,
        site: Site,
        instance: &str,
        kind: SnapshotKind,
    ) -> Result<Vec<DbSnapshot>> {
        let client = self.client(site)?;
        let kind = match kind {
            SnapshotKind::Automated => "automated",
            SnapshotKind::Manual => "manual",
        };
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = client
                .describe_db_snapshots()
                .db_instance_identifier(instance)
                .snapshot_type(kind)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            out.extend(page.db_snapshots().iter().map(snapshot_of));
            match page.marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn create_snapshot(
        &self,
        instance: &str,
        snapshot_id: &str,
        tags: &Tags,
    ) -> Result<DbSnapshot> {
        let out = self
            .primary
            .create_db_snapshot()
            .db_instance_identifier(instance)
            .db_snapshot_identifier(snapshot_id)
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        out.db_snapshot().map(snapshot_of).ok_or_else(|| {
            NbaopsError::dependency("rds", "create_db_snapshot returned no snapshot")
        })
    }

    async fn copy_to_dr(
        &self,
        source_arn: &str,
        target_id: &str,
        tags: &Tags,
        kms_key_id: Option<&str>,
    ) -> Result<DbSnapshot> {
        // Outside GovCloud a cross-region copy needs no pre-signed URL; the source is its ARN.
        let out = self
            .client(Site::Dr)?
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(target_id)
            .set_tags(Some(sdk_tags(&crate::ports::copyable_tags(tags))))
            .set_kms_key_id(kms_key_id.map(String::from))
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        out.db_snapshot()
            .map(snapshot_of)
            .ok_or_else(|| NbaopsError::dependency("rds", "copy_db_snapshot returned no snapshot"))
    }

    async fn delete_snapshot(&self, site: Site, snapshot_id: &str) -> Result<()> {
        match self
            .client(site)?
            .delete_db_snapshot()
            .db_snapshot_identifier(snapshot_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone is what we wanted.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteDBSnapshotError::DbSnapshotNotFoundFault(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(dependency("rds", e)),
        }
    }

    async fn restore_instance(&self, req: &RestoreRequest) -> Result<()> {
        self.primary
            .restore_db_instance_from_db_snapshot()
            .db_snapshot_identifier(&req.snapshot_id)
            .db_instance_identifier(&req.instance_id)
            .set_db_instance_class(req.instance_class.clone())
            .set_db_subnet_group_name(req.subnet_group.clone())
            .set_vpc_security_group_ids(
                (!req.security_groups.is_empty()).then(|| req.security_groups.clone()),
            )
            .multi_az(false)
            .publicly_accessible(false)
            .deletion_protection(false)
            .set_tags(Some(sdk_tags(&req.tags)))
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }

    async fn delete_instance(&self, id: &str) -> Result<()> {
        match self
            .primary
            .delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteDBInstanceError::DbInstanceNotFoundFault(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(dependency("rds", e)),
        }
    }

    async fn replicated_backups(&self, source_arn: &str) -> Result<Vec<ReplicatedBackup>> {
        let client = self.client(Site::Dr)?;
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = client
                .describe_db_instance_automated_backups()
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| dependency("rds", e))?;
            out.extend(
                page.db_instance_automated_backups()
                    .iter()
                    .map(replicated_backup_of)
                    .filter(|b| b.source_arn == source_arn),
            );
            match page.marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn start_replication(
        &self,
        source_arn: &str,
        retention_days: i32,
        kms_key_id: Option<&str>,
    ) -> Result<()> {
        // Called in the destination (DR) region; outside GovCloud no pre-signed URL
        // (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_StartDBInstanceAutomatedBackupsReplication.html).
        self.client(Site::Dr)?
            .start_db_instance_automated_backups_replication()
            .source_db_instance_arn(source_arn)
            .backup_retention_period(retention_days)
            .set_kms_key_id(kms_key_id.map(String::from))
            .send()
            .await
            .map_err(|e| dependency("rds", e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;

    /// Answers every request with one canned body (a real AWS response), whatever it asks.
    #[derive(Debug, Clone)]
    struct Canned(&'static str);

    impl HttpConnector for Canned {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let body = self.0;
            HttpConnectorFuture::ready(Ok(Response::new(
                StatusCode::try_from(200u16).unwrap(),
                SdkBody::from(body),
            )))
        }
    }

    /// An SDK configuration whose every call gets `body` back (any service's client).
    pub(crate) fn canned_conf(body: &'static str) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
            .region(aws_sdk_rds::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_rds::config::SharedCredentialsProvider::new(
                aws_sdk_rds::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
            ))
            .http_client(http_client_fn(move |_, _| {
                SharedHttpConnector::new(Canned(body))
            }))
            .build()
    }

    pub(crate) const DR_ANSWER: &str =
        include_str!("fixtures/describe-db-instance-automated-backups-dr.xml");

    fn client(body: &'static str) -> aws_sdk_rds::Client {
        aws_sdk_rds::Client::new(&canned_conf(body))
    }

    /// The DR region's answer (fixtures/describe-db-instance-automated-backups-dr.xml, the
    /// shape of the AWS documentation's example): the source's replicated backup is read with
    /// its status and `RestoreWindow.LatestTime`; another instance's and the DR region's own
    /// are not the source's.
    #[tokio::test]
    async fn the_dr_regions_answer_is_read_as_aws_sends_it() {
        let xml = DR_ANSWER;
        let rds = SdkRdsBackups::new(client(xml), "us-west-2");
        let got = rds
            .replicated_backups("arn:aws:rds:us-east-1:123456789012:db:nbaops-prod-db")
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        let b = &got[0];
        assert_eq!(b.status, "replicating");
        assert!(b.replicates());
        assert_eq!(
            b.latest_restorable_time,
            Some(
                DateTime::parse_from_rfc3339("2026-11-25T11:55:03Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        assert!(b.arn.as_deref().unwrap().contains(":auto-backup:"));
        // The retained backup of another source is listed for it, and does not replicate.
        let other = rds
            .replicated_backups("arn:aws:rds:us-east-1:123456789012:db:old-db")
            .await
            .unwrap();
        assert_eq!(other.len(), 1);
        assert!(!other[0].replicates());
        // No DR region: a config error, never "not replicated".
        let none = SdkRdsBackups::new(client(xml), "");
        assert!(none.replicated_backups("x").await.is_err());
    }
}
