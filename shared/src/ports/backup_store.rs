//! The S3 backup bucket (issue #22): what backup-guard reads of the objects under a prefix —
//! key, size, last modified, storage class. Read-only: nbaops never writes nor deletes a backup
//! (the template's lifecycle rules expire them).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One object as ListObjectsV2 returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: String,
    pub size: i64,
    pub last_modified: Option<DateTime<Utc>>,
    /// As S3 names it (`STANDARD`, `GLACIER`, `DEEP_ARCHIVE`, `GLACIER_IR`...); S3 leaves it out
    /// for nothing but STANDARD, so the adapter fills `STANDARD` in.
    pub storage_class: String,
}

#[async_trait]
pub trait BackupStore: Send + Sync {
    /// Every object of `bucket` whose key starts with `prefix`, all pages (ListObjectsV2 returns
    /// at most 1,000 a page), in key order. An error when the bucket cannot be read: never an
    /// empty list that would look like "no backups".
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<StoredObject>>;
}
