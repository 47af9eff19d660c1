//! `BackupStore` on S3: ListObjectsV2, every page
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html>: at most 1,000 keys
//! a response, `IsTruncated` and `NextContinuationToken` for the next; authorised as
//! `s3:ListBucket` on the bucket).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dependency;
use crate::error::Result;
use crate::ports::{BackupStore, StoredObject};

pub struct SdkBackupStore(pub aws_sdk_s3::Client);

/// A guard against a service that keeps answering `IsTruncated` (100,000 pages = 100 M keys).
const MAX_PAGES: usize = 100_000;

#[async_trait]
impl BackupStore for SdkBackupStore {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .0
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| dependency("s3", e))?;
            for o in page.contents() {
                out.push(StoredObject {
                    key: o.key().unwrap_or_default().to_string(),
                    size: o.size().unwrap_or(0),
                    last_modified: o
                        .last_modified()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
                    storage_class: o
                        .storage_class()
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_else(|| "STANDARD".into()),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => return Ok(out),
            }
        }
        Err(crate::error::NbaopsError::Dependency {
            service: "s3",
            message: format!("s3://{bucket}/{prefix}: still truncated after {MAX_PAGES} pages"),
            retryable: false,
        })
    }
}
